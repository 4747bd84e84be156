import numpy as np
import pytest
import torch

from ifqa_loss import load_metric

from helpers import tiny_ifqa_metric
from reference import FIXTURES, read_rgb


def test_ifqa_plus_plus_normalise_then_bicubic_pipeline_matches_official(ifqa_vit_checkpoint, expected):
    # First in the file: the module's IFQA fixture (420 MB) does not exist yet under the 2.6 GB IFQA++ (peak RSS).
    metric = load_metric("ifqa++", checkpoint=ifqa_vit_checkpoint)
    with torch.no_grad():
        q = metric.quality_map(read_rgb("face256.png"))
    assert q.shape == (1, 1, 224, 224)
    ref = np.load(FIXTURES / "ifqa_vit_face_map.npy")
    assert np.abs(q[0, 0].numpy() - ref).max() <= 1e-4
    assert abs(q.mean().item() - expected["ifqa_vit_face_score"]) <= 1e-5


@pytest.fixture(scope="module")
def ifqa(ifqa_checkpoint):
    return load_metric("ifqa", checkpoint=ifqa_checkpoint)


def test_official_512_pipeline_is_matched_by_float_bilinear_resize(ifqa, expected):
    # Official: cv2 INTER_LINEAR resize of the uint8 image to 256, then normalise.
    score = ifqa.score(read_rgb("face512.png"))
    assert score.shape == (1,)
    assert abs(score.item() - expected["ifqa_cnn_face512_score"]) <= 1e-4


def test_quality_map_at_native_size_equals_official_map(ifqa):
    with torch.no_grad():
        q = ifqa.quality_map(read_rgb("face256.png"))
    ref = np.load(FIXTURES / "ifqa_cnn_face_map.npy")
    assert q.shape == (1, 1, 256, 256)
    assert np.abs(q[0, 0].numpy() - ref).max() <= 1e-4


@pytest.fixture
def tiny_metric():
    return tiny_ifqa_metric()


def test_any_input_size_gives_the_native_map(tiny_metric):
    assert tiny_metric.quality_map(torch.rand(2, 3, 100, 70)).shape == (2, 1, 256, 256)


def test_signed_input_range_equals_unit_range(tiny_metric):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tiny_metric.score(x * 2 - 1, input_range=(-1, 1)), tiny_metric.score(x))


def test_gradient_reaches_input_but_no_parameter(tiny_metric):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    tiny_metric.score(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny_metric.parameters())


def test_parent_train_does_not_unfreeze_eval_mode(tiny_metric):
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), tiny_metric)
    parent.train()
    assert parent[0].training
    assert not tiny_metric.training and not any(m.training for m in tiny_metric.modules())


def test_unit_range_input_outside_range_is_refused_with_the_fix(tiny_metric):
    with pytest.raises(ValueError, match="input_range"):
        tiny_metric.score(torch.rand(1, 3, 32, 32) * 2 - 1)


def test_dtype_argument_sets_weight_precision(ifqa_checkpoint):
    metric = load_metric("ifqa", checkpoint=ifqa_checkpoint, dtype=torch.float64)
    assert next(metric.parameters()).dtype == torch.float64
    assert metric.quality_map(torch.rand(1, 3, 256, 256)).dtype == torch.float64
