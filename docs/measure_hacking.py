"""Measure metric gaming and the defences (the numbers in docs/hacking.md).

    python docs/measure_hacking.py --work /tmp/hacking [--steps 400] [--lr-d LR] [--opt-steps 60]

1. Cuts 64 px crops from scikit-image's photographs into three disjoint training sets (A, B, C:
   different photographs) and one held-out set (other photographs).
2. Trains three IFQA metrics with ``ifqa-loss train-ifqa`` (small widths, CPU; seeds 1, 2, 3).
3. Optimises the pixels of blurred held-out patches (Adam, ``--opt-steps``) against one metric
   with no defence, EOT, an ensemble (with C; mean and min) and online refresh, and judges the
   result by the other, independently trained metric and by PSNR / SSIM to the clean patches.
   Both pairs are run: optimise A judged by B, and optimise B judged by A.
4. Writes ``results.json`` in ``--work`` and prints the Markdown tables of docs/hacking.md.

Every interval is a 95% t-interval over the held-out patches (paired: gain = after - before).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

PHOTOS = {  # disjoint photographs per set (greyscale ones are repeated to RGB)
    "A": ["astronaut", "camera", "brick", "coins"],
    "B": ["rocket", "immunohistochemistry", "grass", "moon"],
    "C": ["hubble_deep_field", "retina", "gravel", "page"],
    "held_out": ["coffee", "chelsea", "colorwheel", "horse"],
}
SEEDS = {"A": 1, "B": 2, "C": 3}


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (image * 255 if image.max() <= 1 else image).astype(np.uint8)
    return image


def crops(names: list[str], per_photo: int, seed: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        image = photo(name)
        for _ in range(per_photo):
            y, x = rng.integers(0, image.shape[0] - size), rng.integers(0, image.shape[1] - size)
            out.append(image[y:y + size, x:x + size])
    return out


def write_set(folder: Path, patches: list[np.ndarray]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, patch in enumerate(patches):
        Image.fromarray(patch).save(folder / f"{i:03d}.png")


def train_metric(name: str, work: Path, args) -> Path:
    run = work / f"run{name}"
    if (run / "last.pth").is_file() and not args.retrain:
        return run / "last.pth"
    cmd = [sys.executable, "-m", "ifqa_loss", "train-ifqa", "--data", str(work / f"data{name}"), "--out", str(run),
           "--size", "64", "--d-widths", "8,16,32,64,64", "--d-bottleneck", "1", "--g-width", "8", "--g-depth", "2",
           "--steps", str(args.steps), "--batch-size", "8", "--device", "cpu", "--no-tensorboard", "--quiet",
           "--seed", str(SEEDS[name]), *(["--lr-d", str(args.lr_d)] if args.lr_d else []), *args.train_extra]
    print("$", " ".join(cmd), file=sys.stderr)
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  trained {name} in {time.time() - start:.0f} s", file=sys.stderr)
    return run / "last.pth"


def interval(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% t half-width over patches."""
    from scipy import stats

    v = values.double().numpy()
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


@torch.no_grad()
def scores(metric, x: torch.Tensor) -> torch.Tensor:
    return metric.score(x, input_range=(0, 1)).double()


def condition_losses(opt_metric, other_metric, args):
    """The defences: name -> a loss optimising ``opt_metric`` (``other_metric`` is the ensemble partner C)."""
    from ifqa_loss import IFQALoss

    common = {"input_range": (0, 1), "out_of_range": "clamp"}
    return {
        "none": lambda: IFQALoss(metric=opt_metric, **common),
        "eot": lambda: IFQALoss(metric=opt_metric, augment={"draws": 4, "seed": 0}, **common),
        "eot_strong": lambda: IFQALoss(metric=opt_metric, augment={"draws": 8, "shift": 3.0, "scale": 0.1,
                                                                   "blur_sigma": 1.0, "jpeg_prob": 1.0,
                                                                   "seed": 0}, **common),
        "ensemble_mean": lambda: IFQALoss(metric=opt_metric, ensemble=[other_metric], **common),
        "ensemble_min": lambda: IFQALoss(metric=opt_metric, ensemble=[other_metric], ensemble_combine="min", **common),
        "refresh": lambda: IFQALoss(metric=opt_metric, refresh={"lr": args.refresh_lr, "l2sp": 1.0,
                                                                "max_shift": args.refresh_shift}, **common),
    }


def run_pair(opt_name: str, judge_name: str, metrics: dict, probe: dict, real: torch.Tensor, args) -> dict:
    from ifqa_loss.hacking import distortion, optimise_pixels

    opt, judge = metrics[opt_name], metrics[judge_name]
    lq, gt = probe["lq"], probe["gt"]
    rows = {}
    for condition, make in condition_losses(opt, metrics["C"], args).items():
        if args.conditions and condition not in args.conditions:
            continue
        loss = make()
        start = time.time()
        out = optimise_pixels(lq, loss, steps=args.opt_steps, lr=args.opt_lr, real=real)
        seconds = time.time() - start
        o0, o1 = scores(opt, lq), scores(opt, out)  # the original metric, even when the loss refreshed its copy
        j0, j1 = scores(judge, lq), scores(judge, out)
        d0, d1 = distortion(lq, gt), distortion(out, gt)
        opt_gain, judge_gain = o1 - o0, j1 - j0
        rows[condition] = {
            "optimised_before": interval(o0), "optimised_after": interval(o1), "optimised_gain": interval(opt_gain),
            "judge_before": interval(j0), "judge_after": interval(j1), "judge_gain": interval(judge_gain),
            "ratio": float(judge_gain.mean() / opt_gain.mean()) if abs(float(opt_gain.mean())) >= 1e-3 else None,
            "psnr_gt_before": interval(d0["psnr"]), "psnr_gt_after": interval(d1["psnr"]),
            "psnr_gt_change": interval(d1["psnr"] - d0["psnr"]),
            "ssim_gt_before": interval(d0["ssim"]), "ssim_gt_after": interval(d1["ssim"]),
            "psnr_to_start": interval(distortion(out, lq)["psnr"]),
            "refresh_distance": loss.refresher.distance() if loss.refresher is not None else None,
            "seconds": seconds,
        }
        print(f"  {opt_name}->{judge_name} {condition:14s} opt {rows[condition]['optimised_gain'][0]:+.3f} "
              f"judge {rows[condition]['judge_gain'][0]:+.3f} ratio {rows[condition]['ratio']} "
              f"PSNR {rows[condition]['psnr_gt_after'][0]:.2f} ({seconds:.0f} s)", file=sys.stderr)
    return rows


def run_ablation(paths: dict, metrics: dict, probe: dict, work: Path, args) -> dict:
    """A restorer trained with L1 + w * IFQA(A) under each defence (built-in ablation trainer), judged by B.

    Gains are against the L1-only baseline trained from the same seed on the same batches. A
    HackingMonitor (A optimised, B judging) watches every run on the probe set.
    """
    from ifqa_loss.ablation import config_from_dict
    from ifqa_loss.ablation.builtin import prepare_data, restore, train_setting
    from ifqa_loss.ablation.config import Setting
    from ifqa_loss.hacking import HackingMonitor, distortion

    hq = work / "data_restorer"
    if not hq.is_dir():
        write_set(hq, crops(PHOTOS["held_out"], args.crops, seed=123))
    defences = {"baseline": None, "none": {}, "eot": {"augment": {"draws": 4, "seed": 0}},
                "ensemble_min": {"ensemble": [str(paths["C"])], "ensemble_combine": "min"},
                "refresh": {"refresh": {"lr": args.refresh_lr, "l2sp": 1.0, "max_shift": args.refresh_shift}}}
    rows, restored = {}, {}
    for name, loss_options in defences.items():
        raw = {"seeds": [0], "base": {"l1": {"type": "L1Loss", "weight": 1.0}},
               "sweep": [{"metric": "ifqa", "weights": [args.ablation_weight], "loss": loss_options or {}}],
               "metrics": {"ifqa": {"checkpoint": str(paths["A"])}},
               "data": {"hq": str(hq), "size": 64, "val_count": 1,
                        "degradation": {"blur_sigma": [args.blur, args.blur], "motion_blur_prob": 0.0,
                                        "downsample_prob": 0.0, "noise_prob": 0.0, "jpeg_prob": 0.0,
                                        "color_shift_prob": 0.0, "photometric_prob": 0.0, "gray_prob": 0.0,
                                        "reference_size": None}},
               "model": {"kwargs": {"width": 8, "depth": 2}},
               "train": {"steps": args.ablation_steps, "batch_size": 8, "lr": 1e-3, "device": "cpu"}}
        cfg = config_from_dict(raw)
        setting = Setting(None, 0.0, None, 0) if loss_options is None else Setting("ifqa", args.ablation_weight,
                                                                                   "constant", 0)
        monitor = HackingMonitor(metrics["A"], {"B": metrics["B"]}, probe["lq"], gt=probe["gt"],
                                 every=max(args.ablation_steps // 5, 1))
        start = time.time()
        net, _ = train_setting(cfg, setting, prepare_data(cfg), device=torch.device("cpu"),
                               metrics={"ifqa": metrics["A"]}, lpips=None, progress=False,
                               on_step=lambda step, n, m=monitor: m(step, lambda lq: n(lq)))  # baseline: step 0
        restored[name] = restore(net, probe["lq"], cfg.model, device=torch.device("cpu"))
        rows[name] = {"seconds": time.time() - start, "monitor": monitor.history, "flagged": monitor.flagged}
        print(f"  ablation {name}: {rows[name]['seconds']:.0f} s, flagged {monitor.flagged}", file=sys.stderr)
    base = restored["baseline"]
    a0, b0 = scores(metrics["A"], base), scores(metrics["B"], base)
    for name, out in restored.items():
        a_gain, b_gain = scores(metrics["A"], out) - a0, scores(metrics["B"], out) - b0
        rows[name].update(optimised=interval(scores(metrics["A"], out)), judge=interval(scores(metrics["B"], out)),
                          optimised_gain=interval(a_gain), judge_gain=interval(b_gain),
                          ratio=float(b_gain.mean() / a_gain.mean()) if abs(float(a_gain.mean())) >= 1e-3 else None,
                          psnr_gt=interval(distortion(out, probe["gt"])["psnr"]),
                          ssim_gt=interval(distortion(out, probe["gt"])["ssim"]))
    return rows


def fmt(pair: tuple[float, float], digits: int = 3) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def markdown(results: dict) -> str:
    lines = []
    clean = results["clean_scores"]
    lines.append("| metric | clean held-out patches | blurred (start) |")
    lines.append("|---|---|---|")
    for name in ("A", "B", "C"):
        lines.append(f"| {name} | {fmt(clean[name])} | {fmt(results['blurred_scores'][name])} |")
    for pair, rows in results["pairs"].items():
        lines.append("")
        lines.append(f"**{pair}** (optimised → judge; gains after − before, 95% t-interval over "
                     f"{results['settings']['probe_patches']} patches)")
        lines.append("")
        lines.append("| defence | optimised after | optimised gain | judge after | judged gain | judged / optimised |"
                     " PSNR to clean (start → after) | SSIM to clean (after) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for condition, r in rows.items():
            ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(f"| {condition} | {fmt(r['optimised_after'])} | {fmt(r['optimised_gain'])} | "
                         f"{fmt(r['judge_after'])} | {fmt(r['judge_gain'])} | {ratio} | "
                         f"{r['psnr_gt_before'][0]:.2f} → {fmt(r['psnr_gt_after'], 2)} | {fmt(r['ssim_gt_after'])} |")
    if "ablation" in results:
        lines += ["", f"**Restorer ablation** (L1 + {results['settings']['ablation_weight']} x IFQA(A), "
                  f"{results['settings']['ablation_steps']} steps; gains vs the L1-only baseline)", "",
                  "| defence | A (optimised) | gain | B (judge) | judged gain | judged / optimised | PSNR to clean |"
                  " SSIM | monitor flagged |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in results["ablation"].items():
            ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(f"| {name} | {fmt(r['optimised'])} | {fmt(r['optimised_gain'])} | {fmt(r['judge'])} | "
                         f"{fmt(r['judge_gain'])} | {ratio} | {fmt(r['psnr_gt'], 2)} | {fmt(r['ssim_gt'])} | "
                         f"{r['flagged']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="folder for data, runs and results.json")
    parser.add_argument("--steps", type=int, default=400, help="train-ifqa steps per metric")
    parser.add_argument("--lr-d", type=float, help="train-ifqa discriminator learning rate (default: train-ifqa's)")
    parser.add_argument("--train-extra", nargs=argparse.REMAINDER, default=[], help="more train-ifqa options")
    parser.add_argument("--retrain", action="store_true", help="train again even if runs exist")
    parser.add_argument("--crops", type=int, default=16, help="training crops per photograph")
    parser.add_argument("--probe", type=int, default=4, help="held-out patches per held-out photograph")
    parser.add_argument("--blur", type=float, default=1.5, help="Gaussian sigma of the probe degradation (px)")
    parser.add_argument("--opt-steps", type=int, default=60, help="Adam steps on the pixels")
    parser.add_argument("--opt-lr", type=float, default=0.01, help="Adam learning rate on the pixels")
    parser.add_argument("--refresh-lr", type=float, default=1e-4)
    parser.add_argument("--refresh-shift", type=float, default=0.05)
    parser.add_argument("--ablation-steps", type=int, default=150, help="restorer steps per setting (0: skip)")
    parser.add_argument("--ablation-weight", type=float, default=0.1, help="IFQA weight in the restorer ablation")
    parser.add_argument("--only-ablation", action="store_true", help="skip the pixel optimisation")
    parser.add_argument("--results", default="results.json", help="file name of the results in --work")
    parser.add_argument("--conditions", type=lambda t: t.split(","), help="comma list of defences to run (default all)")
    parser.add_argument("--one-pair", action="store_true", help="only optimise A judged by B")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warnings.simplefilter("ignore")
    import kornia

    from ifqa_loss import load_metric

    work = Path(args.work)
    for name in ("A", "B", "C"):
        if not (work / f"data{name}").is_dir():
            write_set(work / f"data{name}", crops(PHOTOS[name], args.crops, seed=SEEDS[name]))
    held = crops(PHOTOS["held_out"], args.probe, seed=99)
    gt = torch.from_numpy(np.stack(held)).permute(0, 3, 1, 2).float() / 255
    lq = kornia.filters.gaussian_blur2d(gt, (9, 9), (args.blur, args.blur), border_type="reflect")
    lq = (lq * 255).round() / 255  # an 8-bit degraded file, as a restorer would be given
    real = torch.from_numpy(np.stack(crops(PHOTOS["C"], 4, seed=7))).permute(0, 3, 1, 2).float() / 255

    paths = {name: train_metric(name, work, args) for name in ("A", "B", "C")}
    metrics = {name: load_metric(checkpoint=path) for name, path in paths.items()}
    results = {
        "settings": {**{k: v for k, v in vars(args).items() if k != "work"}, "photos": PHOTOS, "seeds": SEEDS,
                     "probe_patches": len(held), "torch": torch.__version__},
        "clean_scores": {n: interval(scores(m, gt)) for n, m in metrics.items()},
        "blurred_scores": {n: interval(scores(m, lq)) for n, m in metrics.items()},
        "training_logs": {n: (work / f"run{n}" / "log.csv").read_text().splitlines()[-1] for n in metrics},
        "pairs": {},
    }
    pairs = (("A", "B"),) if args.one_pair else (("A", "B"), ("B", "A"))
    for opt_name, judge_name in () if args.only_ablation else pairs:
        results["pairs"][f"{opt_name} → {judge_name}"] = run_pair(opt_name, judge_name, metrics,
                                                                  {"lq": lq, "gt": gt}, real, args)
    if args.ablation_steps:
        results["ablation"] = run_ablation(paths, metrics, {"lq": lq, "gt": gt}, work, args)
    (work / args.results).write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
