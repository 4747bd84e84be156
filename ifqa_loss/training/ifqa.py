"""Train (or fine-tune) the IFQA metric: the paper's adversarial framework with FPRS and facial emphasis.

A plain restoration U-Net (:class:`~ifqa_loss.nets.restorer_unet.RestorationUNet`) restores
degraded faces (:mod:`~ifqa_loss.training.degradations`) under L1 + a per-pixel adversarial
loss; the per-pixel U-Net discriminator (:class:`~ifqa_loss.nets.ifqa_unet.IFQADiscriminator`,
the IFQA metric's network) learns real (1) vs restored (0) per pixel with BCE on logits.
FPRS swaps eyes/nose/mouth between each real face and its restored counterpart with
probability ``fprs_prob`` (targets follow each pixel's source), and the per-pixel losses are
weighted up on the primary regions (``emphasis_weight``). docs/ifqa_training.md lists what the
paper states and what we chose.

Checkpoints (``RUN/last.pth``) hold ``{'D': state_dict, 'config': D architecture, 'G': ...,
optimisers, grad scalers, 'step', 'train_config'}``: ``load_metric("ifqa", checkpoint=...)``
reads the ``'D'`` entry like the official ``IFQA_Metric.pth``. Every random number of step
``s`` is drawn from generators seeded by ``(seed, s, rank)``, so a resumed run is bit-exact
(on the CPU; cuDNN kernels may differ run to run on GPUs).

Multi-GPU: launch with ``torchrun --nproc_per_node K -m ifqa_loss train-ifqa ...``; each
process trains on ``batch_size`` images (global batch ``K * batch_size``).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.ifqa_unet import IFQADiscriminator
from ..nets.restorer_unet import RestorationUNet
from ..regions import FFHQ_TEMPLATE_512, TEMPLATE_SIZE, regions_from_boxes, regions_from_landmarks, regions_from_parsing
from .degradations import DegradationConfig, degrade
from .face_data import MASK_SOURCES, FaceFolder, StepBatchSampler, mix_seed
from .ifqa_objective import PRIMARY_PARTS, emphasis_map, fprs_swap, part_names, swap_mask, weighted_bce_with_logits

PUBLISHED_D_WIDTHS = (64, 128, 256, 512, 1024)
CHECKPOINT_FORMAT = "ifqa-loss/train-ifqa/1"
LOG_COLUMNS = ("step", "loss_d", "loss_l1", "loss_adv", "d_real", "d_fake", "lr_g", "lr_d", "seconds")


@dataclass
class IFQATrainConfig:
    """Everything a run depends on (saved in each checkpoint as ``train_config``).

    Example:
        >>> cfg = IFQATrainConfig(data="faces", out="run", steps=10)
        >>> cfg.fprs_parts, cfg.d_widths
        (('eyes', 'nose', 'mouth'), (64, 128, 256, 512, 1024))
    """

    data: str
    out: str
    size: int = 256
    steps: int = 100_000
    batch_size: int = 8
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    l1_weight: float = 1.0
    adv_weight: float = 0.1
    d_widths: tuple[int, ...] = PUBLISHED_D_WIDTHS
    d_bottleneck: int = 4
    g_width: int = 32
    g_depth: int = 4
    g_blocks: int = 1
    fprs_prob: float = 0.5
    fprs_parts: tuple[str, ...] = PRIMARY_PARTS
    fprs_part_prob: float = 1.0
    fprs_soft: bool = False
    emphasis_weight: float = 2.0
    emphasis_parts: tuple[str, ...] = PRIMARY_PARTS
    mask_source: str = "template"
    landmarks: str | None = None
    parsing: str | None = None
    mask_jitter: float = 0.02
    hflip: bool = True
    degradations: DegradationConfig = field(default_factory=DegradationConfig)
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    workers: int = 0
    log_every: int = 50
    snapshot_every: int = 1000
    snapshot_images: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: bool = False
    init_from: str | None = None
    resume: bool = False
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.degradations, dict):
            self.degradations = DegradationConfig(**self.degradations)
        for name in ("d_widths", "fprs_parts", "emphasis_parts", "betas"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32 (the discriminator halves it 5 times), got {self.size}")
        if self.size % 2**self.g_depth:
            raise ValueError(f"size {self.size} must be divisible by 2**g_depth = {2**self.g_depth}")
        if len(self.d_widths) != 5:
            raise ValueError(f"d_widths needs 5 encoder widths, got {self.d_widths}")
        for name in ("steps", "batch_size", "log_every", "snapshot_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fprs_prob", "fprs_part_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {self.mask_source!r}")
        part_names(self.fprs_parts + self.emphasis_parts)  # raises on unknown names
        if self.emphasis_weight < 0:
            raise ValueError(f"emphasis_weight must be >= 0, got {self.emphasis_weight}")

    @property
    def d_config(self) -> dict:
        """Arguments of :class:`IFQADiscriminator`."""
        return {"widths": self.d_widths, "num_bottleneck": self.d_bottleneck, "input_size": self.size}

    @property
    def g_config(self) -> dict:
        return {"width": self.g_width, "depth": self.g_depth, "blocks": self.g_blocks}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # plain lists/dicts: loadable with weights_only=True


# ----------------------------------------------------------------------------------- per-batch facial regions
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


# ----------------------------------------------------------------------------------- distributed helpers
@dataclass
class _Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), torch.device(device)
    import torch.distributed as dist

    info = _Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(info.local_rank)
        return info, torch.device("cuda", info.local_rank)
    return info, torch.device(device)


class _DiscriminatorLogits(nn.Module):
    """DDP calls ``forward``: this routes it to the discriminator's ``logits``."""

    def __init__(self, net: IFQADiscriminator):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x)


# ----------------------------------------------------------------------------------- checkpoints
def build_networks(cfg: IFQATrainConfig) -> tuple[RestorationUNet, IFQADiscriminator]:
    """Generator and discriminator initialised from ``cfg.seed`` (the global RNG is left as it was).

    Example:
        >>> cfg = IFQATrainConfig(data="", out="", size=64, d_widths=(4, 8, 8, 16, 16), d_bottleneck=1, g_width=4)
        >>> g, d = build_networks(cfg)
        >>> d.config, g(torch.rand(1, 3, 64, 64)).shape
        ({'widths': (4, 8, 8, 16, 16), 'num_bottleneck': 1, 'input_size': 64}, torch.Size([1, 3, 64, 64]))
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = RestorationUNet(**cfg.g_config)
        discriminator = IFQADiscriminator(**cfg.d_config)
    return generator, discriminator


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``train-ifqa`` checkpoint (tensors and plain data only): ``D``, ``G``, optimisers, ``step``, ...

    Example:
        >>> state = load_training_checkpoint("runs/ifqa/last.pth")   # doctest: +SKIP
        >>> state["step"], state["config"]                           # doctest: +SKIP
        (200000, {'widths': [64, 128, 256, 512, 1024], 'num_bottleneck': 4})
    """
    from ..weights import read_training_state

    payload = read_training_state(path)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a train-ifqa checkpoint (no format {CHECKPOINT_FORMAT!r})")
    return payload


def _init_discriminator(discriminator: IFQADiscriminator, path: str, cfg: IFQATrainConfig) -> None:
    from ..weights import read_state_dict

    state_dict = read_state_dict(path)
    ours = discriminator.state_dict()
    wrong = [k for k, v in state_dict.items() if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    missing = [k for k in ours if k not in state_dict]
    if wrong or missing or len(state_dict) != len(ours):
        raise ValueError(
            f"{path} does not fit the discriminator (d_widths={cfg.d_widths}, d_bottleneck={cfg.d_bottleneck}): "
            f"{len(missing)} missing, {len(wrong)} wrong shapes (e.g. {(missing + wrong)[:2]}). Fine-tuning "
            f"IFQA_Metric.pth needs the published widths {PUBLISHED_D_WIDTHS} and d_bottleneck=4"
        )
    discriminator.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------------- snapshots
@torch.no_grad()
def snapshot_grid(generator: nn.Module, discriminator: IFQADiscriminator, hq: torch.Tensor, lq: torch.Tensor,
                  regions: dict[str, torch.Tensor], parts: tuple[str, ...]) -> torch.Tensor:
    """Rows per face: HQ | degraded | restored | D(HQ) | D(restored) | FPRS mix | D(mix), as (3,H',W').

    Example:
        >>> from ifqa_loss.regions import template_regions
        >>> cfg = IFQATrainConfig(data="", out="", size=64, d_widths=(4, 8, 8, 16, 16), d_bottleneck=1, g_width=4)
        >>> g, d = build_networks(cfg)
        >>> x = torch.rand(1, 3, 64, 64)
        >>> snapshot_grid(g, d, x, x, template_regions(64), ("mouth",)).shape
        torch.Size([3, 68, 464])
    """
    from torchvision.utils import make_grid

    restored = generator(lq).clamp(0, 1)
    mixed, _, _, _ = fprs_swap(hq, restored, swap_mask(regions, parts))
    maps = [discriminator(x * 2 - 1).expand(-1, 3, -1, -1) for x in (hq, restored, mixed)]
    tiles = torch.stack([hq, lq, restored, maps[0], maps[1], mixed, maps[2]], 1)  # (N,7,3,H,W)
    return make_grid(tiles.flatten(0, 1).float().cpu(), nrow=7, padding=2, pad_value=1.0)


# ----------------------------------------------------------------------------------- training
def prepare_batch(
    batch: dict[str, torch.Tensor], cfg: IFQATrainConfig, generator: torch.Generator, device: torch.device
) -> dict[str, torch.Tensor]:
    """One step's inputs: flipped HQ faces ``hq``, degraded ``lq`` (N,3,S,S); FPRS ``mask`` and
    emphasis ``weight`` (N,1,S,S). All draws come from ``generator`` in a fixed order.

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
    return {"hq": hq, "lq": lq, "mask": mask, "weight": emphasis_map(regions, cfg.emphasis_parts, cfg.emphasis_weight)}


class _Run:
    """Networks, optimisers and scalers of one run, and its adversarial step."""

    def __init__(self, cfg: IFQATrainConfig, device: torch.device, world_size: int):
        self.cfg, self.device = cfg, device
        self.generator, self.discriminator = build_networks(cfg)
        self.d_config = json.loads(json.dumps(self.discriminator.config))  # as stored: lists, not tuples
        if cfg.init_from:
            _init_discriminator(self.discriminator, cfg.init_from, cfg)
        self.generator.to(device)
        self.discriminator.to(device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.amp = cfg.amp and device.type == "cuda"
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.g_train: nn.Module = self.generator
        self.d_train: nn.Module = _DiscriminatorLogits(self.discriminator)
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.g_train, self.d_train = DDP(self.g_train, device_ids=ids), DDP(self.d_train, device_ids=ids)

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    def save(self, path: Path, step: int) -> None:
        """``{'D', 'metric': 'ifqa', 'config'}`` (the metric's checkpoint layout) plus the training state."""
        from ..weights import save_checkpoint

        save_checkpoint(
            path, self.discriminator, "ifqa",
            format=CHECKPOINT_FORMAT,
            G=self.generator.state_dict(),
            generator_config=self.cfg.g_config,
            optimizer_D=self.opt_d.state_dict(),
            optimizer_G=self.opt_g.state_dict(),
            scaler_D=self.scaler_d.state_dict(),
            scaler_G=self.scaler_g.state_dict(),
            step=step,
            train_config=self.cfg.to_dict(),
        )

    def load_state_dict(self, state: dict, path: Path) -> int:
        if state["config"] != self.d_config or state["generator_config"] != self.cfg.g_config:
            raise ValueError(f"{path} was trained with D {state['config']} / G {state['generator_config']} "
                             f"(and --size); pass the same architecture options to resume")
        self.generator.load_state_dict(state["G"])
        self.discriminator.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["optimizer_G"])
        self.opt_d.load_state_dict(state["optimizer_D"])
        self.scaler_g.load_state_dict(state["scaler_G"])
        self.scaler_d.load_state_dict(state["scaler_D"])
        return int(state["step"])

    def step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One D update then one G update; returns (loss_d, loss_l1, loss_adv, d_real, d_fake) detached."""
        cfg, hq, weight = self.cfg, inputs["hq"], inputs["weight"]
        with self.autocast():
            restored = self.g_train(inputs["lq"])
        # Discriminator: real (1) vs restored (0) per pixel, FPRS-mixed; targets follow each pixel's source.
        real_in, fake_in, real_target, fake_target = fprs_swap(hq, restored.detach().float().clamp(0, 1),
                                                               inputs["mask"])
        targets = torch.cat([real_target, fake_target])
        with self.autocast():
            logits = self.d_train(torch.cat([real_in, fake_in]) * 2 - 1)
        loss_d = weighted_bce_with_logits(logits, targets, torch.cat([weight, weight]))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        # Generator: L1 + per-pixel non-saturating adversarial loss against the updated, frozen discriminator.
        self.discriminator.requires_grad_(False)
        try:
            with self.autocast():
                adv_logits = self.discriminator.logits(restored.clamp(0, 1) * 2 - 1)
            loss_l1 = F.l1_loss(restored.float(), hq)
            loss_adv = weighted_bce_with_logits(adv_logits, torch.ones_like(adv_logits), weight)
            loss_g = cfg.l1_weight * loss_l1 + cfg.adv_weight * loss_adv
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss_g).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        finally:
            self.discriminator.requires_grad_(True)
        with torch.no_grad():
            prob = torch.sigmoid(logits.float())
            d_real = (prob * targets).sum() / targets.sum().clamp_min(1)
            d_fake = (prob * (1 - targets)).sum() / (1 - targets).sum().clamp_min(1)
            return torch.stack([loss_d, loss_l1, loss_adv, d_real, d_fake]).detach().double()


class _Logs:
    """log.csv, TensorBoard and snapshots (main process only)."""

    def __init__(self, out: Path, cfg: IFQATrainConfig, start_step: int, log):
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        new = start_step == 0 or not (out / "log.csv").is_file()
        self.file = open(out / "log.csv", "w" if new else "a", newline="")
        self.csv = csv.writer(self.file)
        if new:
            self.csv.writerow(LOG_COLUMNS)
        self.tb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step)
            except ImportError:
                log("tensorboard is not installed: logging to log.csv only")

    def row(self, step: int, metrics: dict) -> None:
        self.csv.writerow([step, *(metrics[c] for c in LOG_COLUMNS[1:])])
        self.file.flush()
        if self.tb is not None:
            for key in LOG_COLUMNS[1:6]:
                self.tb.add_scalar(f"train/{key}", metrics[key], step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(cfg: IFQATrainConfig, log=print) -> dict:
    """Run (or resume) training; returns ``{"step", "checkpoint", "metrics"}`` (last logged values).

    Files in ``cfg.out``: ``last.pth`` (resumable, loads with ``load_metric("ifqa", checkpoint=...)``),
    ``log.csv``, ``snapshots/step_XXXXXXX.png``, ``tensorboard/`` (if installed), ``config.json``.

    Example:
        >>> cfg = IFQATrainConfig(data="/data/ffhq", out="runs/ifqa", steps=200_000, device="cuda")  # doctest: +SKIP
        >>> train(cfg)["checkpoint"]                                                                  # doctest: +SKIP
        'runs/ifqa/last.pth'
    """
    from tqdm import tqdm

    dist_info, device = _init_distributed(cfg.device)
    out = Path(cfg.out)
    last_path = out / "last.pth"
    data = FaceFolder(cfg.data, size=cfg.size, mask_source=cfg.mask_source, landmarks=cfg.landmarks,
                      parsing=cfg.parsing)
    run = _Run(cfg, device, dist_info.world_size)
    start_step = 0
    if cfg.resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist; start without --resume")
        start_step = run.load_state_dict(load_training_checkpoint(last_path), last_path)
        log(f"resumed from {last_path} at step {start_step}")
    if start_step >= cfg.steps:
        log(f"nothing to do: the run is at step {start_step} >= steps={cfg.steps}")
    sampler = StepBatchSampler(len(data), batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps,
                               start_step=start_step, rank=dist_info.rank, world_size=dist_info.world_size)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=cfg.workers,
                                         pin_memory=device.type == "cuda")
    logs = snapshot = None
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        logs = _Logs(out, cfg, start_step, log)
        snapshot = _snapshot_batch(data, cfg, device)

    sums = torch.zeros(5, device=device, dtype=torch.float64)
    count, started, metrics, done = 0, time.time(), {}, start_step
    progress = tqdm(total=cfg.steps, initial=start_step, desc="train-ifqa", unit="step",
                    disable=not (cfg.progress and dist_info.main))
    try:
        for step, batch in enumerate(loader, start=start_step):
            draws = torch.Generator().manual_seed(mix_seed(cfg.seed, step, dist_info.rank))
            sums += run.step(prepare_batch(batch, cfg, draws, device))
            count, done = count + 1, step + 1
            progress.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                metrics = dict(zip(LOG_COLUMNS[1:6], (sums / count).tolist(), strict=True))
                metrics.update(lr_g=run.opt_g.param_groups[0]["lr"], lr_d=run.opt_d.param_groups[0]["lr"],
                               seconds=round(time.time() - started, 2))
                sums.zero_()
                count, started = 0, time.time()
                if logs is not None:
                    logs.row(done, metrics)
                    progress.set_postfix(loss_d=f"{metrics['loss_d']:.3f}", d_real=f"{metrics['d_real']:.2f}",
                                         d_fake=f"{metrics['d_fake']:.2f}")
            if dist_info.main and (done % cfg.snapshot_every == 0 or done == cfg.steps):
                _write_snapshot(out, done, run, snapshot, cfg, logs.tb)
            if dist_info.main and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                run.save(last_path, done)
                if cfg.keep_checkpoints:
                    shutil.copyfile(last_path, out / f"step_{done:07d}.pth")
    finally:
        progress.close()
        if logs is not None:
            logs.close()
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return {"step": done, "checkpoint": str(last_path), "metrics": metrics}


def _snapshot_batch(data: FaceFolder, cfg: IFQATrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed batch (first images, fixed degradations) so snapshots are comparable across steps."""
    items = [data[i] for i in range(min(cfg.snapshot_images, len(data)))]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, 0x5A9))
    hq = batch["image"].to(device)
    regions = batch_regions(batch, cfg.size, cfg.mask_source, device=device)
    return {"hq": hq, "lq": degrade(hq, cfg.degradations, generator=g), "regions": regions}


def _write_snapshot(out: Path, step: int, run: _Run, snap: dict, cfg: IFQATrainConfig, tb) -> None:
    from torchvision.utils import save_image

    grid = snapshot_grid(run.generator, run.discriminator, snap["hq"], snap["lq"], snap["regions"], cfg.fprs_parts)
    (out / "snapshots").mkdir(exist_ok=True)
    save_image(grid, out / "snapshots" / f"step_{step:07d}.png")
    if tb is not None:
        tb.add_image("snapshot", grid, step)
