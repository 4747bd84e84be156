import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from ifqa_loss.training import gfiqa as gfiqa_train
from ifqa_loss.training.gfiqa import LossWeights, TrainConfig

from helpers import TINY_GFIQA


def _synthetic_dataset(root, n=240, size=32, seed=0):
    """Smooth random patterns washed out towards flat grey by strength s; MOS = 1 - s (known ground truth)."""
    rs = np.random.RandomState(seed)
    images = root / "images"
    images.mkdir(parents=True)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    rows = []
    for i in range(n):
        f = rs.uniform(1, 4, size=3)
        base = np.stack([0.5 + 0.45 * np.sin(f[c] * 6 * xx + f[(c + 1) % 3] * 4 * yy) for c in range(3)], -1)
        strength = rs.uniform(0, 1)
        degraded = 0.5 + (base - 0.5) * (1 - strength)
        Image.fromarray((np.clip(degraded, 0, 1) * 255).astype(np.uint8)).save(images / f"{i:04d}.png")
        rows.append((f"{i:04d}.png", round(1 - strength, 4)))
    meta = root / "meta.csv"
    meta.write_text("img_name,mos\n" + "".join(f"{name},{mos}\n" for name, mos in rows))
    return images, meta


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gfiqa")
    images, meta = _synthetic_dataset(root)
    cfg = TrainConfig(images=str(images), meta=str(meta), out=str(root / "run"), model="gfiqa",
                      model_kwargs=dict(TINY_GFIQA), epochs=2, batch_size=8, lr=3e-3, lr_step=10, seed=0,
                      loss_weights=LossWeights(l2=0.1, perceptual=0.0), progress=False)
    result = gfiqa_train.train(cfg, log=lambda msg: None)
    return cfg, result


def test_two_epochs_on_synthetic_data_reach_srcc_0_8_on_the_held_out_split(trained):
    cfg, result = trained
    assert result["test"]["srcc"] >= 0.8, result


def test_run_folder_has_best_checkpoint_csv_log_and_result(trained):
    cfg, result = trained
    log = (gfiqa_train.Path(cfg.out) / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss,val_srcc") and len(log) == 3
    saved = json.loads((gfiqa_train.Path(cfg.out) / "result.json").read_text())
    assert saved["test"] == pytest.approx(result["test"])


def test_best_checkpoint_loads_as_a_metric_and_as_a_loss(trained):
    from ifqa_loss import GFIQALoss, load_metric

    cfg, _ = trained
    metric = load_metric("gfiqa", checkpoint=f"{cfg.out}/best.pth")
    assert metric.input_size == 32 and not metric.has_map
    x = torch.rand(2, 3, 64, 64)
    mos = metric.score(x)
    assert mos.shape == (2,)
    loss = GFIQALoss(checkpoint=f"{cfg.out}/best.pth", input_range=(0, 1), reduction="none")
    pred = x.clone().requires_grad_()
    values = loss(pred)
    torch.testing.assert_close(values, 1 - mos, atol=1e-5, rtol=0)
    values.sum().backward()
    assert pred.grad is not None and all(p.grad is None for p in loss.parameters())
    with pytest.raises(NotImplementedError, match="no quality map"):
        metric.quality_map(x)


def test_resume_continues_from_the_last_epoch(trained, tmp_path):
    import shutil

    cfg, _ = trained
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    resumed = TrainConfig(**{**cfg.__dict__, "out": str(run), "epochs": 3, "resume": True})
    messages = []
    gfiqa_train.train(resumed, log=messages.append)
    assert messages[0] == "resumed from epoch 1"
    assert len((run / "log.csv").read_text().splitlines()) == 4


def test_eval_cli_reports_srcc_plcc_rmse(trained, capsys):
    from ifqa_loss.cli import main

    cfg, result = trained
    code = main(["eval-gfiqa", "--checkpoint", f"{cfg.out}/best.pth", "--images", cfg.images, "--meta", cfg.meta,
                 "--device", "cpu"])
    assert code == 0
    assert f"SRCC {result['test']['srcc']:.4f}" in capsys.readouterr().out


def test_correlation_metrics_equal_scipy():
    rs = np.random.RandomState(0)
    pred, target = rs.rand(50), rs.rand(50)
    got = gfiqa_train.correlation_metrics(pred, target)
    assert got["srcc"] == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert got["plcc"] == pytest.approx(stats.pearsonr(pred, target).statistic)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))


def test_meta_reader_handles_plain_pyiqa_and_split_columns(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a.png,0.5\nb.png,0.25\n")
    assert [r["mos"] for r in gfiqa_train.read_meta(plain)] == [0.5, 0.25]
    split = tmp_path / "split.csv"
    split.write_text("name,mos,split\na.png,0.5,train\nb.png,0.2,val\nc.png,0.1,test\n")
    parts = gfiqa_train.split_rows(gfiqa_train.read_meta(split))
    assert [r["name"] for r in parts["val"]] == ["b.png"]


def test_random_split_is_70_10_20_and_seeded():
    rows = [{"name": str(i), "mos": 0.5, "split": None} for i in range(100)]
    a, b = gfiqa_train.split_rows(rows, seed=3), gfiqa_train.split_rows(rows, seed=3)
    assert [len(a[s]) for s in ("train", "val", "test")] == [70, 10, 20]
    assert a == b and a != gfiqa_train.split_rows(rows, seed=4)


@pytest.mark.parametrize(("content", "message"), [("a.png,1.7\n", "outside \\[0,1\\]"), ("a.png\n", "image_name,mos"),
                                                  ("", "empty")])
def test_bad_meta_files_are_refused(tmp_path, content, message):
    path = tmp_path / "meta.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        gfiqa_train.read_meta(path)


def test_imported_gfiqa_checkpoint_keeps_its_architecture(trained, tmp_path, monkeypatch):
    from ifqa_loss import load_metric
    from ifqa_loss import weights as checkpoints

    cfg, _ = trained
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path))
    entry = checkpoints.import_checkpoint(f"{cfg.out}/best.pth", metric="gfiqa")
    assert entry["file"] == "gfiqa.safetensors"
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(load_metric("gfiqa").score(x), load_metric("gfiqa", f"{cfg.out}/best.pth").score(x))
