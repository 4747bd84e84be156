"""What an IFQA network does outside its input domain (README: Limitations). Prints a Markdown table.

    PYTHONPATH=$PWD python docs/measure_input_domain.py --checkpoint runs/ifqa/last.pth
    PYTHONPATH=$PWD python docs/measure_input_domain.py --train runs/domain --steps 400   # trains a small one first

The published weights are not on this machine, so the network must be one trained by ``ifqa-loss train-ifqa``
(``--train`` runs it on faces made from the bundled samples: a small, CPU-sized run, labelled as such). Each
aligned sample face is scored as it is and after one change that takes it out of the domain the metric was trained
on — FFHQ-style aligned face crops — and the score of every variant is compared with the aligned one:

aligned; degraded (blur + noise, the kind of change IFQA is meant to see); rotated 30° and 90°; shifted (the face
moved by a quarter of the frame, the rest reflected); small (the face at half size in a reflected frame, as a loose
detector crop); two faces (two half-size faces side by side); mirrored (left-right flip: a face the metric should
treat like the aligned one); non-face (a smooth colour texture, and flat grey). Profile (side) faces cannot be made
from the frontal samples and are not measured.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ifqa_loss import load_metric  # noqa: E402
from ifqa_loss.ablation.sample_faces import make_sample_faces  # noqa: E402
from ifqa_loss.imageio import read_image  # noqa: E402


def _reflect_place(face: torch.Tensor, scale: float, dx: float, dy: float) -> torch.Tensor:
    """(3,S,S) face scaled by ``scale`` and moved by (dx, dy) frame fractions; borders reflected."""
    theta = torch.tensor([[1 / scale, 0, -dx * 2 / scale], [0, 1 / scale, -dy * 2 / scale]], dtype=face.dtype)
    grid = F.affine_grid(theta[None], [1, *face.shape], align_corners=False)
    return F.grid_sample(face[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def _rotate(face: torch.Tensor, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]], dtype=face.dtype)
    grid = F.affine_grid(theta[None], [1, *face.shape], align_corners=False)
    return F.grid_sample(face[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def variants(face: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The aligned (3,S,S) face in [0,1] and its out-of-domain versions, same size."""
    side = face.shape[-1]
    small = F.interpolate(face[None], scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)[0]
    pair = torch.cat([small, small.flip(-1)], dim=-1)
    pair = F.pad(pair[None], (0, 0, side // 4, side - small.shape[-2] - side // 4), mode="reflect")[0]
    blurred = F.avg_pool2d(face[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    noise = torch.randn(face.shape, generator=generator) * 0.08
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    texture = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)[0]
    return {
        "aligned": face,
        "degraded (blur + noise)": (blurred + noise).clamp(0, 1),
        "mirrored": face.flip(-1),
        "rotated 30°": _rotate(face, 30),
        "rotated 90°": face.rot90(1, dims=(-2, -1)),
        "shifted by 1/4 frame": _reflect_place(face, 1.0, 0.25, 0.15),
        "small (half size)": _reflect_place(face, 0.5, 0.0, 0.0),
        "two faces": pair,
        "non-face: smooth texture": texture.clamp(0, 1),
        "non-face: flat grey": torch.full_like(face, 0.5),
    }


def train(out: Path, steps: int, size: int) -> Path:
    """A small ``ifqa-loss train-ifqa`` run on faces made from the bundled samples -> its last.pth."""
    faces = out / "faces"
    make_sample_faces(faces, count=24, size=size)
    command = [sys.executable, "-m", "ifqa_loss", "train-ifqa", "--data", str(faces), "--out", str(out / "run"),
               "--size", str(size), "--steps", str(steps), "--batch-size", "4", "--d-widths", "8,16,32,64,64",
               "--d-bottleneck", "1", "--g-width", "8", "--g-depth", "2", "--g-blocks", "1", "--no-tensorboard",
               "--quiet", "--checkpoint-every", str(steps)]
    print("training:", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return out / "run" / "last.pth"


@torch.no_grad()
def measure(checkpoint: Path, seed: int = 0) -> tuple[list[str], dict, int]:
    metric = load_metric("ifqa", checkpoint=checkpoint)
    size = metric.input_size
    with tempfile.TemporaryDirectory() as tmp:
        faces = [read_image(p) for p in make_sample_faces(tmp, count=8, size=size, seed=seed + 1)]
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, list[float]] = {}
    for face in faces:
        for name, image in variants(face, generator).items():
            scores.setdefault(name, []).append(metric.score(image[None]).item())
    base = scores["aligned"]
    lines = ["| input | mean score (min–max) over 8 faces | mean change vs aligned | faces scored below aligned |",
             "|---|---:|---:|---:|"]
    for name, values in scores.items():
        change = statistics.fmean(v - b for v, b in zip(values, base, strict=True))
        below = sum(v < b for v, b in zip(values, base, strict=True))
        lines.append(f"| {name} | {statistics.fmean(values):.3f} ({min(values):.3f}–{max(values):.3f}) | "
                     f"{change:+.3f} | {below}/{len(values)} |")
    return lines, scores, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a train-ifqa last.pth")
    source.add_argument("--train", type=Path, metavar="OUT", help="train a small network into OUT first")
    parser.add_argument("--steps", type=int, default=400, help="training steps with --train")
    parser.add_argument("--size", type=int, default=64, help="training and scoring side with --train")
    parser.add_argument("--json", type=Path, help="also write the raw scores here")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or train(args.train, args.steps, args.size)
    step = torch.load(checkpoint, map_location="cpu", weights_only=True).get("step", "?")
    lines, scores, size = measure(checkpoint)
    print(f"Network: trained by `ifqa-loss train-ifqa` ({checkpoint}, step {step}, {size} px) — NOT the published "
          "IFQA weights; the scores say how this network behaves, not the published metric.\n")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(checkpoint), "step": step, "size": size, "scores": scores},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
