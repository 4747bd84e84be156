"""One training step's inputs: facial regions per batch, flips, degradations, FPRS masks, emphasis weights."""
from __future__ import annotations

import torch

from ..regions import FFHQ_TEMPLATE_512, TEMPLATE_SIZE, regions_from_boxes, regions_from_landmarks, regions_from_parsing
from .degradations import degrade
from .face_data import MASK_SOURCES, FaceFolder, mix_seed
from .ifqa_config import IFQATrainConfig
from .ifqa_objective import emphasis_map, swap_mask


def batch_regions(
    batch: dict[str, torch.Tensor], size: int, source: str, *, jitter: float = 0.0,
    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Region masks (N,1,size,size) for a batch from ``source`` (see :data:`MASK_SOURCES`).

    ``template`` (aligned faces) moves the 5-point template per sample by a random shift and
    scale of up to ``jitter`` of the image side, so masks do not sit at one fixed place.

    Example:
        >>> r = batch_regions({"image": torch.rand(2, 3, 32, 32)}, 32, "template", jitter=0.05,
        ...                   generator=torch.Generator().manual_seed(0))
        >>> r["mouth"].shape, torch.equal(r["mouth"][0], r["mouth"][1])
        (torch.Size([2, 1, 32, 32]), False)
    """
    n = batch["image"].shape[0]
    if source == "template":
        points = FFHQ_TEMPLATE_512.to(torch.float64).expand(n, -1, -1)
        if jitter > 0:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            u = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
            centre = points.mean(1, keepdim=True)
            shift = jitter * TEMPLATE_SIZE * u[:, None, :2]
            points = (points - centre) * (1 + jitter * u[:, None, 2:]) + centre + shift
        return regions_from_landmarks(points.float().to(device), size, TEMPLATE_SIZE)
    if source == "landmarks":
        return regions_from_landmarks(batch["landmarks"].to(device), size, size)
    if source == "boxes":
        boxes = batch["boxes"].to(device)
        return regions_from_boxes(boxes[:, 0], boxes[:, 1], boxes[:, 2], size, source_size=size)
    if source == "parsing":
        return regions_from_parsing(batch["parsing"].to(device), size)
    raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")


def _mirror_name(name: str) -> str:
    return name.replace("left", "\0").replace("right", "left").replace("\0", "right")


def flip_batch(
    images: torch.Tensor, regions: dict[str, torch.Tensor], flip: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mirror the samples where ``flip`` (N,) is True; masks follow (left/right names swap).

    Example:
        >>> from ifqa_loss.regions import template_regions
        >>> x, r = flip_batch(torch.rand(1, 3, 32, 32), template_regions(32), torch.tensor([True]))
        >>> torch.equal(r["left_eye"], template_regions(32)["right_eye"].flip(-1))
        True
    """
    f = flip.to(images.device).view(-1, 1, 1, 1)
    images = torch.where(f, images.flip(-1), images)
    return images, {name: torch.where(f, regions[_mirror_name(name)].flip(-1), m) for name, m in regions.items()}


def prepare_batch(
    batch: dict[str, torch.Tensor], cfg: IFQATrainConfig, generator: torch.Generator, device: torch.device
) -> dict[str, torch.Tensor]:
    """One step's inputs: flipped HQ faces ``hq``, degraded ``lq`` (N,3,S,S); FPRS ``mask`` and
    emphasis ``weight`` (N,1,S,S); ``use_lq`` (N,) bool: the discriminator's fake for this face is the
    degraded input rather than its restoration. All draws come from ``generator`` in a fixed order.

    Example:
        >>> cfg = IFQATrainConfig(data="", out="", size=64, fprs_prob=1.0)
        >>> b = prepare_batch({"image": torch.rand(2, 3, 64, 64)}, cfg, torch.Generator().manual_seed(0), "cpu")
        >>> b["lq"].shape, bool(b["mask"].sum() > 0), b["weight"].max().item()
        (torch.Size([2, 3, 64, 64]), True, 2.0)
    """
    hq = batch["image"].to(device, non_blocking=True)
    n = hq.shape[0]
    regions = batch_regions(batch, cfg.size, cfg.mask_source, jitter=cfg.mask_jitter, generator=generator,
                            device=device)
    flip = torch.rand(n, generator=generator) < (0.5 if cfg.hflip else 0.0)
    hq, regions = flip_batch(hq, regions, flip)
    lq = degrade(hq, cfg.degradations, generator=generator)
    fprs_on = torch.rand(n, generator=generator) < cfg.fprs_prob
    mask = swap_mask(regions, cfg.fprs_parts, swap=fprs_on, part_prob=cfg.fprs_part_prob, generator=generator,
                     soft=cfg.fprs_soft)
    use_lq = torch.rand(n, generator=generator) < cfg.fake_degraded_prob
    return {"hq": hq, "lq": lq, "mask": mask, "use_lq": use_lq,
            "weight": emphasis_map(regions, cfg.emphasis_parts, cfg.emphasis_weight)}


def snapshot_batch(data: FaceFolder, cfg: IFQATrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed batch (first images, fixed degradations) so snapshots are comparable across steps."""
    items = [data[i] for i in range(min(cfg.snapshot_images, len(data)))]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, 0x5A9))
    hq = batch["image"].to(device)
    regions = batch_regions(batch, cfg.size, cfg.mask_source, device=device)
    return {"hq": hq, "lq": degrade(hq, cfg.degradations, generator=g), "regions": regions}
