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
from .timing import Budget, adaptive, interleaved, ratio_text, summarize

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


def applicable(name: str, variant: str) -> bool:
    """Whether ``variant`` means anything for loss ``name`` (L1 has fp32 only; lpips is not compiled)."""
    if name == "l1":
        return variant == "fp32"
    return not (name.startswith("lpips") and variant == "compile")


def measure_losses(cfg, log=print, budget: Budget | None = None, block_seconds=None) -> list[dict]:
    """One row per loss, variant, batch size and input size: forward and fwd+bwd times, images/s, peak memory.

    The losses of one variant, batch and size are timed round-robin in one adaptive block (timing.adaptive): the
    first fwd+bwd call of each (the memory measurement) is its warm-up; rounds are added until IFQALoss / naive
    drop-in (the headline ratio, when both are timed) is conclusive or ``block_seconds()`` (seconds this block
    may take) is spent. Each IFQA row carries that paired ratio as ``ratio_to_naive``.
    """
    rows = []
    for variant in cfg.variants:
        names = [name for name in cfg.losses if applicable(name, variant)]
        fns = {}
        for name in names:
            fns[name] = build_loss(name, variant, cfg)
        for batch in cfg.batch_sizes:
            for size in cfg.input_sizes:
                pred, target = inputs(batch, size, cfg.device)
                fwd_bwd = {name: forward_backward_step(fns[name][0], variant, cfg.device, pred, target)
                           for name in names}
                memory_mib, saved_mib = {}, {}
                for name in names:
                    with PeakMemory(cfg.device) as memory, SavedForBackward() as saved:
                        fwd_bwd[name]()
                    memory_mib[name], saved_mib[name] = memory.peak_bytes / 2**20, saved.bytes / 2**20
                    if budget is not None:
                        budget.tick(f"losses {variant} batch {batch} {size}px: warm-up")
                forward = interleaved({name: forward_step(fns[name][0], variant, cfg.device, pred, target)
                                       for name in names}, rounds=cfg.forward_repeats, warmup=0)
                ratios = {"ifqa / naive-ifqa": ("ifqa", "naive-ifqa", None)} if {"ifqa", "naive-ifqa"} <= set(
                    names) else {}
                label = f"losses {variant} batch {batch} {size}px"
                block = adaptive(fwd_bwd, ratios=ratios, min_rounds=cfg.repeats, max_rounds=cfg.max_rounds,
                                 warmup=max(0, cfg.warmup - 1), budget=budget, label=label,
                                 budget_s=block_seconds() if block_seconds else float("inf"), target=cfg.ratio_target)
                for name in names:
                    timed = summarize(block["times"][name])
                    row = {"loss": name, "variant": variant, "batch": batch, "input": size,
                           "forward_ms": forward[name], "forward_backward_ms": timed,
                           "images_per_s": batch / (timed["median"] / 1e3),
                           "peak_memory_mib": memory_mib[name], "saved_for_backward_mib": saved_mib[name],
                           "note": fns[name][1], "rounds": block["rounds"], "stopped": block["stopped"]}
                    if name == "ifqa" and ratios:
                        row["ratio_to_naive"] = block["ratios"]["ifqa / naive-ifqa"]
                        row["naive_forward_backward_ms"] = summarize(block["times"]["naive-ifqa"])
                    rows.append(row)
                    log(f"  {name:<11} {variant:<18} batch {batch:<3} {size}px  fwd+bwd "
                        f"{timed['median']:9.1f} ms  ({block['rounds']} rounds)")
        del fns
    return rows


def naive_comparison_from_rows(cfg, rows: list[dict]) -> dict | None:
    """The IFQALoss vs naive comparison read off the loss sweep (same block, paired), when it timed the goal case."""
    if "bf16" in cfg.variants:
        return None
    for row in rows:
        if (row["loss"], row["variant"], row["batch"], row["input"]) == ("ifqa", "fp32", cfg.goal_batch,
                                                                          cfg.goal_size) and "ratio_to_naive" in row:
            return {"batch": cfg.goal_batch, "input": cfg.goal_size, "rounds": row["rounds"], "stopped": row["stopped"],
                    "forward_backward_ms": {"ifqa fp32": row["forward_backward_ms"],
                                            "naive fp32": row["naive_forward_backward_ms"]},
                    "ratios": {"fp32": row["ratio_to_naive"]}, "images_per_s": {"fp32": row["images_per_s"]},
                    "source": "loss sweep (same rounds)"}
    return None


def compare_with_naive(cfg, log=print, budget: Budget | None = None, block_seconds=None) -> dict:
    """IFQALoss (fp32, and bf16 when ``cfg.variants`` has it) against the naive drop-in (fp32), round-robin.

    At ``cfg.goal_batch`` and ``cfg.goal_size``; ``ratios[variant]`` is IFQALoss time / naive time as a
    :func:`~ifqa_loss.bench.timing.paired_ratio` (estimate, 95 % interval, status).
    """
    pred, target = inputs(cfg.goal_batch, cfg.goal_size, cfg.device)
    variants = ["fp32"] + (["bf16"] if "bf16" in cfg.variants else [])
    contenders = {f"ifqa {v}": ("ifqa", v) for v in variants} | {"naive fp32": ("naive-ifqa", "fp32")}
    steps = {label: forward_backward_step(build_loss(name, variant, cfg)[0], variant, cfg.device, pred, target)
             for label, (name, variant) in contenders.items()}
    block = adaptive(steps, ratios={v: (f"ifqa {v}", "naive fp32", None) for v in variants},
                     min_rounds=cfg.goal_rounds, max_rounds=cfg.max_rounds, warmup=cfg.warmup, budget=budget,
                     label="IFQALoss vs naive", budget_s=block_seconds() if block_seconds else float("inf"),
                     target=cfg.ratio_target)
    times = {label: summarize(t) for label, t in block["times"].items()}
    result = {
        "batch": cfg.goal_batch, "input": cfg.goal_size, "rounds": block["rounds"], "stopped": block["stopped"],
        "forward_backward_ms": times, "ratios": block["ratios"],
        "images_per_s": {v: cfg.goal_batch / (times[f"ifqa {v}"]["median"] / 1e3) for v in variants},
        "source": "own block",
    }
    log("  IFQALoss time / naive drop-in time: " + ", ".join(
        f"{v} {ratio_text(r)}" for v, r in result["ratios"].items()))
    return result
