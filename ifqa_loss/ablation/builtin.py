"""Built-in mode: train a restoration network on HQ faces degraded on the fly, one setting at a time.

Fair comparisons: for a given seed every setting starts from the same initial weights and
sees the same batches with the same degradations (one seeded ``torch.Generator`` draws both,
independent of the loss), so a setting differs from the baseline only in its objective.
Under ``torchrun`` (``WORLD_SIZE > 1``) the network is wrapped in DistributedDataParallel and
each rank trains on its slice of the same global batch; on CUDA AMP is on (bf16, else fp16
with a gradient scaler).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, Setting, SweepConfig, SweepConfigError, check_net_class

__all__ = ["FaceData", "load_faces", "prepare_data", "build_net", "build_objective", "train_setting", "restore"]


@dataclass
class FaceData:
    """Training faces and the held-out split (clean and degraded), all (N,3,S,S) in [0,1] on the CPU."""

    train: torch.Tensor
    val: torch.Tensor
    val_lq: torch.Tensor
    val_names: list[str]


def load_faces(folder: str, size: int) -> tuple[torch.Tensor, list[str]]:
    """Every image in ``folder`` (recursive), centre-cropped to a square, resized to ``size`` -> ((N,3,S,S), names)."""
    from ..imageio import ImageReadError, list_images, read_image

    paths, problems = list_images([folder])
    if problems or not paths:
        raise SweepConfigError(f"data.hq: no images in {folder}; put aligned HQ faces there "
                               "(to try it: python -m ifqa_loss.ablation.sample_faces FOLDER)")
    faces = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            raise SweepConfigError(f"data.hq: {exc}") from exc
        side = min(image.shape[-2:])
        top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
        image = image[:, top : top + side, left : left + side][None]
        if side != size:
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        faces.append(image.clamp(0, 1))
    return torch.cat(faces), [str(p.relative_to(folder)) for p in paths]


def prepare_data(cfg: SweepConfig) -> FaceData:
    """Load, split (seeded by ``data.split_seed``) and degrade the held-out faces once (``data.eval_seed``)."""
    from ..training.degradations import DegradationConfig, degrade

    faces, names = load_faces(cfg.data.hq, cfg.data.size)
    if len(faces) <= cfg.data.val_count:
        raise SweepConfigError(f"data.hq has {len(faces)} images; data.val_count={cfg.data.val_count} leaves none "
                               "to train on: add images or lower val_count")
    order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(cfg.data.split_seed))
    val_idx, train_idx = order[: cfg.data.val_count].sort().values, order[cfg.data.val_count :]
    val = faces[val_idx]
    val_lq = degrade(val, DegradationConfig(**cfg.data.degradation),
                     generator=torch.Generator().manual_seed(cfg.data.eval_seed))
    return FaceData(faces[train_idx], val, val_lq, [names[i] for i in val_idx.tolist()])


def build_net(model: ModelConfig, seed: int) -> nn.Module:
    """The restoration network, initialised from ``seed`` without touching the global RNG."""
    cls = check_net_class(model.net)  # an nn.Module subclass before anything is called
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = cls(**model.kwargs)
        except TypeError as exc:
            raise SweepConfigError(f"model.kwargs do not fit {model.net}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise SweepConfigError(f"model.net {model.net} built a {type(net).__name__}, not an nn.Module")
    return net


class _MeanLoss(nn.Module):
    """Per-image distance module -> scalar mean (LPIPS as a base term)."""

    def __init__(self, distance: nn.Module):
        super().__init__()
        self.distance = distance

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.distance(pred, target).mean()


def build_objective(cfg: SweepConfig, setting: Setting, *, metrics: dict, lpips: nn.Module | None):
    """The setting's :class:`~ifqa_loss.LossComposer`: ``base`` terms plus the swept quality term, if any."""
    from ..losses import LossComposer
    from ..losses.composer import LOSS_TYPES
    from .config import METRIC_LOSSES

    terms = {}
    for name, spec in cfg.base.items():
        module = _MeanLoss(lpips) if spec["type"] == "LPIPS" else LOSS_TYPES[spec["type"]]()
        terms[name] = (module, float(spec.get("weight", 1.0)))
    if setting.metric is not None:
        term = next(t for t in cfg.sweep if t.metric == setting.metric)
        loss_cls = LOSS_TYPES[METRIC_LOSSES[setting.metric]]
        try:
            loss = loss_cls(metric=metrics[setting.metric], input_range=(0, 1), out_of_range="clamp", **term.loss)
        except (TypeError, ValueError) as exc:
            raise SweepConfigError(f"sweep term {setting.metric}: loss options {term.loss} are invalid ({exc})") \
                from exc
        terms[setting.metric] = (loss, setting.weight, term.schedules[setting.schedule])
    return LossComposer(terms)


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def _to_net(x: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    lo, hi = model.input_range
    return x * (hi - lo) + lo


def _from_net(y: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    lo, hi = model.input_range
    return (y - lo) / (hi - lo)


def train_setting(cfg: SweepConfig, setting: Setting, data: FaceData, *, device: torch.device, metrics: dict,
                  lpips: nn.Module | None, progress: bool = True, on_step=None) -> tuple[nn.Module, list[dict]]:
    """Train one setting; returns the (unwrapped) network and the per-step log rows.

    ``on_step(step, net)`` runs after every step (e.g. a :class:`~ifqa_loss.hacking.HackingMonitor`);
    a quality term built with ``refresh:`` is refreshed on (hq, restored) after every step.
    """
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from ..training.degradations import DegradationConfig, apply_degradations, sample_degradation_params

    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    net = build_net(cfg.model, setting.seed).to(device).train()
    model = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    objective = build_objective(cfg, setting, metrics=metrics, lpips=lpips)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    autocast, scaler = _autocast(device, cfg.train.amp)
    degradation = DegradationConfig(**cfg.data.degradation)
    # Data order and degradations depend on the seed only: every setting with this seed sees the same batches.
    generator = torch.Generator().manual_seed(setting.seed)
    n, batch = len(data.train), cfg.train.batch_size
    order, cursor, log = torch.randperm(n, generator=generator), 0, []
    bar = tqdm(range(cfg.train.steps), desc=setting.id, leave=False, disable=not progress or rank != 0)
    for step in bar:
        if cursor + batch > n:
            order, cursor = torch.cat([order[cursor:], torch.randperm(n, generator=generator)]), 0
        idx, cursor = order[cursor : cursor + batch], cursor + batch
        params = sample_degradation_params(batch, degradation, generator=generator)
        mine = slice(rank, None, world)  # this rank's share of the global batch
        hq = data.train[idx][mine].to(device, non_blocking=True)
        lq = apply_degradations(hq, {k: v[mine] for k, v in params.items()}, degradation)
        with autocast:
            restored = _from_net(model(_to_net(lq, cfg.model)), cfg.model)
            inputs = {name: (restored, hq) for name in cfg.base}
            if setting.metric is not None:
                inputs[setting.metric] = (restored.float(),)
            total, logs = objective(step, **inputs)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        for term in objective.terms.values():  # online refresh (docs/hacking.md): off unless the sweep sets it
            if getattr(term, "refresher", None) is not None and objective.weight_at(setting.metric, step):
                term.update(hq, restored.detach().float())
        if on_step is not None:
            on_step(step, net)
        row = {"step": step, **{k: float(v) for k, v in logs.items()}}
        log.append(row)
        bar.set_postfix(loss=f"{row['total']:.4f}", refresh=False)
    bar.close()
    return net.eval(), log


@torch.no_grad()
def restore(net: nn.Module, lq: torch.Tensor, model: ModelConfig, *, device: torch.device,
            batch_size: int = 8) -> torch.Tensor:
    """Run the trained net over (N,3,S,S) degraded faces in [0,1] -> restored (N,3,S,S) in [0,1] on the CPU."""
    out = []
    for chunk in lq.split(batch_size):
        out.append(_from_net(net(_to_net(chunk.to(device), model)), model).float().clamp(0, 1).cpu())
    return torch.cat(out)
