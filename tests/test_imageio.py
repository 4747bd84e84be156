import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss.imageio import ImageReadError, list_images, read_image


def test_folders_are_listed_recursively_and_missing_paths_reported(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/x.png", "d/e/y.JPG", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    images, problems = list_images([tmp_path / "d", tmp_path / "missing.png"])
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["d/e/y.JPG", "d/x.png"]
    assert problems == [f"{tmp_path / 'missing.png'}: no such file or folder"]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_become_rgb_in_unit_range(tmp_path, mode):
    path = tmp_path / f"img_{mode}.png"
    Image.fromarray(np.full((5, 7, 3), 255, np.uint8)).convert(mode).save(path)
    x = read_image(path)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.ones_like(x))


def test_unreadable_file_raises_image_read_error(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match="fake.jpg"):
        read_image(path)


def test_map_image_shows_the_map_a_colour_bar_and_the_score(tmp_path):
    from ifqa_loss.imageio import colorize, save_map_images

    quality_map = torch.linspace(0, 1, 64 * 64).reshape(1, 64, 64)
    map_path, _ = save_map_images(quality_map, torch.rand(3, 40, 80), tmp_path, "x", score=0.25)
    with Image.open(map_path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    header = pixels.shape[0] - 64
    assert np.array_equal(pixels[header:, :64], colorize(quality_map))  # the map itself, unscaled
    assert pixels.shape[1] > 64 + 10  # a colour bar beside it
    assert (pixels[:header] < 128).any()  # the score is written above


def test_overlay_keeps_real_pixels_and_the_image_aspect_ratio(tmp_path):
    from ifqa_loss.imageio import save_map_images

    image = torch.rand(3, 40, 80)
    real_everywhere = torch.ones(1, 16, 16)
    _, overlay_path = save_map_images(real_everywhere, image, tmp_path, "x")
    with Image.open(overlay_path) as overlay:
        assert overlay.size == (80, 40)
        expected = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        assert np.abs(np.asarray(overlay).astype(int) - expected).max() <= 1  # nothing tinted where real
