"""The IFQA training objective: FPRS (facial primary region swap) and region-weighted per-pixel BCE.

Conventions: images (N,3,H,W) in [0,1]; masks, targets and weights (N,1,H,W);
discriminator logits (N,1,H,W) (pre-sigmoid, 1 = real).

FPRS pastes the primary regions (eyes, nose, mouth) of a restored face into its real
counterpart and the real regions into the restored face. Every pixel keeps the label of
the image it came from, so the per-pixel target of the real-with-pasted-regions image is
``1 - mask`` and that of the restored-with-real-regions image is ``mask``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..regions import REGION_GROUPS, REGION_NAMES, region_weight_map

PRIMARY_PARTS = ("eyes", "nose", "mouth")


def part_names(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Group names (``eyes``, ``brows``) and region names -> region names.

    Example:
        >>> part_names(("eyes", "mouth"))
        ('left_eye', 'right_eye', 'mouth')
    """
    names: list[str] = []
    for part in parts:
        expanded = REGION_GROUPS.get(part, (part,))
        if any(n not in REGION_NAMES for n in expanded):
            raise ValueError(f"unknown facial part {part!r}; choose from {sorted((*REGION_NAMES, *REGION_GROUPS))}")
        names.extend(expanded)
    return tuple(names)


def swap_mask(
    regions: dict[str, torch.Tensor],
    parts: tuple[str, ...] = PRIMARY_PARTS,
    *,
    swap: torch.Tensor | None = None,
    part_prob: float = 1.0,
    generator: torch.Generator | None = None,
    soft: bool = False,
) -> torch.Tensor:
    """The FPRS mask (N,1,H,W): union of ``parts`` for samples where ``swap`` (N,) is True, else 0.

    Args:
        regions: masks from an :mod:`ifqa_loss.regions` builder.
        swap: (N,) bool, which samples get FPRS (default: all).
        part_prob: each part is swapped independently with this probability (drawn from ``generator``).
        soft: keep the feathered edges (targets become fractional); default binarises at 0.5 so
            every pixel comes from exactly one image.

    Example:
        >>> from ifqa_loss.regions import template_regions
        >>> m = swap_mask(template_regions(64, batch=2), swap=torch.tensor([True, False]))
        >>> m.shape, bool(m[0].sum() > 0), bool(m[1].sum() == 0), sorted(m.unique().tolist())
        (torch.Size([2, 1, 64, 64]), True, True, [0.0, 1.0])
    """
    first = next(iter(regions.values()))
    n = first.shape[0]
    total = torch.zeros_like(first)
    for part in parts:
        names = part_names((part,))
        mask = sum(regions[name] for name in names)
        if part_prob < 1.0:
            keep = torch.rand(n, generator=generator, device=generator.device if generator else "cpu") < part_prob
            mask = mask * keep.to(mask.device, mask.dtype).view(-1, 1, 1, 1)
        total = total + mask
    total = total.clamp(0, 1)
    if not soft:
        total = (total > 0.5).to(total.dtype)
    if swap is not None:
        total = total * swap.to(total.device, total.dtype).view(-1, 1, 1, 1)
    return total


def fprs_swap(
    real: torch.Tensor, restored: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Swap the masked pixels between real and restored faces.

    Args:
        real, restored: (N,3,H,W). mask: (N,1,H,W) in [0,1], 1 = swap this pixel.
    Returns:
        ``(real_swapped, restored_swapped, real_target, restored_target)``: the two
        (N,3,H,W) images and their (N,1,H,W) per-pixel realness targets (1 - mask, mask).

    Example:
        >>> real, fake = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
        >>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2, :2] = 1
        >>> a, b, ta, tb = fprs_swap(real, fake, mask)
        >>> torch.equal(a[:, :1], ta), torch.equal(b[:, :1], tb)
        (True, True)
    """
    keep = 1 - mask
    return real * keep + restored * mask, restored * keep + real * mask, keep, mask.clone()


def weighted_bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel BCE on logits, averaged with per-pixel ``weight`` (N,1,H,W): sum(w*bce)/sum(w).

    Example:
        >>> round(weighted_bce_with_logits(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item(), 4)
        0.6931
    """
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if weight is None:
        return loss.mean()
    weight = weight.float().expand_as(loss)
    return (loss * weight).sum() / weight.sum().clamp_min(1e-8)


def emphasis_map(regions: dict[str, torch.Tensor], parts: tuple[str, ...], weight: float) -> torch.Tensor:
    """Per-pixel loss weights (N,1,H,W): ``weight`` on ``parts``, 1 elsewhere (soft edges).

    Example:
        >>> from ifqa_loss.regions import template_regions
        >>> w = emphasis_map(template_regions(64), ("eyes", "nose", "mouth"), 3.0)
        >>> round(w.min().item(), 3), round(w.max().item(), 3)
        (1.0, 3.0)
    """
    return region_weight_map(regions, dict.fromkeys(parts, float(weight)))
