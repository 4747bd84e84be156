"""CodeFormer's stage-3 joint model with OUR patch (integrations/codeformer/ifqa.patch) on a copy of its checkout.

Needs IFQA_TEST_CODEFORMER_SRC (an sczhou/CodeFormer checkout; .ci/run points it at
../shared/upstream/CodeFormer); skips with the how-to otherwise. A patch that no longer applies fails.
One driver process serves both tests. Its two-iteration loop runs CodeFormer at 512 px (the architecture
hard-codes width 64 and the 16x16 code grid); codeformer_driver.py says how it keeps that to one model, one
forward per run and recomputed activations (its peak RSS and time: benchmarks/RESULTS.md, "Peak memory of the
test suite").
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from upstream import ROOT, apply_patch, copy_checkout, run_driver, upstream_source

RECIPE = ROOT / "integrations" / "codeformer"
DRIVER = Path(__file__).with_name("codeformer_driver.py")
WEIGHT = 0.5


def _prepare(source: Path, destination: Path, patched: bool) -> Path:
    checkout = copy_checkout(source, destination)
    # What CodeFormer's install step (`python basicsr/setup.py develop`) writes; the snapshot has no version.py.
    version = checkout / "basicsr" / "version.py"
    if not version.exists():
        version.write_text("__version__ = '1.3.2'\n__gitsha__ = 'unknown'\nversion_info = (1, 3, 2)\n")
    if patched:
        apply_patch(checkout, RECIPE / "ifqa.patch")
    return checkout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One driver process for both tests (CodeFormer's model at 512 px is the suite's largest process)."""
    source = upstream_source("IFQA_TEST_CODEFORMER_SRC", "sczhou/CodeFormer")
    tmp_path = tmp_path_factory.mktemp("codeformer")
    patched = _prepare(source, tmp_path / "patched", patched=True)
    unpatched = _prepare(source, tmp_path / "upstream", patched=False)
    data = tmp_path / "ffhq_512"
    data.mkdir()
    face = np.asarray(Image.open(ROOT / "ifqa_loss" / "samples" / "face512.png").convert("RGB"))
    for index in range(2):
        Image.fromarray(np.roll(face, 4 * index, axis=1)).save(data / f"{index:08d}.png")
    return json.loads(run_driver(DRIVER, str(patched), str(unpatched), str(data), str(WEIGHT),
                                 cwd=tmp_path, timeout=1800).strip().splitlines()[-1])


def test_patched_joint_model_registers_ifqa_in_codeformers_own_basicsr(report):
    registration = report["registration"]
    assert registration["registered"]
    assert registration["loss_type"] == "ifqa_loss.integrations.basicsr.IFQALoss"
    assert registration["loss_weight"] == registration["option_weight"] == 0.1


def test_generator_objective_is_codeformers_plus_weighted_ifqa(report):
    iterations = report["iterations"]
    assert [it["gan_active"] for it in iterations] == [False, True]  # IFQA before and after net_d_start_iter
    terms = ["l_feat_encoder", "cross_entropy_loss", "l_g_pix", "l_g_percep"]  # CodeFormer's own, as it logs them
    assert [it["codeformer_terms_logged"] for it in iterations] == [terms, [*terms, "l_g_gan"]], report
    for it in iterations:
        assert it["ifqa"] > 0.01, report  # an IFQA term that can be told apart from rounding
        assert it["logged_ifqa"] == pytest.approx(WEIGHT * it["ifqa"], rel=1e-5), report
        # CodeFormer's own logged generator terms plus the weighted IFQA term, nothing else
        assert it["patched"] == pytest.approx(it["codeformer_terms"] + WEIGHT * it["ifqa"], rel=1e-5), report
    # The unmodified upstream method, from the same state, seed and batch, where the adaptive GAN weight runs
    gan_step = iterations[1]
    assert gan_step["patched"] == pytest.approx(gan_step["upstream"] + WEIGHT * gan_step["ifqa"], rel=1e-5,
                                                abs=1e-6), report
