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
