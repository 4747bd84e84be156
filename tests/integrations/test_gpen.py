"""GPEN's own training loop with OUR patch (integrations/gpen/*.patch) applied to a copy of its checkout.

Needs IFQA_TEST_GPEN_SRC (a yangxy/GPEN checkout; .ci/run points it at ../shared/upstream/GPEN);
skips with the how-to otherwise. A patch that no longer applies fails the test.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from upstream import ROOT, apply_patch, copy_checkout, run_driver, upstream_source

RECIPE = ROOT / "integrations" / "gpen"
WEIGHT = 0.5


def _faces(folder: Path, count: int = 2) -> None:
    face = Image.open(ROOT / "ifqa_loss" / "samples" / "face512.png").convert("RGB").resize((256, 256))
    for sub in ("hq", "val/lq", "val/hq"):
        (folder / sub).mkdir(parents=True)
    for index in range(count):
        Image.fromarray(np.roll(np.asarray(face), 4 * index, axis=1)).save(folder / "hq" / f"{index:05d}.png")
    face.save(folder / "val" / "lq" / "0.png")
    face.save(folder / "val" / "hq" / "0.png")


@pytest.fixture(scope="module")
def gpen_run(tmp_path_factory):
    source = upstream_source("IFQA_TEST_GPEN_SRC", "yangxy/GPEN")
    tmp_path = tmp_path_factory.mktemp("gpen")
    unpatched = copy_checkout(source, tmp_path / "upstream")
    apply_patch(unpatched, RECIPE / "torchvision-save-image.patch")
    patched = copy_checkout(source, tmp_path / "patched")
    apply_patch(patched, RECIPE / "torchvision-save-image.patch")
    apply_patch(patched, RECIPE / "ifqa.patch")
    _faces(tmp_path / "data")
    (tmp_path / "out").mkdir()
    stdout = run_driver(Path(__file__).with_name("gpen_driver.py"), str(patched), str(unpatched),
                        str(tmp_path / "data"), str(tmp_path / "out"), str(WEIGHT), cwd=tmp_path)
    return json.loads(stdout.strip().splitlines()[-1])


def test_generator_objective_is_gpens_plus_weighted_ifqa(gpen_run):
    records = gpen_run["records"]
    assert len(records) == 2  # one generator step per iteration
    for record in records:
        assert record["ifqa"] > 0
        assert record["total"] == pytest.approx(record["upstream"] + WEIGHT * record["ifqa"], rel=1e-5, abs=1e-6)


def test_the_loop_trains_and_saves_no_ifqa_weights(gpen_run):
    assert gpen_run["generator_moved"]
    assert gpen_run["saved"] and all(keys == ["d", "d_optim", "g", "g_ema", "g_optim"]
                                     for keys in gpen_run["saved"].values())
    assert not any("encoder128" in key or "ifqa" in key for key in gpen_run["saved_keys"])
