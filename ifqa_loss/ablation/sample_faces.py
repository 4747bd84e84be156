"""A small folder of face images made from the bundled samples, to try a sweep without a dataset.

``python -m ifqa_loss.ablation.sample_faces FOLDER [--count 12] [--size 64]`` writes ``count``
PNGs: each is ``ifqa_loss/samples/face*.png`` flipped or not, cropped around the face (scale
and offset drawn from a seeded generator) and resized. They are near-duplicates of two faces:
enough to exercise training and evaluation, not to measure anything.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["make_sample_faces"]


def make_sample_faces(folder: str | Path, *, count: int = 12, size: int = 64, seed: int = 0) -> list[Path]:
    """Write ``count`` (size x size) face crops into ``folder`` -> their paths.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     len(make_sample_faces(d, count=3, size=32))
        3
    """
    from PIL import Image

    from ..imageio import read_image

    sources = sorted((Path(__file__).resolve().parent.parent / "samples").glob("face*.png"))
    faces = [read_image(p) for p in sources]
    generator = torch.Generator().manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        face = faces[i % len(faces)]
        side = face.shape[-1]
        scale = 0.8 + 0.2 * torch.rand((), generator=generator).item()  # keep 80-100% of the aligned face
        crop = int(side * scale)
        top, left = (int(torch.randint(0, side - crop + 1, (), generator=generator)) for _ in range(2))
        image = face[:, top : top + crop, left : left + crop]
        if (i // len(faces)) % 2:
            image = image.flip(-1)
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        path = folder / f"face_{i:03d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_sample_faces(args.folder, count=args.count, size=args.size, seed=args.seed)
    print(f"wrote {len(paths)} faces to {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
