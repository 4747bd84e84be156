"""Command-line refusals: each prints ``error: ...`` naming the problem and the fix, exits 2, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifqa_loss.cli import main

from robustness.case import Case, Refused, Works, params


def args(*argv: str, setup=None):
    """``argv`` with placeholders: {ckpt} the tiny checkpoint, {dir} a folder with one face, {tmp} a scratch folder."""
    def make(tmp: Path, ckpt: Path, faces: Path):
        if setup:
            setup(tmp)
        return [a.format(ckpt=ckpt, dir=faces, tmp=tmp) for a in argv]
    return make


def _code_pickle(tmp: Path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("true",))
    torch.save({"model": RunsCode()}, tmp / "evil.pth")


def _bad_meta(tmp: Path):
    (tmp / "meta.csv").write_text("name,mos\n")
    (tmp / "imgs").mkdir()


def _cut_legacy(tmp: Path):
    torch.save({"D": {"w": torch.zeros(1000)}}, tmp / "cut.pth", _use_new_zipfile_serialization=False)
    data = (tmp / "cut.pth").read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])


def _bad_safetensors_metadata(tmp: Path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp / "bad.safetensors"), metadata={"config": "{oops"})


def _file(name: str, content: bytes = b"x"):
    def setup(tmp: Path):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content)
    return setup


def _maps_below_file(tmp: Path):
    (tmp / "plain").write_text("x")


SCORE = ("score", "{dir}", "--checkpoint", "{ckpt}", "--quiet")
CUDA = torch.cuda.is_available()

CASES = [
    # --- devices ---------------------------------------------------------------------------------------------
    Case("device-meta", args(*SCORE, "--device", "meta"), Refused("meta device holds no data", "cpu")),
    Case("device-cuda-without-cuda", args(*SCORE, "--device", "cuda" if not CUDA else "cuda:99"),
         Refused("CUDA is not available|CUDA device", "cpu|only")),
    Case("device-cuda-index-out-of-range", args(*SCORE, "--device", "cuda:99"),
         Refused("CUDA is not available|only 1 CUDA", "cpu|")),
    Case("device-nonsense", args(*SCORE, "--device", "gpu0"), Refused("not a device", "cpu or cuda")),
    Case("device-empty", args(*SCORE, "--device", ""), Refused("not a device|use cpu", "cpu")),
    Case("device-mps-missing", args(*SCORE, "--device", "mps"), Refused("MPS is not available", "cpu")),
    Case("eval-gfiqa-device-meta", args("eval-gfiqa", "--checkpoint", "{ckpt}", "--images", "{tmp}", "--meta",
                                        "{tmp}/m.csv", "--device", "meta"), Refused("meta device", "cpu")),
    # --- numbers and choices ---------------------------------------------------------------------------------
    Case("batch-size-zero", args(*SCORE, "--batch-size", "0"), Refused("--batch-size must be >= 1", "")),
    Case("batch-size-negative", args(*SCORE, "--batch-size", "-3"), Refused("--batch-size must be >= 1", "")),
    Case("batch-size-text", args(*SCORE, "--batch-size", "many"), Refused("invalid int value", "")),
    Case("max-pixels-zero", args(*SCORE, "--max-pixels", "0"), Refused("--max-pixels must be >= 1", "")),
    Case("format-unknown", args(*SCORE, "--format", "xml"), Refused("invalid choice: 'xml'", "table")),
    Case("metric-unknown", args(*SCORE, "--metric", "niqe"), Refused("invalid choice: 'niqe'", "ifqa")),
    Case("unknown-option", args(*SCORE, "--fast"), Refused("unrecognized arguments: --fast", "")),
    Case("unknown-command", args("rate", "x.png"), Refused("invalid choice: 'rate'", "score")),
    Case("no-command", args(), Refused("required", "")),
    # --- inputs ----------------------------------------------------------------------------------------------
    Case("folder-missing", args("score", "{tmp}/nowhere", "--checkpoint", "{ckpt}"),
         Refused("no such file or folder.*no images", "")),
    Case("folder-empty", args("score", "{tmp}/empty", "--checkpoint", "{ckpt}", setup=lambda t: (t / "empty").mkdir()),
         Refused("no images", "")),
    Case("folder-only-gifs", args("score", "{tmp}/g", "--checkpoint", "{ckpt}", setup=_file("g/a.gif")),
         Refused("GIF.*no images", "convert")),
    Case("only-unreadable-file", args("score", "{tmp}/bad.png", "--checkpoint", "{ckpt}", setup=_file("bad.png")),
         Refused("not a readable image.*none of the 1 image", "")),
    # --- checkpoints -----------------------------------------------------------------------------------------
    Case("checkpoint-missing", args(*SCORE[:3], "{tmp}/none.pth"), Refused("does not exist", "check the path")),
    Case("checkpoint-folder", args(*SCORE[:3], "{tmp}"), Refused("is a folder", "")),
    Case("checkpoint-html", args(*SCORE[:3], "{tmp}/p.pth", setup=_file("p.pth", b"<html>x</html>")),
         Refused("web page", "download the file itself")),
    Case("checkpoint-code", args(*SCORE[:3], "{tmp}/evil.pth", setup=_code_pickle), Refused("refused.*code", "")),
    Case("checkpoint-cut-legacy", args(*SCORE[:3], "{tmp}/cut.pth", setup=_cut_legacy),
         Refused("could not be read", "download it again")),
    Case("checkpoint-bad-safetensors-metadata", args(*SCORE[:3], "{tmp}/bad.safetensors",
                                                     setup=_bad_safetensors_metadata),
         Refused("metadata 'config' is not JSON", "re-import")),
    Case("random-weights-and-checkpoint", args(*SCORE, "--random-weights"), Refused("either checkpoint", "")),
    Case("eval-gfiqa-code-pickle", args("eval-gfiqa", "--checkpoint", "{tmp}/evil.pth", "--images", "{tmp}/imgs",
                                        "--meta", "{tmp}/meta.csv", "--device", "cpu",
                                        setup=lambda t: (_code_pickle(t), _bad_meta(t))),
         Refused("refused.*code", "")),
    Case("eval-gfiqa-ifqa-checkpoint", args("eval-gfiqa", "--checkpoint", "{ckpt}", "--images", "{tmp}", "--meta",
                                            "{tmp}/missing.csv", "--device", "cpu"),
         Refused("holds 'ifqa' weights", "train-gfiqa")),
    # --- outputs ---------------------------------------------------------------------------------------------
    Case("maps-into-a-file", args(*SCORE, "--maps", "{tmp}/plain", setup=_maps_below_file),
         Refused("--maps .*is a file, not a folder|cannot be written", "writ")),
    Case("maps-below-a-file", args(*SCORE, "--maps", "{tmp}/plain/sub", setup=_maps_below_file),
         Refused("--maps .*cannot be written", "folder you can write to")),
    # --- weights command -------------------------------------------------------------------------------------
    Case("import-missing", args("weights", "import", "{tmp}/none.pth"), Refused("does not exist", "")),
    Case("import-bad-sha-format", args("weights", "import", "{ckpt}", "--sha256", "xyz"),
         Refused("not 64 hexadecimal digits", "")),
    Case("import-sha-mismatch", args("weights", "import", "{ckpt}", "--sha256", "a" * 64),
         Refused("expected a{64}", "download")),
    Case("import-wrong-metric", args("weights", "import", "{ckpt}", "--metric", "ifqa++"),
         Refused("ifqa\\+\\+", "pass")),
    Case("import-says-layout-not-provenance", args("weights", "import", "{ckpt}"),
         Works(reported="checked: layout .*NOT checked: provenance")),
    Case("import-pinned-ok", args("weights", "import", "{ckpt}", "--sha256", "PIN"),
         Works(reported="provenance: sha256 matches")),
]


@pytest.fixture
def faces(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 150, 120)).save(folder / "face.png")
    return folder


@params(CASES)
def test_command_line(case: Case, tmp_path, tiny_checkpoint, faces, capsys, monkeypatch):
    from ifqa_loss.weights import sha256_file

    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "home"))
    argv = [a.replace("PIN", sha256_file(tiny_checkpoint)) for a in case.make(tmp_path, tiny_checkpoint, faces)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses bad arguments itself (usage + error, exit 2)
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if isinstance(case.expect, Refused):
        assert code == 2, captured
        assert "error: " in captured.err, captured.err
        case.expect.check(captured.err)
    else:
        assert code == 0, captured.err
        assert __import__("re").search(case.expect.reported, captured.out, __import__("re").S), captured.out


# A few real processes: what a shell sees (exit status, stderr), beyond the in-process calls above.
# (one only: each costs a Python + torch start-up; tests/cli runs more).
def test_real_process_refusal_is_one_error_line(tmp_path):
    env = {**os.environ, "IFQA_LOSS_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "ifqa_loss", "weights", "import", str(tmp_path / "none.pth")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
