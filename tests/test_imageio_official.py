"""read_image_official decodes every kind of file as cv2.imread + BGR->RGB (the official test.py)."""
import numpy as np
import pytest
from PIL import Image

from ifqa_loss.imageio import ImageReadError, read_image_official

from reference import SAMPLES

cv2 = pytest.importorskip("cv2", reason="OpenCV comes with the [test] extra; these compare with cv2.imread")


def _official(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _ours(path) -> np.ndarray:
    return read_image_official(path).permute(1, 2, 0).numpy()


RNG = np.random.default_rng(0)
CASES = {
    "rgb8.png": lambda p: Image.fromarray(RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)).save(p),
    "grey8.png": lambda p: Image.fromarray(RNG.integers(0, 256, (6, 9), dtype=np.uint8)).save(p),
    "grey_alpha.png": lambda p: Image.fromarray(RNG.integers(0, 256, (6, 9, 2), dtype=np.uint8), "LA").save(p),
    "rgba.png": lambda p: Image.fromarray(RNG.integers(0, 256, (6, 9, 4), dtype=np.uint8), "RGBA").save(p),
    "palette.png": lambda p: Image.fromarray(RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)).convert("P").save(p),
    "bilevel.png": lambda p: Image.fromarray(RNG.integers(0, 2, (6, 9), dtype=np.uint8) * 255).convert("1").save(p),
    # 16-bit files written by cv2 itself (BGR order on disk is cv2's convention)
    "grey16.png": lambda p: cv2.imwrite(str(p), RNG.integers(0, 65536, (6, 9), dtype=np.uint16)),
    "rgb16.png": lambda p: cv2.imwrite(str(p), RNG.integers(0, 65536, (6, 9, 3), dtype=np.uint16)),
    "rgba16.png": lambda p: cv2.imwrite(str(p), RNG.integers(0, 65536, (6, 9, 4), dtype=np.uint16)),
    "face420.jpg": lambda p: Image.open(SAMPLES / "face512.png").convert("RGB").save(p, quality=85),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decodes_like_cv2_imread(tmp_path, name):
    path = tmp_path / name
    CASES[name](path)
    np.testing.assert_array_equal(_ours(path), _official(path))


def test_sixteen_bit_keeps_the_high_byte(tmp_path):
    path = tmp_path / "grey16.png"
    cv2.imwrite(str(path), np.array([[0x12FF, 0xFF00]], dtype=np.uint16))
    assert _ours(path)[0, :, 0].tolist() == [0x12, 0xFF]  # v >> 8, not round(v / 257) (= 0x13, 0xFE)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied_like_cv2(tmp_path, orientation, suffix):
    image = Image.fromarray(RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}{suffix}"
    image.save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    ours = _ours(path)
    assert ours.shape[:2] == ((6, 10) if orientation < 5 else (10, 6))
    np.testing.assert_array_equal(ours, _official(path))


def test_float_images_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(path)
    with pytest.raises(ImageReadError, match="32-bit"):
        read_image_official(path)
