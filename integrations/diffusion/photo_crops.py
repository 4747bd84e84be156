"""64 px crops of scikit-image's bundled photographs in two disjoint folders, for two small IFQA nets (a guide
and a held-out judge) trained by ``ifqa-loss train-ifqa`` (docs/diffusion.md):

    python integrations/diffusion/photo_crops.py --out crops          # crops/A (160 files), crops/B (120 files)
    ifqa-loss train-ifqa --data crops/A --out runA --seed 0 --size 64 --d-widths 8,16,32,64,64 --d-bottleneck 1 \\
        --g-width 8 --g-depth 2 --steps 400 --batch-size 8 --device cpu --no-tensorboard --quiet   # B: --seed 1
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = {"A": ("astronaut", "coffee", "chelsea", "rocket"), "B": ("motorcycle_left", "hubble_deep_field", "retina")}


def photograph(name: str) -> np.ndarray:
    import skimage.data as data

    image = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    return (np.stack([image] * 3, -1) if image.ndim == 2 else image)[..., :3]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-photo", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    for split, names in SPLITS.items():
        folder = Path(args.out) / split
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for name in names:
            image = photograph(name)
            height, width = image.shape[:2]
            for _ in range(args.per_photo):
                side = int(rng.integers(64, min(height, width) // 2))
                y, x = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
                crop = Image.fromarray(image[y:y + side, x:x + side]).resize((args.size, args.size), Image.BICUBIC)
                crop.save(folder / f"{name}_{count:03d}.png")
                count += 1
        print(f"{folder}: {count} crops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
