"""Does ``train-ifqa`` learn quality at its defaults? Train on patches of some photographs, test on others.

For each seed: cut 64-px patches from scikit-image's photographs (train / val / test photographs are
distinct: ``ifqa_loss.training.photo_patches``), run ``ifqa-loss train-ifqa`` with default
hyper-parameters (only size, widths and steps set, as the issue's check), then score every *test*
patch against its own degraded copies (made with PIL, independently of the training degradations)
and against its restoration by the run's restorer. Prints a Markdown table (mean over seeds with a
95 % t-interval) and writes ``OUT/summary.json``.

    python docs/measure_ifqa_training.py --out runs/ifqa_demo --seeds 0,1,2     # ~5 min a seed on 2 quiet cores
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

TRAIN_FLAGS = ["--size", "64", "--steps", "400", "--batch-size", "8", "--device", "cpu", "--d-widths", "8,16,32,64,64",
               "--d-bottleneck", "1", "--g-width", "8", "--g-depth", "2", "--no-tensorboard", "--quiet"]


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))


def _tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def degrade_pil(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(3,H,W) in [0,1] -> a visibly degraded copy, by PIL (not the trainer's own degradation code)."""
    im, (h, w) = _pil(x), x.shape[-2:]
    if kind == "blur":
        out = im.filter(ImageFilter.GaussianBlur(2))
    elif kind == "down-up x4":
        out = im.resize((w // 4, h // 4), Image.BICUBIC).resize((w, h), Image.BICUBIC)
    elif kind == "over-smoothing":
        out = im.filter(ImageFilter.MedianFilter(5)).filter(ImageFilter.GaussianBlur(1))
    elif kind == "noise":
        noisy = np.asarray(im, dtype=np.float64) + np.random.default_rng(0).normal(0, 15, (h, w, 3))
        out = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    elif kind == "jpeg q15":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=15)
        out = Image.open(buf)
    else:
        raise ValueError(kind)
    return _tensor(out)


KINDS = ("blur", "down-up x4", "over-smoothing", "noise", "jpeg q15")


@torch.no_grad()
def evaluate(run: Path, test: Path, seed: int) -> dict:
    from ifqa_loss import load_metric
    from ifqa_loss.nets.restorer_unet import RestorationUNet
    from ifqa_loss.training.degradations import DegradationConfig, degrade
    from ifqa_loss.training.ifqa_state import load_training_checkpoint

    metric = load_metric("ifqa", checkpoint=run / "last.pth")
    clean = torch.stack([_tensor(Image.open(p)) for p in sorted(test.glob("*.png"))])
    score = lambda x: metric.score(x, input_range=(0, 1))  # noqa: E731
    s_clean = score(clean)
    result = {"n_test": len(clean), "mean_clean": float(s_clean.mean())}
    for kind in KINDS:
        s = score(torch.stack([degrade_pil(x, kind) for x in clean]))
        result[kind] = {"win": float((s_clean > s).float().mean()), "mean": float(s.mean())}
    state = load_training_checkpoint(run / "last.pth")
    g = RestorationUNet(**state["generator_config"])
    g.load_state_dict(state["G"])
    lq = degrade(clean, DegradationConfig(), generator=torch.Generator().manual_seed(seed + 100))
    s = score(g.eval()(lq).clamp(0, 1))
    result["restored"] = {"win": float((s_clean > s).float().mean()), "mean": float(s.mean())}
    with open(run / "val.csv") as f:
        result["val"] = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return result


def interval(values: list[float]) -> str:
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return f"{a.mean():.3f}"
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return f"{a.mean():.3f} ± {half:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ifqa_demo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--extra", default="", help="extra train-ifqa flags, e.g. '--ema-decay 0' for an ablation")
    args = p.parse_args()
    from ifqa_loss.training.photo_patches import make_photo_splits

    out, seeds, results = Path(args.out), [int(s) for s in args.seeds.split(",")], {}
    for seed in seeds:
        folders = make_photo_splits(out / f"data_{seed}", seed=seed)
        run = out / f"run_{seed}"
        cmd = [sys.executable, "-m", "ifqa_loss", "train-ifqa", "--data", str(folders["train"]), "--out", str(run),
               "--seed", str(seed), "--val", str(folders["val"]), "--val-every", "50", *TRAIN_FLAGS,
               *args.extra.split()]
        if not (run / "result.json").is_file():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        results[seed] = evaluate(run, folders["test"], seed)
        print(f"seed {seed}: " + json.dumps({k: v for k, v in results[seed].items() if k != "val"}), flush=True)
    (out / "summary.json").write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2))
    print(f"\n| unseen photographs: clean vs | clean wins (mean ± 95 % CI over {len(seeds)} seeds) | mean score |")
    print("|---|---:|---:|")
    print(f"| (clean itself) | | {interval([r['mean_clean'] for r in results.values()])} |")
    for kind in (*KINDS, "restored"):
        wins = interval([r[kind]["win"] for r in results.values()])
        print(f"| {kind} | {wins} | {interval([r[kind]['mean'] for r in results.values()])} |")
    print("\nvalidation (held-out photographs), seed", seeds[0])
    print("| step | criterion | clean > degraded | clean > restored | blur-ladder SRCC |")
    print("|---:|---:|---:|---:|---:|")
    for row in results[seeds[0]]["val"]:
        print(f"| {row['step']:.0f} | {row['criterion']:.3f} | {row['acc_degraded']:.2f} | {row['acc_restored']:.2f} | "
              f"{row['ladder_srcc']:.2f} |")


if __name__ == "__main__":
    main()
