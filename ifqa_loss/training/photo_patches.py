"""Distinct-content training / validation / test folders cut from scikit-image's photographs.

No face dataset ships with any package installed here, and scikit-image ships about one face, so the
``train-ifqa`` demonstration (docs/ifqa_training.md) trains and tests on patches of *different*
photographs: test photographs are never seen in training. On such patches FPRS and the facial-part
template mean nothing (there are no eyes, nose or mouth), so the demonstration shows what the
adversarial recipe learns about detail and blur, not face-specific quality.

Run ``python -m ifqa_loss.training.photo_patches OUT`` (needs ``scikit-image``, in the ``[test]`` extra).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# Which photograph goes where: no photograph is on two sides.
SPLITS = {
    "train": ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "grass.png"),
    "val": ("brick.png", "coins.png"),
    "test": ("motorcycle_left.png", "ihc.png", "hubble_deep_field.jpg", "gravel.png", "retina.jpg", "moon.png"),
}


def photo_folder() -> Path:
    """scikit-image's data folder (the photographs ship inside the package; nothing is downloaded)."""
    try:
        import skimage
    except ImportError as exc:
        raise ImportError('photo patches need scikit-image: pip install "ifqa-loss[test]"') from exc
    return Path(skimage.__file__).parent / "data"


def cut_patches(photo: Path, count: int, size: int, rng: np.random.Generator,
                scales: tuple[float, ...] = (1.0, 0.5)) -> list[np.ndarray]:
    """``count`` random (size,size,3) uint8 crops, split evenly over ``scales`` of the photograph (a
    half-size copy gives coarser detail per pixel)."""
    from PIL import Image

    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    crops = []
    for k, scale in enumerate(scales):
        w, h = rgb.size
        scaled = rgb if scale == 1 else rgb.resize((round(w * scale), round(h * scale)), Image.LANCZOS)
        array = np.asarray(scaled)
        for _ in range(count // len(scales) + (1 if k < count % len(scales) else 0)):
            y = int(rng.integers(0, array.shape[0] - size + 1))
            x = int(rng.integers(0, array.shape[1] - size + 1))
            crops.append(array[y:y + size, x:x + size].copy())
    return crops


def make_photo_splits(out: str | Path, *, size: int = 64, per_photo: int = 8, seed: int = 0) -> dict[str, Path]:
    """Write ``out/{train,val,test}/<photo>_<k>.png`` and return the three folders.

    Example:
        >>> import tempfile
        >>> folders = make_photo_splits(tempfile.mkdtemp(), size=32, per_photo=2)
        >>> sorted(folders), len(list(folders["train"].iterdir())), len(list(folders["test"].iterdir()))
        (['test', 'train', 'val'], 12, 12)
    """
    from PIL import Image

    root, rng = Path(out), np.random.default_rng(seed)
    folders = {}
    for split, photos in SPLITS.items():
        folder = folders[split] = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for photo in photos:
            for k, crop in enumerate(cut_patches(photo_folder() / photo, per_photo, size, rng)):
                Image.fromarray(crop).save(folder / f"{Path(photo).stem}_{k}.png")
    return folders


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write train/, val/, test/ into")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--per-photo", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for split, folder in make_photo_splits(args.out, size=args.size, per_photo=args.per_photo, seed=args.seed).items():
        print(f"{split}: {len(list(folder.iterdir()))} patches in {folder}")


if __name__ == "__main__":
    main()
