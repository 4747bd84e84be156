"""Held-out judges: configured as data, labelled judge vs optimised, random weights and small sets labelled."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ifqa_loss.ablation.config import config_from_dict
from ifqa_loss.ablation.evaluate import Evaluator
from ifqa_loss.ablation.judges import frechet_distance, kernel_inception_distance


@pytest.fixture(scope="module")
def heldout_ifqa(tmp_path_factory):
    """An IFQA checkpoint as `ifqa-loss train-ifqa` writes it (last.pth: {'D', 'metric', 'config'})."""
    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
    from ifqa_loss.weights import save_checkpoint

    torch.manual_seed(7)
    net = IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1)
    return save_checkpoint(tmp_path_factory.mktemp("trained") / "last.pth", net, "ifqa", step=10)


def _evaluator(builtin_config, judges, base=None):
    raw = builtin_config(judges=judges, **({"base": base} if base else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Evaluator(config_from_dict(raw))


def test_judges_are_labelled_and_scored(builtin_config, heldout_ifqa):
    from ifqa_loss.integrations.compat import install_functional_tensor_alias

    install_functional_tensor_alias()
    pytest.importorskip("gfpgan")
    ev = _evaluator(builtin_config, {
        "ifqa_heldout": {"type": "ifqa", "checkpoint": str(heldout_ifqa)},
        "lpips_alex": {"type": "lpips", "net": "squeeze", "random_backbone": True},
        "identity": {"type": "identity", "random_weights": True},
        "fid": {"type": "fid", "features": "identity"},
        "kid": {"type": "kid", "features": "identity", "subset_size": 4}})
    assert ev.names[:5] == ["ifqa_heldout", "lpips_alex", "identity", "fid", "kid"]
    assert ev.kinds["ifqa_heldout"] == "judge" and ev.kinds["ifqa"] == "optimised" and ev.kinds["lpips"] == "judge"
    notes = ev.notes
    assert notes["ifqa_heldout"] == "weights last.pth"  # trained weights: named, no RANDOM label
    assert notes["identity"] == "RANDOM WEIGHTS" and notes["ifqa"] == "RANDOM WEIGHTS"
    assert "RANDOM WEIGHTS" in notes["fid"] and "identity features" in notes["fid"]
    assert set(ev.lower_is_better) >= {"lpips", "lpips_alex", "fid", "kid"}
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores, sets = ev.evaluate(x, x)
    assert scores["identity"] == pytest.approx(np.ones(6)) and scores["ifqa_heldout"].shape == (6,)
    assert sets["fid"] == pytest.approx(0, abs=1e-6) and set(sets) == {"fid", "kid"}
    assert ev.set_notes(6)["fid"] == "MEANINGLESS: 6 images < 2048"
    y = (x + 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    scores, sets = ev.evaluate(y, x)
    assert (scores["identity"] < 1).all() and sets["fid"] > 0


def test_base_lpips_makes_lpips_optimised_and_mse_makes_psnr_optimised(builtin_config):
    ev = _evaluator(builtin_config, {}, base={"mse": {"type": "MSELoss"}, "p": {"type": "LPIPS", "weight": 0.1}})
    assert ev.kinds["lpips"] == "optimised" and ev.kinds["psnr"] == "optimised" and ev.kinds["ssim"] == "judge"


def test_pyiqa_judges_need_pyiqa(builtin_config):
    try:
        import pyiqa  # noqa: F401
    except ImportError:
        from ifqa_loss.ablation.config import SweepConfigError

        with pytest.raises(SweepConfigError, match="pip install pyiqa"):
            _evaluator(builtin_config, {"niqe": {"type": "pyiqa", "metric": "niqe"}})
    else:
        pytest.skip("pyiqa installed: its metrics need weights from its own cache (not downloaded in tests)")


def test_fid_and_kid_formulas_on_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) * 2 + 1  # mean shift 1 per dim, std 2: FID = 3 + 3 * (1 + 4 - 2 * 2) = 6
    assert frechet_distance(a, b) == pytest.approx(6, rel=0.05)
    assert abs(kernel_inception_distance(a, rng.normal(size=(4000, 3)), subset_size=500)) < 0.01
    assert kernel_inception_distance(a, b, subset_size=500) > 0.1
