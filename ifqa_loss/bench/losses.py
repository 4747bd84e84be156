"""Cost of each loss (forward, and forward + backward to the input) and IFQALoss against the naive drop-in."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ifqa_loss import GFIQALoss, IFQALoss, QualityMetric
from ifqa_loss.nets.gfiqa import GFIQA
from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.nets.ifqa_vit import IFQAViT
from ifqa_loss.registry import get_spec

from .memory import PeakMemory, SavedForBackward
from .timing import interleaved

ALL_LOSSES = ("l1", "lpips-alex", "lpips-vgg", "ifqa", "naive-ifqa", "ifqa++", "gfiqa", "ifqa-eot")  # ifqa-eot: opt-in
# "published": IFQA through the published structure instead of the exact fast rewrite (fp32).
ALL_VARIANTS = ("fp32", "bf16", "fp16", "channels_last", "bf16+channels_last", "compile", "published")


def _lpips(net: str, device: str) -> tuple[Callable, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lpips' own torchvision deprecation warnings stay out of the report
        import lpips

        weights = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}[net]
        have_backbone = os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", weights))
        # Without the torchvision backbone file nothing may be downloaded: time a random backbone (same cost).
        with contextlib.redirect_stdout(sys.stderr):
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not have_backbone, verbose=False)
    model = model.to(device).eval().requires_grad_(False)
    note = "" if have_backbone else "random backbone (torchvision weights absent)"
    return (lambda pred, target: model(pred, target).mean()), note


def build_loss(name: str, variant: str, cfg) -> tuple[Callable, str]:
    """``(loss_fn(pred, target) -> scalar, note)`` for ``pred``/``target`` in [-1,1]; ``cfg``: a bench ``Config``."""
    channels_last = "channels_last" in variant
    compile_net = variant == "compile"
    if name == "l1":
        return (lambda pred, target: F.l1_loss(pred, target)), ""
    if name in ("lpips-alex", "lpips-vgg"):
        return _lpips(name.split("-")[1], cfg.device)
    if name in ("ifqa", "ifqa++", "ifqa-eot"):  # ifqa-eot: IFQALoss(augment="eot"), 4 draws (docs/hacking.md)
        net = IFQAViT(**cfg.vit_dims) if name == "ifqa++" else IFQADiscriminator(cfg.ifqa_widths)
        metric = QualityMetric(net, get_spec("ifqa++" if name == "ifqa++" else "ifqa")).to(cfg.device)
        loss = IFQALoss(metric=metric, channels_last=channels_last, compile=compile_net,
                        fast=False if variant == "published" else None, augment="eot" if name == "ifqa-eot" else None)
        return (lambda pred, target: loss(pred)), "random weights"
    if name == "gfiqa":
        metric = QualityMetric(GFIQA(**cfg.gfiqa_kwargs), get_spec("gfiqa")).to(cfg.device)
        loss = GFIQALoss(metric=metric, channels_last=channels_last, compile=compile_net)
        return (lambda pred, target: loss(pred)), "random weights"
    if name == "naive-ifqa":
        # What a drop-in of the official module looks like: trainable parameters, NCHW, fp32 resize.
        net = IFQADiscriminator(cfg.ifqa_widths).to(cfg.device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        forward = torch.compile(net) if compile_net else net

        def naive(pred, target):
            x = F.interpolate(pred, size=(256, 256), mode="bilinear", align_corners=False)
            return 1 - forward(x).mean()

        return naive, "random weights, params require grad"
    raise ValueError(f"unknown loss {name!r}; choose from {ALL_LOSSES}")


def autocast(variant: str, device: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(variant.split("+")[0])
    return torch.autocast(device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()


def inputs(batch: int, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``(pred, target)``, (N,3,size,size) in [-1,1]."""
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    target = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    return pred.to(device), target.to(device)


def forward_backward_step(loss_fn, variant, device, pred, target) -> Callable[[], None]:
    def step():
        x = pred.detach().requires_grad_()
        with autocast(variant, device):
            loss = loss_fn(x, target)
        loss.backward()

    return step


def forward_step(loss_fn, variant, device, pred, target) -> Callable[[], None]:
    def step():
        with torch.no_grad(), autocast(variant, device):
            loss_fn(pred, target)

    return step


def measure_losses(cfg, log=print) -> list[dict]:
    """One row per loss, variant, batch size and input size: forward and fwd+bwd times, images/s, peak memory."""
    rows = []
    for name in cfg.losses:
        variants = cfg.variants if name != "l1" else ("fp32",)
        if name.startswith("lpips"):
            variants = tuple(v for v in variants if v != "compile")
        for variant in variants:
            loss_fn, note = build_loss(name, variant, cfg)
            for batch in cfg.batch_sizes:
                for size in cfg.input_sizes:
                    pred, target = inputs(batch, size, cfg.device)
                    steps = {"fwd+bwd": forward_backward_step(loss_fn, variant, cfg.device, pred, target),
                             "fwd": forward_step(loss_fn, variant, cfg.device, pred, target)}
                    with PeakMemory(cfg.device) as memory, SavedForBackward() as saved:
                        steps["fwd+bwd"]()
                    timed = interleaved(steps, rounds=cfg.repeats, warmup=cfg.warmup)
                    row = {"loss": name, "variant": variant, "batch": batch, "input": size,
                           "forward_ms": timed["fwd"], "forward_backward_ms": timed["fwd+bwd"],
                           "images_per_s": batch / (timed["fwd+bwd"]["median"] / 1e3),
                           "peak_memory_mib": memory.peak_bytes / 2**20,
                           "saved_for_backward_mib": saved.bytes / 2**20, "note": note}
                    rows.append(row)
                    log(f"  {name:<11} {variant:<18} batch {batch:<3} {size}px  fwd+bwd "
                        f"{row['forward_backward_ms']['median']:9.1f} ms")
            del loss_fn
    return rows


def compare_with_naive(cfg, log=print) -> dict:
    """IFQALoss (fp32, and bf16 when ``cfg.variants`` has it) against the naive drop-in (fp32), round-robin.

    At ``cfg.goal_batch`` and ``cfg.goal_size``; ``ratios[variant]`` is IFQALoss time / naive time.
    """
    pred, target = inputs(cfg.goal_batch, cfg.goal_size, cfg.device)
    variants = ["fp32"] + (["bf16"] if "bf16" in cfg.variants else [])
    contenders = {f"ifqa {v}": ("ifqa", v) for v in variants} | {"naive fp32": ("naive-ifqa", "fp32")}
    steps = {label: forward_backward_step(build_loss(name, variant, cfg)[0], variant, cfg.device, pred, target)
             for label, (name, variant) in contenders.items()}
    times = interleaved(steps, rounds=cfg.goal_rounds, warmup=cfg.warmup)
    naive = times["naive fp32"]["median"]
    result = {
        "batch": cfg.goal_batch, "input": cfg.goal_size, "rounds": cfg.goal_rounds, "forward_backward_ms": times,
        "ratios": {v: times[f"ifqa {v}"]["median"] / naive for v in variants},
        "images_per_s": {v: cfg.goal_batch / (times[f"ifqa {v}"]["median"] / 1e3) for v in variants},
    }
    log("  IFQALoss time / naive drop-in time: " + ", ".join(f"{v} {r:.2f}x" for v, r in result["ratios"].items()))
    return result
