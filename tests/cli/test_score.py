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
    # the default --preprocess official equals the official script's scores (printed to 6 decimals)
    assert abs(out[0]["score"] - expected["ifqa_cnn_face_score"]) <= 1e-6
    assert abs(out[1]["score"] - expected["ifqa_cnn_face512_score"]) <= 1e-6


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


def test_colliding_map_names_are_made_unique_and_recorded(tmp_path, ifqa_checkpoint, capsys):
    import csv

    root = tmp_path / "faces"
    for rel in ("a.png", "x/a.png", "y/a_1.png", "z/A.png"):  # a_1: the name the second a.png would take
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / "face256.png", root / rel)
    maps = tmp_path / "maps"
    assert main(["score", str(root), "--checkpoint", str(ifqa_checkpoint), "--maps", str(maps), "--quiet"]) == EXIT_OK
    with open(maps / "maps_index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["input"] for r in rows) == sorted(str(root / rel) for rel in ("a.png", "x/a.png", "y/a_1.png",
                                                                                   "z/A.png"))
    names = [r["map"].casefold() for r in rows]
    assert len(set(names)) == 4 and all((maps / r["map"]).exists() and (maps / r["overlay"]).exists() for r in rows)
    assert sum(int(r["renamed"]) for r in rows) >= 2
    assert "maps_index.csv says which input" in capsys.readouterr().err


def _banner_pixels(path) -> tuple[int, int]:
    """(black, white) pixel counts in the top 14 rows of an image: the label banner, if any."""
    import numpy as np

    with Image.open(path) as img:
        top = np.asarray(img.convert("RGB"))[:14].astype(int)
    return int((top.sum(-1) == 0).sum()), int((top.min(-1) >= 128).sum())


def test_random_weights_maps_say_so_on_the_images(faces, ifqa_checkpoint, tmp_path):
    import numpy as np

    random_maps, real_maps = tmp_path / "random", tmp_path / "real"
    assert main(["score", str(faces / "sub"), "--random-weights", "--maps", str(random_maps), "--quiet"]) == EXIT_OK
    assert main(["score", str(faces / "sub"), "--checkpoint", str(ifqa_checkpoint), "--maps", str(real_maps),
                 "--quiet"]) == EXIT_OK
    black, white = _banner_pixels(random_maps / "b_overlay.png")
    assert black > 512 * 8 and white > 20  # a black strip with white text across the overlay
    assert _banner_pixels(real_maps / "b_overlay.png")[0] < 512 * 8
    with Image.open(random_maps / "b_map.png") as labelled, Image.open(real_maps / "b_map.png") as plain:
        red = np.asarray(labelled.convert("RGB"))[:14].astype(int)
        assert ((red[..., 0] > 150) & (red[..., 1] < 80)).sum() > 20  # the red label line
        assert labelled.height > plain.height


def test_missing_checkpoint_fails_with_instructions(faces, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "empty"))
    assert main(["score", str(faces)]) == EXIT_FAILED
    assert "ifqa-loss weights import" in capsys.readouterr().err


def test_weights_import_then_list_then_score_without_checkpoint_flag(faces, ifqa_checkpoint, tmp_path, monkeypatch,
                                                                     capsys):
    """Import and list in this process; a later, separate process finds the imported file by itself."""
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "home"))
    assert main(["weights", "import", str(ifqa_checkpoint)]) == EXIT_OK
    assert "imported ifqa" in capsys.readouterr().out
    assert main(["weights", "list"]) == EXIT_OK
    listed = capsys.readouterr().out
    assert "ifqa.safetensors" in listed and "not installed" in listed  # ifqa++ still missing
    scored = subprocess.run([sys.executable, "-m", "ifqa_loss", "score", str(faces / "a.png"), "--format", "json"],
                            capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    assert len(json.loads(scored.stdout)) == 1


def test_default_preprocessing_is_the_official_one_with_exif_and_uint8_resize(tmp_path, ifqa_checkpoint, capsys):
    """A rotated JPEG (EXIF orientation 6) at a size that needs resizing: the default path equals the official
    script's input (cv2.imread applies EXIF; uint8 cv2 resize), computed here with OpenCV."""
    import numpy as np
    import torch

    cv2 = pytest.importorskip("cv2", reason="OpenCV comes with the [test] extra: pip install -e '.[test]'")
    from ifqa_loss.metric import load_metric

    face = Image.open(SAMPLES / "face512.png").convert("RGB").resize((300, 400))
    exif = face.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    face.save(path, exif=exif, quality=95)
    official = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (256, 256))
    x = torch.from_numpy((official.astype(np.float32) - np.float32(127.5)) * np.float32(1 / 127.5))
    with torch.no_grad():
        want = load_metric("ifqa", checkpoint=ifqa_checkpoint).net(x.permute(2, 0, 1)[None]).mean().item()
    assert main(["score", str(path), "--checkpoint", str(ifqa_checkpoint), "--format", "json", "--quiet"]) == EXIT_OK
    assert abs(json.loads(capsys.readouterr().out)[0]["score"] - want) <= 1e-6


def test_non_square_images_are_scored_with_a_note_about_stretching(tmp_path, capsys):
    Image.new("RGB", (96, 64), "gray").save(tmp_path / "wide.png")
    assert main(["score", str(tmp_path / "wide.png"), "--random-weights", "--quiet"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "1 non-square image(s) were stretched to 256x256" in err and "MEANINGLESS" in err
