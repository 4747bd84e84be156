"""Forward/backward cost of face-quality losses and their overhead on a restoration generator step.

Run ``ifqa-loss bench`` or ``python -m ifqa_loss.bench.overhead`` (``--help`` for options).
Timing does not depend on weight values, so every network here has random weights
and no checkpoint is needed. Three measurements:

* **losses**: per loss and variant, forward ms, forward + backward-to-input ms,
  images/s and peak memory (CUDA ``max_memory_allocated``; CPU peak RSS increase).
* **goals**: IFQALoss vs the naive drop-in (official module, fp32, NCHW, parameters
  requiring grad) at 256 input, batch 2, timed alternately in one loop.
* **generator**: a GFPGANv1Clean-sized generator's training step with and without each loss.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ifqa_loss import GFIQALoss, IFQALoss, QualityMetric
from ifqa_loss.nets.gfiqa import GFIQA
from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.nets.ifqa_vit import IFQAViT
from ifqa_loss.registry import get_spec

from .generator import RestorationGenerator

ALL_LOSSES = ("l1", "lpips-alex", "lpips-vgg", "ifqa", "naive-ifqa", "ifqa++", "gfiqa")
ALL_VARIANTS = ("fp32", "bf16", "fp16", "channels_last", "bf16+channels_last", "compile")


@dataclass
class Config:
    device: str = "cpu"
    # lpips-vgg costs ~14 s per fwd+bwd at 512 on a 2-core CPU: CUDA defaults and --full only.
    losses: tuple[str, ...] = ("l1", "lpips-alex", "ifqa", "naive-ifqa")
    variants: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (2,)
    input_sizes: tuple[int, ...] = (512,)
    warmup: int = 1
    repeats: int = 2
    goal_rounds: int = 2
    goal_batch: int = 2
    goal_size: int = 256
    generator_size: int = 256
    generator_batch: int = 1
    generator_losses: tuple[str, ...] = ("ifqa", "naive-ifqa")
    ifqa_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)  # tests shrink these
    vit_dims: dict = field(default_factory=dict)  # IFQAViT overrides; tests shrink these
    gfiqa_kwargs: dict = field(default_factory=dict)  # GFIQA overrides; tests shrink these


def default_config(device: str) -> Config:
    if device == "cpu":
        return Config()
    return Config(device=device, losses=("l1", "lpips-alex", "lpips-vgg", "ifqa", "naive-ifqa"),
                  variants=("fp32", "bf16"), batch_sizes=(8,), warmup=3, repeats=10,
                  goal_rounds=10, generator_size=512, generator_batch=8,
                  generator_losses=("l1", "lpips-vgg", "ifqa", "naive-ifqa"))


def full_config(device: str) -> Config:
    cuda = device != "cpu"
    variants = ALL_VARIANTS if cuda else tuple(v for v in ALL_VARIANTS if v != "fp16")  # CPU fp16 is emulated
    return Config(device=device, losses=ALL_LOSSES, variants=variants,
                  batch_sizes=(1, 8, 32) if cuda else (1, 2, 4), input_sizes=(256, 512), warmup=3 if cuda else 1,
                  repeats=10 if cuda else 3, goal_rounds=10 if cuda else 3, generator_size=512,
                  generator_batch=8 if cuda else 1, generator_losses=("l1", "lpips-alex", "lpips-vgg", "ifqa",
                                                                      "naive-ifqa"))


# ----------------------------------------------------------------------------------- losses
def _lpips(net: str, device: str) -> tuple[Callable, str]:
    import lpips

    weights = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}[net]
    have_backbone = os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", weights))
    # Without the torchvision backbone file nothing may be downloaded: time a random backbone (same cost).
    with contextlib.redirect_stdout(sys.stderr):
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not have_backbone, verbose=False)
    model = model.to(device).eval().requires_grad_(False)
    note = "" if have_backbone else "random backbone (torchvision weights absent)"
    return (lambda pred, target: model(pred, target).mean()), note


def build_loss(name: str, variant: str, cfg: Config) -> tuple[Callable, str]:
    """``(loss_fn(pred, target) -> scalar, note)`` for ``pred``/``target`` in [-1,1]."""
    channels_last = "channels_last" in variant
    compile_net = variant == "compile"
    if name == "l1":
        return (lambda pred, target: F.l1_loss(pred, target)), ""
    if name in ("lpips-alex", "lpips-vgg"):
        return _lpips(name.split("-")[1], cfg.device)
    if name in ("ifqa", "ifqa++"):
        net = IFQADiscriminator(cfg.ifqa_widths) if name == "ifqa" else IFQAViT(**cfg.vit_dims)
        metric = QualityMetric(net, get_spec(name)).to(cfg.device)
        loss = IFQALoss(metric=metric, channels_last=channels_last, compile=compile_net)
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


def _autocast(variant: str, device: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(variant.split("+")[0])
    return torch.autocast(device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()


# ----------------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the starting level during the block: CUDA allocator, or sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._start = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes()) - self._start
        return False


def _timed(fn: Callable[[], None], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def _inputs(batch: int, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    target = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    return pred.to(device), target.to(device)


def _forward_backward(loss_fn, variant, device, pred, target) -> Callable[[], None]:
    def step():
        x = pred.detach().requires_grad_()
        with _autocast(variant, device):
            loss = loss_fn(x, target)
        loss.backward()

    return step


def _forward(loss_fn, variant, device, pred, target) -> Callable[[], None]:
    def step():
        with torch.no_grad(), _autocast(variant, device):
            loss_fn(pred, target)

    return step


def measure_losses(cfg: Config, log=print) -> list[dict]:
    rows = []
    for name in cfg.losses:
        variants = cfg.variants if name not in ("l1",) else ("fp32",)
        if name.startswith("lpips"):
            variants = tuple(v for v in variants if v != "compile")
        for variant in variants:
            loss_fn, note = build_loss(name, variant, cfg)
            for batch in cfg.batch_sizes:
                for size in cfg.input_sizes:
                    pred, target = _inputs(batch, size, cfg.device)
                    train_step = _forward_backward(loss_fn, variant, cfg.device, pred, target)
                    with PeakMemory(cfg.device) as memory:
                        for _ in range(cfg.warmup):
                            train_step()
                        fwd_bwd = [_timed(train_step, cfg.device) for _ in range(cfg.repeats)]
                    fwd = [_timed(_forward(loss_fn, variant, cfg.device, pred, target), cfg.device)
                           for _ in range(cfg.repeats)]
                    row = {"loss": name, "variant": variant, "batch": batch, "input": size,
                           "forward_ms": _summary(fwd), "forward_backward_ms": _summary(fwd_bwd),
                           "images_per_s": batch / (statistics.median(fwd_bwd) / 1e3),
                           "peak_memory_mib": memory.peak_bytes / 2**20, "note": note}
                    rows.append(row)
                    log(f"  {name:<11} {variant:<18} b={batch:<3} {size}px  fwd+bwd "
                        f"{row['forward_backward_ms']['median']:9.1f} ms")
            del loss_fn
    return rows


def measure_goals(cfg: Config, log=print) -> dict:
    """IFQALoss fp32 / bf16 vs naive fp32 at the goal size, alternating so drift hits all three alike."""
    pred, target = _inputs(cfg.goal_batch, cfg.goal_size, cfg.device)
    contenders = {
        "ifqa fp32": ("ifqa", "fp32"),
        "ifqa bf16": ("ifqa", "bf16"),
        "naive fp32": ("naive-ifqa", "fp32"),
    }
    steps = {}
    for label, (name, variant) in contenders.items():
        loss_fn, _ = build_loss(name, variant, cfg)
        steps[label] = _forward_backward(loss_fn, variant, cfg.device, pred, target)
        for _ in range(cfg.warmup):
            steps[label]()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(cfg.goal_rounds):
        for label, step in steps.items():
            times[label].append(_timed(step, cfg.device))
    medians = {label: statistics.median(t) for label, t in times.items()}
    result = {
        "batch": cfg.goal_batch, "input": cfg.goal_size, "rounds": cfg.goal_rounds,
        "forward_backward_ms": {label: _summary(t) for label, t in times.items()},
        "ratio_fp32_vs_naive": medians["ifqa fp32"] / medians["naive fp32"],
        "ratio_bf16_vs_naive": medians["ifqa bf16"] / medians["naive fp32"],
        "ifqa_bf16_images_per_s": cfg.goal_batch / (medians["ifqa bf16"] / 1e3),
    }
    log(f"  goals: fp32/naive {result['ratio_fp32_vs_naive']:.2f}x, bf16/naive {result['ratio_bf16_vs_naive']:.2f}x")
    return result


def measure_generator(cfg: Config, log=print) -> list[dict]:
    """Training-step time of the restoration generator alone (L1 to the target) and with each loss added."""
    torch.manual_seed(0)
    generator = RestorationGenerator(cfg.generator_size).to(cfg.device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-4)
    degraded, target = _inputs(cfg.generator_batch, cfg.generator_size, cfg.device)

    def make_step(extra):
        def step():
            restored = generator(degraded)
            loss = F.l1_loss(restored, target)
            if extra is not None:
                loss = loss + 0.1 * extra(restored.clamp(-1, 1), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    steps = {"generator only": make_step(None)}
    for name in cfg.generator_losses:
        steps[f"+ {name}"] = make_step(build_loss(name, "fp32", cfg)[0])
    for _ in range(cfg.warmup):  # the loss networks share kernels (and their caches) with the generator's warm-up
        steps["generator only"]()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(cfg.repeats):  # alternate, as for the goals
        for label, step in steps.items():
            times[label].append(_timed(step, cfg.device))
    base = statistics.median(times["generator only"])
    rows = []
    for label, t in times.items():
        rows.append({"step": label, "batch": cfg.generator_batch, "size": cfg.generator_size,
                     "step_ms": _summary(t), "overhead_ratio": statistics.median(t) / base})
        log(f"  {label:<16} {statistics.median(t):9.1f} ms  x{statistics.median(t) / base:.2f}")
    return rows


# ----------------------------------------------------------------------------------- report
def environment(device: str) -> dict:
    import lpips

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "device": device,
        "torch": torch.__version__,
        "lpips": getattr(lpips, "__version__", "?"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "command": " ".join(sys.argv),
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = _cpu_name()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _ms(summary: dict) -> str:
    return f"{summary['median']:.1f} ({summary['min']:.1f}–{summary['max']:.1f})"


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"## Benchmark — {env['device_name']} ({env['device']}), torch {env['torch']}, {env['date']}",
        "",
        f"Command: `{env['command']}`. Times: median (min–max) of the timed runs.",
        "",
        "### Loss cost (forward, and forward + backward to the input)",
        "",
        "| loss | variant | batch | input | forward ms | fwd+bwd ms | images/s | peak mem MiB | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["losses"]:
        lines.append(f"| {r['loss']} | {r['variant']} | {r['batch']} | {r['input']} | {_ms(r['forward_ms'])} | "
                     f"{_ms(r['forward_backward_ms'])} | {r['images_per_s']:.1f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['note']} |")
    goals = report.get("goals")
    if goals:
        lines += ["", f"### IFQALoss vs naive drop-in (batch {goals['batch']}, {goals['input']} input, "
                      f"alternating, {goals['rounds']} rounds)", "", "| contender | fwd+bwd ms |", "|---|---:|"]
        lines += [f"| {label} | {_ms(s)} |" for label, s in goals["forward_backward_ms"].items()]
        lines += ["", f"Ratio fp32 / naive: **{goals['ratio_fp32_vs_naive']:.2f}x**; "
                      f"bf16 / naive: **{goals['ratio_bf16_vs_naive']:.2f}x**; "
                      f"IFQA bf16 throughput {goals['ifqa_bf16_images_per_s']:.1f} images/s."]
    if report.get("generator"):
        first = report["generator"][0]
        lines += ["", f"### Overhead on a GFPGANv1Clean-sized generator step ({first['size']}px, "
                      f"batch {first['batch']}, fp32, loss weight 0.1)", "",
                  "| step | ms | ratio to generator only |", "|---|---:|---:|"]
        lines += [f"| {r['step']} | {_ms(r['step_ms'])} | {r['overhead_ratio']:.2f} |" for r in report["generator"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_ov) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in report["losses"]:
        series.setdefault(f"{r['loss']} {r['variant']} @{r['input']}", []).append((r["batch"], r["images_per_s"]))
    for label, points in sorted(series.items()):
        points.sort()
        ax_tp.plot([b for b, _ in points], [v for _, v in points], marker="o", label=label)
    ax_tp.set(xlabel="batch size", ylabel="images/s (forward + backward)", yscale="log",
              title="Loss throughput")
    ax_tp.legend(fontsize=7)
    gen = report.get("generator") or []
    ax_ov.bar([r["step"] for r in gen], [r["overhead_ratio"] for r in gen], color="tab:orange")
    ax_ov.axhline(1.0, color="gray", lw=0.8)
    ax_ov.set(ylabel="step time / generator-only step", title="Overhead on a generator step")
    ax_ov.tick_params(axis="x", rotation=20)
    fig.suptitle(f"{report['environment']['device_name']} — torch {report['environment']['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: Config, log=print, goals: bool = True, generator: bool = True) -> dict:
    report = {"environment": environment(cfg.device), "config": asdict(cfg)}
    log(f"losses on {cfg.device}:")
    report["losses"] = measure_losses(cfg, log)
    if goals:
        log("goal comparison:")
        report["goals"] = measure_goals(cfg, log)
    if generator:
        log("generator step overhead:")
        report["generator"] = measure_generator(cfg, log)
    return report


def _csv(kind):
    return lambda text: tuple(kind(v) for v in text.split(",") if v)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ifqa-loss bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="sweep every loss, variant, batch and size (slow)")
    parser.add_argument("--losses", type=_csv(str), help=f"comma list from {','.join(ALL_LOSSES)}")
    parser.add_argument("--variants", type=_csv(str), help=f"comma list from {','.join(ALL_VARIANTS)}")
    parser.add_argument("--batch-sizes", type=_csv(int))
    parser.add_argument("--input-sizes", type=_csv(int))
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--generator-size", type=int)
    parser.add_argument("--generator-batch", type=int)
    parser.add_argument("--no-goals", action="store_true")
    parser.add_argument("--no-generator", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG: throughput vs batch size, overhead bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    cfg = full_config(args.device) if args.full else default_config(args.device)
    overrides = {"losses": args.losses, "variants": args.variants, "batch_sizes": args.batch_sizes,
                 "input_sizes": args.input_sizes, "repeats": args.repeats, "warmup": args.warmup,
                 "generator_size": args.generator_size, "generator_batch": args.generator_batch}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    unknown = [name for name in cfg.losses if name not in ALL_LOSSES] + [
        v for v in cfg.variants if v not in ALL_VARIANTS]
    if unknown:
        print(f"error: unknown loss/variant {unknown}; losses: {ALL_LOSSES}; variants: {ALL_VARIANTS}", file=sys.stderr)
        return 2
    report = run(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                 goals=not args.no_goals, generator=not args.no_generator)
    sys.stdout.write(markdown(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
