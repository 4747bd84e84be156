"""The exit codes the README promises are the ones the commands return."""
import re
from pathlib import Path

from PIL import Image

from ifqa_loss.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED, main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_states_the_exit_codes_the_cli_uses():
    text = README.read_text()
    section = text[text.index("**Exit codes**"):]
    stated = dict(re.findall(r"`(\d+)` (\w+)", section[:600]))
    assert stated == {str(EXIT_OK): "success", str(EXIT_SKIPPED): "some", str(EXIT_FAILED): "nothing",
                      str(EXIT_INTERRUPTED): "interrupted"}


def test_each_exit_code_happens_as_stated(tmp_path, capsys):
    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
    from ifqa_loss.weights import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "t.pth", IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), "ifqa")
    good, mixed, bad = (tmp_path / n for n in ("good", "mixed", "bad"))
    for folder in (good, mixed, bad):
        folder.mkdir()
    for folder in (good, mixed):
        Image.new("RGB", (32, 32), (180, 140, 120)).save(folder / "face.png")
    for folder in (mixed, bad):
        (folder / "broken.png").write_bytes(b"junk")
    run = ["--checkpoint", str(ckpt), "--quiet"]
    assert main(["score", str(good), *run]) == EXIT_OK
    assert main(["score", str(mixed), *run]) == EXIT_SKIPPED
    assert main(["score", str(bad), *run]) == EXIT_FAILED  # only unreadable files
    assert main(["score", str(tmp_path / "missing"), *run]) == EXIT_FAILED  # a folder that does not exist
    assert "error: no images" in capsys.readouterr().err
