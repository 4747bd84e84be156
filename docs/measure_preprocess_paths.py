"""Measure how far the differentiable float path is from the official uint8 path (README table).

    PYTHONPATH=$PWD python docs/measure_preprocess_paths.py            # prints the table
    PYTHONPATH=$PWD python docs/measure_preprocess_paths.py --readme   # and writes it into README.md

The sample face (ifqa_loss/samples/face512.png) is resized with Pillow (Lanczos) to each size and
saved as PNG; each file is then scored twice with IFQA at the reference weights of
tests/fixtures (no published weights are needed): official path (read_image_official +
official_network_input, what `ifqa-loss score` does) and float path (read_image + float
bilinear resize, what the losses do). Prints a Markdown table; ``--readme`` also replaces the block between
the README's ``<!-- preprocess-table -->`` markers with it (tests/test_docs.py checks that block's format).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ifqa_loss.imageio import read_image, read_image_official  # noqa: E402
from ifqa_loss.nets.ifqa_unet import IFQADiscriminator  # noqa: E402
from ifqa_loss.preprocess import official_network_input, resize  # noqa: E402

from reference import SAMPLES, reference_state_dict  # noqa: E402

HEADER = ["| input (w×h) | max input difference (grey levels) | \\|Δ score\\| | max \\|Δ map\\| |",
          "|---|---:|---:|---:|"]
BEGIN, END = "<!-- preprocess-table -->", "<!-- /preprocess-table -->"
SIZES = [(128, 128), (200, 200), (256, 256), (300, 300), (512, 512), (1024, 1024), (640, 480), (375, 500)]


@torch.no_grad()
def rows():
    """One Markdown row per size in SIZES."""
    with torch.device("meta"):
        net = IFQADiscriminator()
    net.load_state_dict(reference_state_dict("ifqa_cnn_keys.json"), assign=True)
    net.eval()
    face = Image.open(SAMPLES / "face512.png").convert("RGB")
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in SIZES:
            path = Path(tmp) / f"face_{w}x{h}.png"
            face.resize((w, h), Image.LANCZOS).save(path)
            official = official_network_input(read_image_official(path)[None], 256, "bilinear")
            floating = resize(read_image(path)[None], 256) * 2 - 1
            maps = net(torch.cat([official, floating]))
            grey = ((official - floating).abs().max() * 127.5).item()
            yield (f"| {w}×{h} | {grey:.3f} | {(maps[0].mean() - maps[1].mean()).abs().item():.1e} "
                   f"| {(maps[0] - maps[1]).abs().max().item():.1e} |")


def write_readme(table: list[str], readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n" + "\n".join(table) + "\n" + END + tail)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    table = list(HEADER)
    print("\n".join(HEADER), flush=True)
    for row in rows():
        print(row, flush=True)
        table.append(row)
    if "--readme" in argv:
        write_readme(table)


if __name__ == "__main__":
    main()
