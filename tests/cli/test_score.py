import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from ifqa_loss.cli import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED, main

from reference import SAMPLES


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "faces"
    (root / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "face256.png", root / "a.png")
    shutil.copy(SAMPLES / "face512.png", root / "sub" / "b.png")
    return root


def test_json_scores_match_the_official_pipeline(faces, ifqa_checkpoint, expected, capsys):
    code = main(["score", str(faces), "--checkpoint", str(ifqa_checkpoint), "--format", "json", "--batch-size", "2"])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert [r["path"] for r in out] == [str(faces / "a.png"), str(faces / "sub" / "b.png")]
    assert abs(out[0]["score"] - expected["ifqa_cnn_face_score"]) <= 1e-4
    assert abs(out[1]["score"] - expected["ifqa_cnn_face512_score"]) <= 1e-4


def test_unreadable_file_is_reported_skipped_and_the_batch_goes_on(faces, ifqa_checkpoint, capsys):
    (faces / "broken.png").write_bytes(b"not an image")
    code = main(["score", str(faces), "--checkpoint", str(ifqa_checkpoint), "--format", "csv", "--quiet"])
    captured = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert captured.out.splitlines()[0] == "path,score" and len(captured.out.splitlines()) == 3
    assert "broken.png" in captured.err and "skipped" in captured.err


def test_maps_are_written_as_colour_map_and_overlay(faces, ifqa_checkpoint, tmp_path, capsys):
    maps = tmp_path / "maps"
    assert main(["score", str(faces / "sub"), "--checkpoint", str(ifqa_checkpoint), "--maps", str(maps)]) == EXIT_OK
    with Image.open(maps / "b_map.png") as colour, Image.open(maps / "b_overlay.png") as overlay:
        assert colour.width > 256 and colour.height > 256 and colour.mode == "RGB"  # map + colour bar + score
        assert overlay.size == (512, 512)


def test_missing_checkpoint_fails_with_instructions(faces, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "empty"))
    assert main(["score", str(faces)]) == EXIT_FAILED
    assert "ifqa-loss weights import" in capsys.readouterr().err


def test_weights_import_then_list_then_score_without_checkpoint_flag(faces, ifqa_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "home"))
    env_run = [sys.executable, "-m", "ifqa_loss"]
    imported = subprocess.run([*env_run, "weights", "import", str(ifqa_checkpoint)], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert "imported ifqa" in imported.stdout
    listed = subprocess.run([*env_run, "weights", "list"], capture_output=True, text=True)
    assert "ifqa.safetensors" in listed.stdout and "not installed" in listed.stdout  # ifqa++ still missing
    score_args = [*env_run, "score", str(faces / "a.png"), "--format", "json"]
    scored = subprocess.run(score_args, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    assert len(json.loads(scored.stdout)) == 1


def test_non_square_images_are_scored_with_a_note_about_stretching(tmp_path, capsys):
    Image.new("RGB", (96, 64), "gray").save(tmp_path / "wide.png")
    assert main(["score", str(tmp_path / "wide.png"), "--random-weights", "--quiet"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "1 non-square image(s) were stretched to 256x256" in err and "MEANINGLESS" in err
