"""High-quality aligned faces for adversarial training, with optional per-image region annotations.

A folder of face images (searched recursively) resized to ``size`` (antialiased
bilinear: faces are expected FFHQ-aligned, as GFP-GAN/CodeFormer/GPEN inputs are).
Optional annotations locate the facial parts per image:

* ``landmarks``: JSON ``{relative/path.png: [[x, y], ...]}`` with 5 (eyes, nose, mouth corners)
  or 68 (iBUG) points, or ``{path: {"loc_left_eye": [x1,y1,x2,y2], "loc_right_eye": ..., "loc_mouth": ...}}``
  (GFP-GAN component boxes), in the pixels of the original file;
* ``parsing``: a folder of CelebAMask-HQ label maps (PNG, same relative path and stem).

Batches come from :class:`StepBatchSampler`, whose order is a pure function of
``(seed, step)``: a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..imageio import list_images, read_image

MASK_SOURCES = ("template", "landmarks", "boxes", "parsing")
BOX_KEYS = ("loc_left_eye", "loc_right_eye", "loc_mouth")


class FaceFolder(Dataset):
    """Aligned face images as (3,size,size) float in [0,1], plus region annotations when given.

    Items are dicts: ``image`` always; ``landmarks`` (K,2) / ``boxes`` (3,4) in output pixels,
    or ``parsing`` (size,size) int64 labels, depending on ``mask_source``. ``files`` restricts the
    folder to these image paths (under ``root``), e.g. the training side of a train/validation split.

    Example:
        >>> from pathlib import Path
        >>> import ifqa_loss
        >>> data = FaceFolder(Path(ifqa_loss.__file__).parent / "samples", size=32)
        >>> len(data), data[0]["image"].shape
        (2, torch.Size([3, 32, 32]))
    """

    def __init__(
        self,
        root: str | Path,
        *,
        size: int = 256,
        mask_source: str = "template",
        landmarks: str | Path | None = None,
        parsing: str | Path | None = None,
        files: list[Path] | None = None,
    ):
        self.root, self.size, self.mask_source = Path(root), size, mask_source
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"face folder {str(self.root)!r} does not exist; pass a folder of aligned HQ faces")
        self.paths = list(files) if files is not None else list_images([self.root])[0]
        if not self.paths:
            raise ValueError(f"no images under {self.root}; expected aligned face images (.png/.jpg)")
        self.names = [p.relative_to(self.root).as_posix() for p in self.paths]
        self.annotations: dict | None = None
        if mask_source in ("landmarks", "boxes"):
            if landmarks is None:
                raise ValueError(f"mask_source={mask_source!r} needs a landmarks JSON file (--landmarks)")
            from ..annotations import read_annotations

            self.annotations = read_annotations(landmarks, mask_source)  # each entry checked, named on error
            missing = [n for n in self.names if n not in self.annotations]
            if missing:
                raise ValueError(f"{landmarks} has no entry for {len(missing)} images, e.g. {missing[:3]}")
        self.parsing_root = Path(parsing) if parsing is not None else None
        if mask_source == "parsing":
            if self.parsing_root is None or not self.parsing_root.is_dir():
                raise ValueError("mask_source='parsing' needs a folder of label maps (--parsing DIR)")
            missing = [n for n in self.names if not self._parsing_path(n).is_file()]
            if missing:
                raise ValueError(f"no label map under {self.parsing_root} for {len(missing)} images: {missing[:3]}")

    def _parsing_path(self, name: str) -> Path:
        return (self.parsing_root / name).with_suffix(".png")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = read_image(self.paths[index])
        h, w = image.shape[-2:]
        item = {"image": self.resize(image)}
        name = self.names[index]
        scale = torch.tensor([self.size / w, self.size / h])
        if self.mask_source == "landmarks":
            points = torch.tensor(self.annotations[name], dtype=torch.float32)
            if points.ndim != 2 or points.shape not in ((5, 2), (68, 2)):
                raise ValueError(f"landmarks for {name} must be 5 or 68 [x, y] points, got shape {tuple(points.shape)}")
            item["landmarks"] = (points + 0.5) * scale - 0.5
        elif self.mask_source == "boxes":
            entry = self.annotations[name]
            if not isinstance(entry, dict) or any(k not in entry for k in BOX_KEYS):
                raise ValueError(f"boxes for {name} must be a dict with {BOX_KEYS}")
            boxes = torch.tensor([entry[k] for k in BOX_KEYS], dtype=torch.float32).view(3, 2, 2)
            item["boxes"] = ((boxes + 0.5) * scale - 0.5).view(3, 4)
        elif self.mask_source == "parsing":
            labels = np.asarray(Image.open(self._parsing_path(name)).convert("L"), dtype=np.int64)
            labels = torch.from_numpy(labels.copy())[None, None].float()
            item["parsing"] = F.interpolate(labels, size=(self.size, self.size), mode="nearest")[0, 0].long()
        return item

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """(3,H,W) -> (3,size,size), antialiased bilinear."""
        if image.shape[-2:] == (self.size, self.size):
            return image
        return F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)[0].clamp(0, 1)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, step, rank), stable across runs and platforms.

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = ((value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


class StepBatchSampler(Sampler[list[int]]):
    """Index batches for steps ``start_step .. total_steps-1``; each epoch is a seeded permutation.

    The global batch of a step is ``batch_size * world_size`` consecutive positions of the
    epoch stream; rank ``r`` takes its ``r``-th slice. Batches span epoch ends.

    Example:
        >>> s = StepBatchSampler(5, batch_size=2, seed=0, total_steps=3)
        >>> resumed = StepBatchSampler(5, batch_size=2, seed=0, start_step=2, total_steps=3)
        >>> [len(b) for b in s], list(resumed) == list(s)[2:]
        ([2, 2, 2], True)
    """

    def __init__(self, num_items: int, *, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.total_steps, self.rank, self.world_size = start_step, total_steps, rank, world_size
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A))
            self._perms = {epoch: torch.randperm(self.num_items, generator=g).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = (step * self.world_size + self.rank) * self.batch_size
        return [self._perm(p // self.num_items)[p % self.num_items] for p in range(start, start + self.batch_size)]

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)
