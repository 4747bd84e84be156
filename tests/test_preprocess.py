"""The official uint8 resize equals OpenCV's bit for bit."""
import numpy as np
import pytest
import torch

from ifqa_loss.preprocess import resize_uint8_like_cv2

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("source", [(512, 512), (1024, 1024), (300, 300), (200, 200), (128, 128), (480, 640),
                                    (257, 255), (100, 37)])
def test_uint8_resize_to_256_is_bit_exact_with_opencv(source):
    image = np.random.default_rng(sum(source)).integers(0, 256, (*source, 3), dtype=np.uint8)
    expected = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)
    actual = resize_uint8_like_cv2(torch.from_numpy(image).permute(2, 0, 1), 256).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(actual, expected)


def test_non_square_targets_and_batches():
    image = np.random.default_rng(1).integers(0, 256, (2, 3, 37, 100), dtype=np.uint8)
    actual = resize_uint8_like_cv2(torch.from_numpy(image), (64, 48)).numpy()
    for n in range(2):
        expected = cv2.resize(image[n].transpose(1, 2, 0), (48, 64), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(actual[n].transpose(1, 2, 0), expected)


def test_float_input_is_refused_with_the_alternative():
    with pytest.raises(TypeError, match="use resize"):
        resize_uint8_like_cv2(torch.zeros(3, 8, 8), 4)
