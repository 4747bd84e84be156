"""The official uint8 resize equals OpenCV's bit for bit."""
import numpy as np
import pytest
import torch

from ifqa_loss.preprocess import resize_uint8_like_cv2

cv2 = pytest.importorskip("cv2", reason="OpenCV comes with the [test] extra; these compare with the official pipeline")


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


def _official_script_input(path, size, interpolation, normalise_first):
    """The official test.py's steps, written with OpenCV and numpy (albumentations = cv2.resize + this normalise)."""
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)

    def normalise(img):  # albumentations 1.x A.Normalize(mean=0.5, std=0.5, max_pixel_value=255), all float32
        img = img.astype(np.float32)
        img -= np.float32(0.5) * np.float32(255.0)
        img *= np.reciprocal(np.float32(0.5) * np.float32(255.0), dtype=np.float32)
        return img

    if normalise_first:  # IFQA++: Normalize, then Resize(224, INTER_CUBIC)
        out = cv2.resize(normalise(image), (size, size), interpolation=interpolation)
    else:  # IFQA: Resize(256, INTER_LINEAR) on uint8, then Normalize
        out = normalise(cv2.resize(image, (size, size), interpolation=interpolation))
    return torch.from_numpy(out).permute(2, 0, 1)[None]


SIZES = [(128, 128), (200, 200), (300, 300), (512, 512), (1024, 1024), (640, 480), (375, 500)]


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    from PIL import Image

    from reference import SAMPLES

    root = tmp_path_factory.mktemp("sizes")
    face = Image.open(SAMPLES / "face512.png").convert("RGB")
    files = {}
    for w, h in SIZES:
        files[(w, h)] = root / f"face_{w}x{h}.png"
        face.resize((w, h), Image.LANCZOS).save(files[(w, h)])
    return files


@pytest.mark.parametrize("size", SIZES)
def test_official_ifqa_input_equals_the_official_script_bit_for_bit(face_files, size):
    from ifqa_loss.imageio import read_image_official
    from ifqa_loss.preprocess import official_network_input

    ours = official_network_input(read_image_official(face_files[size])[None], 256, "bilinear")
    assert torch.equal(ours, _official_script_input(face_files[size], 256, cv2.INTER_LINEAR, normalise_first=False))


@pytest.mark.parametrize("size", SIZES)
def test_official_ifqa_plus_input_equals_the_official_script(face_files, size):
    from ifqa_loss.imageio import read_image_official
    from ifqa_loss.preprocess import official_network_input

    ours = official_network_input(read_image_official(face_files[size])[None], 224, "bicubic")
    expected = _official_script_input(face_files[size], 224, cv2.INTER_CUBIC, normalise_first=True)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_bicubic_is_computed_in_float64_because_float32_torch_is_1e4_off_cv2():
    """README claim: cv2's float INTER_CUBIC equals a float64 bicubic to ~3e-7; torch's float32 one is ~1e-4 off."""
    from ifqa_loss.preprocess import official_network_input

    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    normalised = (image.astype(np.float32) - np.float32(127.5)) * np.float32(1 / 127.5)
    expected = torch.from_numpy(cv2.resize(normalised, (224, 224), interpolation=cv2.INTER_CUBIC)).permute(2, 0, 1)
    ours = official_network_input(torch.from_numpy(image).permute(2, 0, 1)[None], 224, "bicubic")[0]
    fp32 = torch.nn.functional.interpolate(torch.from_numpy(normalised).permute(2, 0, 1)[None], size=(224, 224),
                                           mode="bicubic", align_corners=False)[0]
    assert (ours - expected).abs().max() <= 1e-6 and (fp32 - expected).abs().max() >= 5e-5


def test_float_path_differs_from_the_official_input_by_under_one_grey_level(face_files):
    """README claim: the differentiable float path's 256x256 input is within 0.75/255 of the official one."""
    from ifqa_loss.imageio import read_image, read_image_official
    from ifqa_loss.preprocess import official_network_input, resize

    worst = {}
    for size, path in face_files.items():
        official = (official_network_input(read_image_official(path)[None], 256, "bilinear") + 1) / 2
        worst[size] = ((resize(read_image(path)[None], 256) - official).abs().max() * 255).item()
    assert max(worst.values()) < 0.75, worst
    assert worst[(512, 512)] <= 0.5 + 1e-3  # an exact 2x downscale only rounds


@torch.no_grad()
def test_official_path_gives_the_official_scripts_score_on_the_512_fixture(ifqa_net, expected):
    from ifqa_loss.imageio import read_image_official
    from ifqa_loss.preprocess import official_network_input

    from reference import SAMPLES

    x = official_network_input(read_image_official(SAMPLES / "face512.png")[None], 256, "bilinear")
    assert abs(ifqa_net(x).mean().item() - expected["ifqa_cnn_face512_score"]) <= 1e-6


@torch.no_grad()
def test_float_path_scores_stay_within_the_readme_bounds_of_the_official_ones(ifqa_net, face_files):
    """README claim (reference weights): |score difference| <= 3e-5 and |map difference| <= 0.03, measured on the
    sizes with the largest score differences (downscale 1024, non-square 375x500; README lists all sizes)."""
    from ifqa_loss.imageio import read_image, read_image_official
    from ifqa_loss.preprocess import official_network_input, resize

    sizes = [(1024, 1024), (375, 500)]
    official = torch.cat([official_network_input(read_image_official(face_files[s])[None], 256) for s in sizes])
    floating = torch.cat([resize(read_image(face_files[s])[None], 256) * 2 - 1 for s in sizes])
    maps = ifqa_net(torch.cat([official, floating]))
    map_diff = (maps[:2] - maps[2:]).abs().amax(dim=(1, 2, 3))
    score_diff = (maps[:2].mean(dim=(1, 2, 3)) - maps[2:].mean(dim=(1, 2, 3))).abs()
    assert (score_diff <= 3e-5).all() and (map_diff <= 0.03).all(), (score_diff, map_diff)
    assert score_diff.max() > 1e-6  # the paths really differ: the official one is what `score` uses
