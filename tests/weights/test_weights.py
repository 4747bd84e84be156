import pathlib

import pytest
import torch
from safetensors.torch import save_file

from ifqa_loss import weights as checkpoints
from ifqa_loss.weights import CheckpointError, check_state_dict, load_network, read_state_dict


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_official_bare_and_safetensors_layouts_load_identically(tmp_path, ifqa_checkpoint, ifqa_state_dict):
    bare = tmp_path / "bare.pth"
    torch.save(ifqa_state_dict, bare)
    st = tmp_path / "weights.safetensors"
    save_file(ifqa_state_dict, str(st))
    for path in (ifqa_checkpoint, bare, st):
        net, _ = load_network("ifqa", path)
        torch.testing.assert_close(net.btn[2].conv1.weight, ifqa_state_dict["btn.2.conv1.weight"], rtol=0, atol=0)


def test_network_is_built_without_random_weights(ifqa_checkpoint):
    net, _ = load_network("ifqa", ifqa_checkpoint)
    assert not any(p.is_meta for p in net.parameters())


def test_mismatch_report_names_missing_unexpected_and_wrong_shape_keys(ifqa_state_dict):
    sd = dict(ifqa_state_dict)
    del sd["btn.0.conv1.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["decoder16.conv1x1.weight"] = torch.zeros(3, 3, 1, 1)
    report = check_state_dict(sd, "ifqa")
    text = str(report)
    assert not report.ok
    assert "btn.0.conv1.bias" in text and "extra.weight" in text
    assert "decoder16.conv1x1.weight expected (512, 1024, 1, 1) found (3, 3, 1, 1)" in text


def test_checkpoint_of_the_other_metric_is_identified(tmp_path, ifqa_state_dict):
    path = tmp_path / "IFQA_Metric.pth"
    torch.save({"D": ifqa_state_dict}, path)
    with pytest.raises(CheckpointError, match="looks like a 'ifqa' checkpoint"):
        load_network("ifqa++", path)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"D": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(path)
    assert not marker.exists()


def test_truncated_file_gets_a_redownload_hint(tmp_path, ifqa_checkpoint):
    path = tmp_path / "IFQA_Metric.pth"
    path.write_bytes(ifqa_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        read_state_dict(path)


@pytest.mark.parametrize(("content", "reason"), [(b"<html>quota exceeded</html>", "web page"), (b"", "empty")])
def test_non_checkpoint_file_is_refused(tmp_path, content, reason):
    path = tmp_path / "IFQA_Metric.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason):
        read_state_dict(path)


def test_checkpoint_of_non_tensors_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"D": {"epoch": 3}}, path)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        read_state_dict(path)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")


def test_without_checkpoint_the_error_says_where_weights_are_published_and_where_to_put_them(home):
    with pytest.raises(CheckpointError) as info:
        load_network("ifqa")
    message = str(info.value)
    assert "https://github.com/AIM-SKKU/IFQA" in message and "drive.google.com" in message
    assert str(home) in message and "ifqa-loss weights import" in message


def test_cache_dir_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("IFQA_LOSS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert checkpoints.cache_dir() == tmp_path / ".cache" / "ifqa_loss"


def test_official_file_dropped_in_the_cache_is_found(home, ifqa_checkpoint):
    home.mkdir()
    (home / "IFQA_Metric.pth").write_bytes(ifqa_checkpoint.read_bytes())
    assert checkpoints.find_checkpoint("ifqa") == home / "IFQA_Metric.pth"


def test_import_verifies_records_sha256_and_stores_safetensors(home, ifqa_checkpoint, ifqa_state_dict):
    entry = checkpoints.import_checkpoint(ifqa_checkpoint)
    assert entry["metric"] == "ifqa"
    assert entry["source_sha256"] == checkpoints.sha256_file(ifqa_checkpoint)
    stored = home / "ifqa.safetensors"
    assert checkpoints.find_checkpoint("ifqa") == stored
    assert entry["sha256"] == checkpoints.sha256_file(stored)
    assert read_state_dict(stored).keys() == ifqa_state_dict.keys()
    rows = {r["metric"]: r for r in checkpoints.installed()}
    assert rows["ifqa"]["installed"] and rows["ifqa"]["sha256"] == entry["sha256"]
    assert not rows["ifqa++"]["installed"]


def test_import_refuses_a_wrong_metric(home, ifqa_checkpoint):
    with pytest.raises(CheckpointError, match="ifqa\\+\\+"):
        checkpoints.import_checkpoint(ifqa_checkpoint, metric="ifqa++")
    assert not (home / "ifqapp.safetensors").exists()


def test_missing_gfiqa_weights_point_to_training_not_to_a_download(home):
    with pytest.raises(CheckpointError, match="ifqa-loss train-gfiqa") as info:
        load_network("gfiqa")
    assert "drive.google.com" not in str(info.value)
