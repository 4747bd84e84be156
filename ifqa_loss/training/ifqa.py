"""Train (or fine-tune) the IFQA metric: the paper's adversarial framework with FPRS and facial emphasis.

A plain restoration U-Net (:class:`~ifqa_loss.nets.restorer_unet.RestorationUNet`) restores
degraded faces (:mod:`~ifqa_loss.training.degradations`) under L1 + a per-pixel adversarial
loss; the per-pixel U-Net discriminator (:class:`~ifqa_loss.nets.ifqa_unet.IFQADiscriminator`,
the IFQA metric's network) learns real (1) vs restored (0) per pixel with BCE on logits.
FPRS swaps eyes/nose/mouth between each real face and its restored counterpart with
probability ``fprs_prob`` (targets follow each pixel's source), and the per-pixel losses are
weighted up on the primary regions (``emphasis_weight``). Our additions, each measured in
docs/ifqa_training.md: half of the fakes are the degraded inputs themselves
(``fake_degraded_prob``), warm-up + cosine learning rates, an EMA of the discriminator (the
weights validated and saved as the metric), validation on held-out images and ``best.pth``.

Rooms: options in :mod:`.ifqa_config`, step inputs in :mod:`.ifqa_batch`, checkpoints and the run
folder in :mod:`.ifqa_state`, validation in :mod:`.ifqa_validation`, files written in :mod:`.ifqa_logs`.

Checkpoints (``RUN/last.pth``) hold ``{'D': EMA state_dict, 'config': D architecture, 'D_train': the
raw discriminator, 'G', 'G_val', optimisers, grad scalers, 'step', 'train_config', 'best'}``:
``load_metric("ifqa", checkpoint=...)`` reads ``'D'`` like the official ``IFQA_Metric.pth``. Every
random number of step ``s`` is drawn from generators seeded by ``(seed, s, rank)`` and the learning
rate is a function of the step, so a resumed run is bit-exact (on the CPU; cuDNN kernels may differ
run to run on GPUs).

Multi-GPU: launch with ``torchrun --nproc_per_node K -m ifqa_loss train-ifqa ...``; each
process trains on ``batch_size`` images (global batch ``K * batch_size``); logged losses are the
mean over processes.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.ifqa_unet import IFQADiscriminator
from .face_data import FaceFolder, StepBatchSampler, mix_seed
from .ifqa_batch import batch_regions, flip_batch, prepare_batch, snapshot_batch
from .ifqa_config import PUBLISHED_D_WIDTHS, IFQATrainConfig, config_changes, lr_factor
from .ifqa_logs import LOG_COLUMNS, RunLogs, snapshot_figure, write_snapshot
from .ifqa_objective import fprs_swap, weighted_bce_with_logits
from .ifqa_state import (
    CHECKPOINT_FORMAT,
    RunFolder,
    build_networks,
    init_discriminator,
    load_training_checkpoint,
    truncate_log,
    write_config,
)
from .ifqa_validation import Validator, list_val_images, split_files

__all__ = ["CHECKPOINT_FORMAT", "LOG_COLUMNS", "PUBLISHED_D_WIDTHS", "IFQATrainConfig", "batch_regions",
           "build_networks", "ema_update", "flip_batch", "init_discriminator", "load_training_checkpoint",
           "prepare_batch", "snapshot_figure", "train"]


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


def _all_reduce_mean(values: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)
        values /= world_size
    return values


class _DiscriminatorLogits(nn.Module):
    """DDP calls ``forward``: this routes it to the discriminator's ``logits``."""

    def __init__(self, net: IFQADiscriminator):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x)


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float, updates: int) -> None:
    """``ema <- d * ema + (1 - d) * net`` with ``d = min(decay, (1 + updates) / (10 + updates))``: the
    warm-up lets short runs average recent weights instead of the initial ones. Buffers are copied.

    Example:
        >>> a, b = nn.Linear(1, 1), nn.Linear(1, 1)
        >>> ema_update(a, b, decay=0.99, updates=0)   # d = 0.1: mostly the new weights
        >>> bool((a.weight - b.weight).abs() < (b.weight.abs() + 1))
        True
    """
    d = min(decay, (1 + updates) / (10 + updates))
    for e, p in zip(ema.state_dict().values(), net.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(p, 1 - d)
        else:
            e.copy_(p)


# ----------------------------------------------------------------------------------- networks and one step
class _Run:
    """Networks, optimisers, EMA and scalers of one run, and its adversarial step."""

    def __init__(self, cfg: IFQATrainConfig, device: torch.device, world_size: int):
        self.cfg, self.device = cfg, device
        self.generator, self.discriminator = build_networks(cfg)
        self.d_config = json.loads(json.dumps(self.discriminator.config))  # as stored: lists, not tuples
        if cfg.init_from:
            init_discriminator(self.discriminator, cfg.init_from)
        self.generator.to(device)
        self.discriminator.to(device)
        self.ema = copy.deepcopy(self.discriminator).requires_grad_(False).eval() if cfg.ema_decay > 0 else None
        self.ema_updates = 0
        self.val_generator: nn.Module | None = None  # frozen restorer of the validation (first validation's)
        self.best = {"step": None, "criterion": None}
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

    @property
    def metric_net(self) -> IFQADiscriminator:
        """The discriminator the metric uses: the EMA when on, else the trained one."""
        return self.ema if self.ema is not None else self.discriminator

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    def set_lr(self, step: int) -> None:
        factor = lr_factor(self.cfg, step)
        for opt, base in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    def save(self, path: Path, step: int) -> None:
        """``{'D', 'metric': 'ifqa', 'config'}`` (the metric's checkpoint layout) plus the training state."""
        from ..weights import save_checkpoint

        save_checkpoint(
            path, self.metric_net, "ifqa",
            format=CHECKPOINT_FORMAT,
            D_train=self.discriminator.state_dict(),
            G=self.generator.state_dict(),
            G_val=self.val_generator.state_dict() if self.val_generator is not None else None,
            generator_config=self.cfg.g_config,
            optimizer_D=self.opt_d.state_dict(),
            optimizer_G=self.opt_g.state_dict(),
            scaler_D=self.scaler_d.state_dict(),
            scaler_G=self.scaler_g.state_dict(),
            ema_updates=self.ema_updates,
            best=self.best,
            step=step,
            train_config=self.cfg.to_dict(),
        )

    def load_state_dict(self, state: dict, path: Path) -> int:
        if state["config"] != self.d_config or state["generator_config"] != self.cfg.g_config:
            raise ValueError(f"{path} was trained with D {state['config']} / G {state['generator_config']} "
                             f"(and --size); pass the same architecture options to resume")
        for name in ("D_train", "optimizer_D", "optimizer_G"):
            if name not in state:
                raise ValueError(f"{path} has no {name!r}: it is a metric-only checkpoint (e.g. best.pth), not a "
                                 f"resumable run; resume from last.pth or fine-tune with --init-from")
        self.generator.load_state_dict(state["G"])
        self.discriminator.load_state_dict(state["D_train"])
        if self.ema is not None:
            self.ema.load_state_dict(state["D"])
        if state.get("G_val") is not None:
            self.val_generator = copy.deepcopy(self.generator).requires_grad_(False).eval()
            self.val_generator.load_state_dict(state["G_val"])
        self.opt_g.load_state_dict(state["optimizer_G"])
        self.opt_d.load_state_dict(state["optimizer_D"])
        self.scaler_g.load_state_dict(state["scaler_G"])
        self.scaler_d.load_state_dict(state["scaler_D"])
        self.ema_updates = int(state.get("ema_updates", 0))
        self.best = dict(state.get("best") or self.best)
        return int(state["step"])

    def step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One D update then one G update; returns (loss_d, loss_l1, loss_adv, d_real, d_fake) detached."""
        cfg, hq, weight = self.cfg, inputs["hq"], inputs["weight"]
        with self.autocast():
            restored = self.g_train(inputs["lq"])
        # Discriminator: real (1) vs fake (0) per pixel, FPRS-mixed; targets follow each pixel's source. The fake is
        # the restoration, or (``use_lq``) the degraded input itself.
        fake = restored.detach().float().clamp(0, 1)
        if "use_lq" in inputs:
            fake = torch.where(inputs["use_lq"].to(fake.device).view(-1, 1, 1, 1), inputs["lq"], fake)
        real_in, fake_in, real_target, fake_target = fprs_swap(hq, fake, inputs["mask"])
        targets = torch.cat([real_target, fake_target])
        with self.autocast():
            logits = self.d_train(torch.cat([real_in, fake_in]) * 2 - 1)
        loss_d = weighted_bce_with_logits(logits, targets, torch.cat([weight, weight]))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        if self.ema is not None:
            ema_update(self.ema, self.discriminator, cfg.ema_decay, self.ema_updates)
            self.ema_updates += 1
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

    @torch.no_grad()
    def validate(self, validator: Validator) -> dict[str, float]:
        if self.val_generator is None:
            self.val_generator = copy.deepcopy(self.generator).requires_grad_(False).eval()
        net = self.metric_net
        was_training = net.training
        net.eval()
        try:
            return validator.evaluate(lambda x: net(x.to(self.device) * 2 - 1).mean((1, 2, 3)).cpu(),
                                      lambda lq: self.val_generator(lq.to(self.device)).cpu())
        finally:
            net.train(was_training)


# ----------------------------------------------------------------------------------- the loop
class _StopSignal:
    """SIGTERM / SIGINT set a flag that the loop checks after each step (main thread only)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _data_and_validation(cfg: IFQATrainConfig, device: torch.device, log) -> tuple[FaceFolder, Validator | None]:
    kwargs = {"size": cfg.size, "mask_source": cfg.mask_source, "landmarks": cfg.landmarks, "parsing": cfg.parsing}
    data = FaceFolder(cfg.data, **kwargs)
    resize = data.resize
    if cfg.val:
        val_paths = list_val_images(cfg.val)
    else:
        train_paths, val_paths = split_files(data.paths, cfg.val_fraction, cfg.seed)
        if val_paths:
            data = FaceFolder(cfg.data, files=train_paths, **kwargs)
        elif cfg.val_fraction > 0:
            log(f"validation off: {len(data)} images are too few to hold some out (pass --val DIR)")
    if not val_paths:
        return data, None
    from ..imageio import read_image

    images = torch.stack([resize(read_image(p)) for p in val_paths]).to(device)
    log(f"validation: {len(val_paths)} held-out images ({'--val' if cfg.val else 'split of --data'}), "
        f"{len(data)} for training")
    return data, Validator(images, cfg.degradations, seed=cfg.seed)


def train(cfg: IFQATrainConfig, log=print) -> dict:
    """Run (or resume) training; returns ``{"step", "checkpoint", "best", "metrics", "validation",
    "interrupted"}``.

    Files in ``cfg.out``: ``last.pth`` (resumable, loads with ``load_metric("ifqa", checkpoint=...)``),
    ``best.pth`` (the EMA discriminator at the best validation criterion), ``log.csv``, ``val.csv``,
    ``snapshots/step_XXXXXXX.png``, ``tensorboard/`` (if installed), ``config.json`` (with its history),
    ``result.json``. SIGTERM / SIGINT end the run after the current step with a checkpoint.

    Example:
        >>> cfg = IFQATrainConfig(data="/data/ffhq", out="runs/ifqa", steps=200_000, device="cuda")  # doctest: +SKIP
        >>> train(cfg)["checkpoint"]                                                                  # doctest: +SKIP
        'runs/ifqa/last.pth'
    """
    dist_info, device = _init_distributed(cfg.device)
    out = Path(cfg.out)
    folder = RunFolder(out, resume=cfg.resume) if dist_info.main else contextlib.nullcontext()
    with folder, _StopSignal() as stop:
        return _train(cfg, log, dist_info, device, out, stop)


def _train(cfg: IFQATrainConfig, log, dist_info: _Dist, device: torch.device, out: Path, stop: _StopSignal) -> dict:
    from tqdm import tqdm

    last_path = out / "last.pth"
    state = None
    if cfg.resume:
        state = load_training_checkpoint(last_path)
        config_changes(state["train_config"], cfg)  # an architecture option that differs is refused, named
    data, validator = _data_and_validation(cfg, device, log if dist_info.main else lambda *a: None)
    run = _Run(cfg, device, dist_info.world_size)
    start_step = 0
    if state is not None:
        start_step = run.load_state_dict(state, last_path)
        log(f"resumed from {last_path} at step {start_step}")
    if dist_info.main:
        previous = None
        if cfg.resume:
            config_file = out / "config.json"
            history = json.loads(config_file.read_text()).get("history", []) if config_file.is_file() else []
            previous = {**state["train_config"], "history": history}
        changes = write_config(out, cfg, start_step, previous)
        if changes:
            log("changed on resume (applied, recorded in config.json): "
                + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()))
        for name in ("log.csv", "val.csv"):
            dropped = truncate_log(out / name, start_step)
            if dropped:
                log(f"{name}: dropped {dropped} rows written after the checkpoint (step {start_step})")
    if start_step >= cfg.steps:
        log(f"nothing to do: the run is at step {start_step} >= steps={cfg.steps}")
    sampler = StepBatchSampler(len(data), batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps,
                               start_step=start_step, rank=dist_info.rank, world_size=dist_info.world_size)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=cfg.workers,
                                         pin_memory=device.type == "cuda")
    logs = snapshot = None
    if dist_info.main:
        logs = RunLogs(out, start_step, tensorboard=cfg.tensorboard, log=log)
        snapshot = snapshot_batch(data, cfg, device)

    sums = torch.zeros(5, device=device, dtype=torch.float64)
    count, started, metrics, validation, done = 0, time.time(), {}, {}, start_step
    progress = tqdm(total=cfg.steps, initial=start_step, desc="train-ifqa", unit="step",
                    disable=not (cfg.progress and dist_info.main))
    try:
        for step, batch in enumerate(loader, start=start_step):
            run.set_lr(step)
            draws = torch.Generator().manual_seed(mix_seed(cfg.seed, step, dist_info.rank))
            sums += run.step(prepare_batch(batch, cfg, draws, device))
            count, done = count + 1, step + 1
            progress.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = _all_reduce_mean(sums / count, dist_info.world_size)
                metrics = dict(zip(LOG_COLUMNS[1:6], means.tolist(), strict=True))
                metrics.update(lr_g=run.opt_g.param_groups[0]["lr"], lr_d=run.opt_d.param_groups[0]["lr"],
                               seconds=round(time.time() - started, 2))
                sums.zero_()
                count, started = 0, time.time()
                if logs is not None:
                    logs.train_row(done, metrics)
                    progress.set_postfix(loss_d=f"{metrics['loss_d']:.3f}", d_real=f"{metrics['d_real']:.2f}",
                                         d_fake=f"{metrics['d_fake']:.2f}")
            if dist_info.main and validator is not None and (done % cfg.val_every == 0 or done == cfg.steps):
                validation = run.validate(validator)
                logs.val_row(done, validation)
                if run.best["criterion"] is None or validation["criterion"] > run.best["criterion"]:
                    run.best = {"step": done, "criterion": validation["criterion"]}
                    _save_best(run, out / "best.pth", done, validation)
            if dist_info.main and (done % cfg.snapshot_every == 0 or done == cfg.steps):
                write_snapshot(out, done, run.generator, run.metric_net, snapshot, cfg.fprs_parts, logs.tb)
            stopping = _stop_requested(stop, dist_info.world_size, device)
            if dist_info.main and (done % cfg.checkpoint_every == 0 or done == cfg.steps or stopping):
                run.save(out / "last.pth", done)
                if cfg.keep_checkpoints:
                    shutil.copyfile(last_path, out / f"step_{done:07d}.pth")
            if stopping:
                break
    finally:
        progress.close()
        if logs is not None:
            logs.close()
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    interrupted = done < cfg.steps and stop.received is not None
    result = {"step": done, "checkpoint": str(last_path), "interrupted": interrupted,
              "best": {**run.best, "checkpoint": str(out / "best.pth") if run.best["step"] else None},
              "metrics": metrics, "validation": validation}
    if dist_info.main:
        (out / "result.json").write_text(json.dumps(result, indent=2))
        if interrupted:
            log(f"interrupted at step {done}: {last_path} holds it; continue with --resume")
        elif validation:
            log(f"validation at step {done}: clean > degraded {validation['acc_degraded']:.0%}, clean > restored "
                f"{validation['acc_restored']:.0%}, blur-ladder SRCC {validation['ladder_srcc']:.2f}; best criterion "
                f"{run.best['criterion']:.3f} at step {run.best['step']} ({out / 'best.pth'})")
    return result


def _stop_requested(stop: _StopSignal, world_size: int, device: torch.device) -> bool:
    flag = torch.tensor([1.0 if stop.received is not None else 0.0], device=device)
    return bool(_all_reduce_mean(flag, world_size).item() > 0)


def _save_best(run: _Run, path: Path, step: int, validation: dict) -> None:
    from ..weights import save_checkpoint

    save_checkpoint(path, run.metric_net, "ifqa", step=step, validation=validation,
                    train_config=run.cfg.to_dict(), criterion="mean(acc_degraded, acc_restored, (ladder_srcc+1)/2)")
