"""Image files in and quality maps out, for the command line."""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .safeio import UnreadableInput, refuse_special, special_kind

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Image formats found in folders but not scored: reported as skipped, never silently left out.
UNSCORED_SUFFIXES = {
    ".gif": "GIF (256-colour palette, often animated) is not scored: convert it to PNG",
    ".heic": "HEIC is not supported: convert it to PNG or JPEG",
    ".heif": "HEIF is not supported: convert it to PNG or JPEG",
    ".avif": "AVIF is not supported: convert it to PNG or JPEG",
    ".jxl": "JPEG XL is not supported: convert it to PNG or JPEG",
    ".svg": "SVG is a vector drawing, not a photo: export it to PNG",
    ".ico": "ICO icons are not scored: convert it to PNG",
}
# Above this many pixels an image is skipped (a decompression bomb, or a photo far larger than any metric
# needs): 100 megapixels, between PIL's warning (89 MP) and its refusal (179 MP).
DEFAULT_MAX_PIXELS = 100_000_000
# Below this side an image holds no face to judge (a 1x1 tracking pixel, an icon, a 1-pixel-wide strip): refused.
MIN_SIDE = 8


class ImageReadError(ValueError):
    """A file could not be decoded as an RGB image."""


def list_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (recursively, sorted) into image files.

    Returns ``(images, problems)``: named paths that do not exist, folders that cannot be
    read, broken links and image formats that are not scored (GIF, HEIC, ...) are reported
    in ``problems`` rather than raising or being left out silently, so one typo or one bad
    folder does not stop a batch.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.gif", "notes.txt"):
        ...     _ = (root / name).write_bytes(b"")
        >>> images, problems = list_images([root, root / "missing.png"])
        >>> [p.name for p in images], len(problems)
        (['a.png'], 2)
    """
    images: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
            special = special_kind(path.stat().st_mode) if path.exists() else None
        except OSError as exc:  # a link loop on Python >= 3.13, a name too long, ...
            problems.append(f"{path}: cannot be opened ({exc.strerror})")
            continue
        if special:
            problems.append(f"{path}: {special}, not an image file (reading it could wait forever)")
        elif is_dir:
            images.extend(_walk_images(path, problems))
        elif is_file:
            images.append(path)  # named explicitly: try it whatever its suffix
        elif path.is_symlink():
            problems.append(f"{path}: a broken symbolic link or a link loop")
        else:
            problems.append(f"{path}: no such file or folder")
    return images, problems


def _walk_images(root: Path, problems: list[str]) -> list[Path]:
    def unreadable(exc: OSError) -> None:
        problems.append(f"{exc.filename}: folder not readable ({exc.strerror}); its images were not scored: "
                        "fix its permissions")

    found: list[Path] = []
    # os.walk reports folders it cannot list (Path.rglob skips them silently) and never follows folder links.
    for folder, _, files in os.walk(root, onerror=unreadable):
        for name in files:
            path = Path(folder) / name
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                if path.is_file():
                    found.append(path)
                elif path.exists() and special_kind(path.stat().st_mode):
                    problems.append(f"{path}: {special_kind(path.stat().st_mode)}, not an image file (reading it "
                                    "could wait forever)")
                elif not path.exists():
                    problems.append(f"{path}: a broken symbolic link or a link loop")
            elif suffix in UNSCORED_SUFFIXES:
                problems.append(f"{path}: {UNSCORED_SUFFIXES[suffix]}")
    return sorted(found)


def _refuse_special(path: str | os.PathLike) -> None:
    try:
        refuse_special(path, "image")
    except UnreadableInput as exc:
        raise ImageReadError(str(exc)) from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels; raises :class:`ImageReadError`."""
    _refuse_special(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own limit
            with Image.open(path) as img:
                return img.size
    except Image.DecompressionBombError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc


def check_pixel_count(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Refuse, before decoding, an image with more than ``max_pixels`` pixels (a decompression bomb: a few
    bytes declaring a huge image). Returns (width, height).

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("RGB", (40, 30)).save(path)
        >>> check_pixel_count(path, max_pixels=1000)
        Traceback (most recent call last):
        ...
        ifqa_loss.imageio.ImageReadError: ...x.png: 1200 pixels (40x30), more than the limit of 1000 ...
    """
    fix = ("(a decompression bomb, or a photo far larger than a face crop): downscale it, or raise --max-pixels "
           "if you trust the file")
    try:
        width, height = image_size(path)
    except Image.DecompressionBombError as exc:  # PIL's own hard limit (twice Image.MAX_IMAGE_PIXELS)
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
        pixels, limit = (found.group(1), min(int(found.group(2)), max_pixels)) if found else ("too many", max_pixels)
        raise ImageReadError(f"{path}: {pixels} pixels, more than the limit of {limit} {fix}") from None
    if width * height > max_pixels:
        raise ImageReadError(f"{path}: {width * height} pixels ({width}x{height}), more than the limit of "
                             f"{max_pixels} {fix}")
    if min(width, height) < MIN_SIDE:
        raise ImageReadError(f"{path}: {width}x{height} pixels, below the minimum side of {MIN_SIDE}: no face to "
                             "judge (a tracking pixel, an icon or a strip?); pass the face crop")
    return width, height


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode a file to (3,H,W) float32 RGB in [0,1]. Greyscale, palette and alpha images are converted."""
    _refuse_special(path)
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
    _refuse_special(path)
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


def _colour_bar(height: int, width: int = 14, colormap: str = "viridis") -> np.ndarray:
    """(height, width, 3) uint8 vertical bar: 1 (real) at the top, 0 (fake) at the bottom."""
    values = torch.linspace(1.0, 0.0, height)[:, None].expand(height, width)
    return colorize(values, colormap)


def _labelled_map(colour: np.ndarray, score: float | None, label: str | None = None) -> Image.Image:
    """The colour map with a colour bar (labelled 1 / 0) on its right, the score above it and ``label`` (in red)
    in a line of its own above that."""
    from PIL import ImageDraw

    height, width = colour.shape[:2]
    header, bar_gap, bar_width, label_width = 18 + (14 if label else 0), 6, 14, 18
    canvas = Image.new("RGB", (width + bar_gap + bar_width + label_width, height + header), "white")
    canvas.paste(Image.fromarray(colour), (0, header))
    canvas.paste(Image.fromarray(_colour_bar(height, bar_width)), (width + bar_gap, header))
    draw = ImageDraw.Draw(canvas)
    x_label = width + bar_gap + bar_width + 3
    draw.text((x_label, header), "1", fill="black")
    draw.text((x_label, header + height - 11), "0", fill="black")
    title = "quality map (1 = real)" if score is None else f"score {score:.4f}  (map: 1 = real)"
    draw.text((2, header - 15), title, fill="black")
    if label:
        draw.text((2, 2), label, fill=(200, 0, 0))
    return canvas


def _banner(image: Image.Image, label: str) -> Image.Image:
    """``image`` with ``label`` in white on a black strip across its top (drawn on the pixels themselves)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 13), fill="black")
    draw.text((2, 1), label, fill="white")
    return image


def save_map_images(
    quality_map: torch.Tensor,
    image: torch.Tensor,
    out_dir: str | os.PathLike,
    stem: str,
    *,
    score: float | None = None,
    max_alpha: float = 0.7,
    label: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>_map.png`` (colour-mapped map, colour bar, score) and ``<stem>_overlay.png``.

    ``label`` (e.g. ``"RANDOM WEIGHTS: not a quality judgement"``) is drawn on both images themselves, so it
    travels with them wherever they are copied.

    ``quality_map``: (1,h,w) in [0,1]; ``image``: (3,H,W) in [0,1]. The overlay is at the
    image's own size and aspect ratio (the map is stretched back the way the image was
    stretched to the metric's square input); only pixels judged fake are tinted, with
    opacity ``max_alpha * (1 - map)``, so real-looking areas keep the photo as it is.

    Example:
        >>> import tempfile, torch
        >>> out = tempfile.mkdtemp()
        >>> paths = save_map_images(torch.rand(1, 16, 16), torch.rand(3, 20, 30), out, "face", score=0.5)
        >>> [p.name for p in paths]
        ['face_map.png', 'face_overlay.png']
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colour = colorize(quality_map)
    map_path = out_dir / f"{stem}_map.png"
    _labelled_map(colour, score, label).save(map_path)
    face = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    size = (face.shape[1], face.shape[0])
    tint = np.asarray(Image.fromarray(colour).resize(size, Image.BILINEAR), dtype=np.float32)
    values = quality_map.detach().float().cpu().reshape(1, 1, *quality_map.shape[-2:]).clamp(0, 1)
    realness = torch.nn.functional.interpolate(values, size=face.shape[:2], mode="bilinear", align_corners=False)
    alpha = max_alpha * (1.0 - realness[0, 0].numpy())[..., None]
    overlay = (face.astype(np.float32) * (1 - alpha) + tint * alpha + 0.5).astype(np.uint8)
    overlay_path = out_dir / f"{stem}_overlay.png"
    overlay_image = Image.fromarray(overlay)
    (_banner(overlay_image, label) if label else overlay_image).save(overlay_path)
    return map_path, overlay_path
