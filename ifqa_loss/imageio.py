"""Image files in and quality maps out, for the command line."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file could not be decoded as an RGB image."""


def list_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (recursively, sorted) into image files.

    Returns ``(images, problems)``: explicitly named paths that do not exist are
    reported in ``problems`` rather than raising, so one typo does not stop a batch.
    """
    images: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            images.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            images.append(path)  # named explicitly: try it whatever its suffix
        else:
            problems.append(f"{path}: no such file or folder")
    return images, problems


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode a file to (3,H,W) float32 RGB in [0,1]. Greyscale, palette and alpha images are converted."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "F"):
                raise ImageReadError(f"{path}: {img.mode} (high bit-depth) images are not supported; save as 8-bit RGB")
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def read_image_official(path: str | os.PathLike) -> torch.Tensor:
    """Decode a file as the official IFQA ``test.py`` does (``cv2.imread`` + BGR->RGB): (3,H,W) uint8 RGB.

    ``cv2.imread(path)`` (IMREAD_COLOR) applies the EXIF orientation (JPEG and PNG), keeps the high
    byte of 16-bit samples (``v >> 8``, libpng's strip_16, not ``round(v/257)``), repeats grey into
    three channels, drops alpha without compositing, and expands palettes. This does the same with
    Pillow (``tests/test_imageio.py`` compares it with cv2 for each case). 32-bit integer and float
    images are refused.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/grey16.png"
        >>> Image.fromarray(np.full((2, 3), 0x1234, dtype=np.uint16)).save(path)
        >>> read_image_official(path)[:, 0, 0].tolist()
        [18, 18, 18]
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in _SIXTEEN_BIT_MODES:
                grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
                array = np.repeat(grey[..., None], 3, axis=-1)
            elif img.mode in ("I", "F"):
                raise ImageReadError(f"{path}: {img.mode} (32-bit) images are not supported; save as 8- or 16-bit")
            else:
                array = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # np.array: a writable copy


def colorize(quality_map: torch.Tensor, colormap: str = "viridis") -> np.ndarray:
    """(1,H,W) or (H,W) map in [0,1] -> (H,W,3) uint8 colour image (viridis, as the official test.py)."""
    from matplotlib import colormaps  # optional dependency: only the --maps output needs it

    values = quality_map.detach().float().cpu().squeeze().clamp(0, 1).numpy()
    return (colormaps[colormap](values)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def save_map_images(
    quality_map: torch.Tensor, image: torch.Tensor, out_dir: str | os.PathLike, stem: str, alpha: float = 0.5
) -> tuple[Path, Path]:
    """Write ``<stem>_map.png`` (colour-mapped map) and ``<stem>_overlay.png`` (map blended over the face).

    ``quality_map``: (1,h,w) in [0,1]; ``image``: (3,H,W) in [0,1]. The overlay is at the image's size.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colour = colorize(quality_map)
    map_path = out_dir / f"{stem}_map.png"
    Image.fromarray(colour).save(map_path)
    face = Image.fromarray((image.permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8))
    overlay = Image.blend(face, Image.fromarray(colour).resize(face.size, Image.BILINEAR), alpha)
    overlay_path = out_dir / f"{stem}_overlay.png"
    overlay.save(overlay_path)
    return map_path, overlay_path
