import pytest
import torch

from ifqa_loss import regions
from ifqa_loss.regions import REGION_NAMES


def _centroid(mask):
    """(1,H,W) mask -> (x, y) centre of mass in pixels."""
    m = mask[0]
    ys, xs = torch.meshgrid(torch.arange(m.shape[0]).float(), torch.arange(m.shape[1]).float(), indexing="ij")
    return ((m * xs).sum() / m.sum()).item(), ((m * ys).sum() / m.sum()).item()


@pytest.mark.parametrize("size", [128, 512])
def test_template_masks_land_on_the_template_eyes_and_mouth(size):
    masks = regions.template_regions(size)
    scale = size / 512
    for name, (x, y) in [("left_eye", (192.98, 239.95)), ("right_eye", (318.90, 240.19)), ("mouth", (257.2, 371.3))]:
        cx, cy = _centroid(masks[name][0])
        assert abs(cx - x * scale) < 3 * scale + 1 and abs(cy - y * scale) < 3 * scale + 1, name


def test_masks_are_a_soft_partition_of_the_image():
    masks = regions.template_regions(256, batch=2)
    assert set(masks) == set(REGION_NAMES)
    total = sum(masks.values())
    assert total.shape == (2, 1, 256, 256)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)
    assert all(((m >= 0) & (m <= 1)).all() for m in masks.values())


def test_masks_are_resolution_independent():
    small = regions.template_regions(128)["mouth"]
    large = torch.nn.functional.interpolate(regions.template_regions(512)["mouth"], size=128, mode="area")
    assert (small - large).abs().mean() < 0.02


def test_five_point_masks_follow_shifted_landmarks():
    shifted = regions.FFHQ_TEMPLATE_512 + torch.tensor([40.0, -30.0])
    masks = regions.regions_from_landmarks(torch.stack([regions.FFHQ_TEMPLATE_512, shifted]), size=512)
    (x0, y0), (x1, y1) = _centroid(masks["left_eye"][0]), _centroid(masks["left_eye"][1])
    assert abs((x1 - x0) - 40) < 1.5 and abs((y1 - y0) + 30) < 1.5


def _ellipse_points(center, axes, n):
    t = torch.linspace(0, 2 * torch.pi, n + 1)[:-1]
    return torch.stack([center[0] + axes[0] * t.cos(), center[1] + axes[1] * t.sin()], -1)


def test_68_point_masks_cover_each_landmark_group():
    groups = {  # (first, count, centre, semi-axes) at 256
        "jawbrows": (0, 27, (128, 140), (90, 110)), "left_eye": (36, 6, (90, 110), (14, 6)),
        "right_eye": (42, 6, (166, 110), (14, 6)), "nose": (27, 9, (128, 135), (10, 22)),
        "mouth": (48, 20, (128, 185), (30, 10)),
    }
    points = torch.zeros(68, 2)
    for first, count, centre, axes in groups.values():
        points[first:first + count] = _ellipse_points(centre, axes, count)
    points[17:22] = _ellipse_points((90, 88), (18, 3), 5)
    points[22:27] = _ellipse_points((166, 88), (18, 3), 5)
    masks = regions.regions_from_landmarks(points[None], size=256)
    for name, (x, y) in [("left_eye", (90, 110)), ("right_eye", (166, 110)), ("mouth", (128, 185))]:
        assert masks[name][0, 0, y, x] > 0.9, name
        cx, cy = _centroid(masks[name][0])
        assert abs(cx - x) < 2 and abs(cy - y) < 2
    assert masks["background"][0, 0, 5, 5] > 0.99


def test_gfpgan_boxes_become_eye_and_mouth_masks_at_any_size():
    boxes = [torch.tensor([[160.0, 210.0, 224.0, 270.0]]), torch.tensor([[290.0, 210.0, 350.0, 270.0]]),
             torch.tensor([[200.0, 340.0, 316.0, 400.0]])]
    masks = regions.regions_from_boxes(*boxes, size=256)
    assert masks["left_eye"][0, 0, 120, 96] > 0.99 and masks["left_eye"][0, 0, 120, 130] < 0.01
    assert masks["mouth"][0, 0, 185, 128] > 0.99
    cx, cy = _centroid(masks["right_eye"][0])
    assert abs(cx - 160) < 1.5 and abs(cy - 120) < 1.5


def test_parsing_map_labels_become_regions():
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, 8:56, 8:56] = 1  # skin
    labels[:, 20:26, 16:26] = 4  # l_eye
    labels[:, 40:46, 22:42] = 12  # upper lip -> mouth
    masks = regions.regions_from_parsing(labels, size=128, feather_amount=0)
    assert masks["left_eye"][0, 0, 46, 42] == 1 and masks["mouth"][0, 0, 86, 64] == 1
    assert masks["skin"][0, 0, 64, 30] == 1 and masks["background"][0, 0, 4, 4] == 1


def test_parsing_map_out_of_range_labels_are_refused():
    with pytest.raises(ValueError, match="0..18"):
        regions.regions_from_parsing(torch.full((1, 8, 8), 19), size=8)


def test_region_weights_expand_groups_and_reject_unknown_names():
    weights = regions.expand_region_weights({"eyes": 2.0, "background": 0.0})
    assert weights["left_eye"] == weights["right_eye"] == 2.0 and weights["background"] == 0.0
    assert weights["nose"] == 1.0
    with pytest.raises(ValueError, match="unknown region 'ears'"):
        regions.expand_region_weights({"ears": 1.0})


def test_weight_map_is_region_weighted_sum():
    masks = regions.template_regions(64)
    w = regions.region_weight_map(masks, {"mouth": 3.0, "background": 0.0})
    expected = sum(masks.values()) - masks["background"] + 2.0 * masks["mouth"]
    torch.testing.assert_close(w, expected)


def test_template_is_facexlibs_published_one_scaled_as_facexlib_does():
    import ast
    import inspect
    import textwrap

    helper = pytest.importorskip("facexlib.utils.face_restoration_helper",
                                 reason="facexlib comes with the [gfpgan] extra: pip install --no-build-isolation -e "
                                        "'.[test,gfpgan]' (the README's test command)")
    tree = ast.parse(textwrap.dedent(inspect.getsource(helper.FaceRestoreHelper.__init__)))
    arrays = [ast.literal_eval(node.args[0]) for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "array"]
    five_point = torch.tensor(next(a for a in arrays if len(a) == 5), dtype=torch.float32)
    assert torch.equal(regions.FFHQ_TEMPLATE_512, five_point)
    for size in (256, 512, 1024):  # FaceRestoreHelper(face_size=size): template * (size / 512.0)
        assert torch.equal(regions.template_points(size), five_point * (size / 512.0))
