"""Scoring folders nobody checked: every bad file is reported and skipped, every good file is still scored."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ifqa_loss.cli import EXIT_SKIPPED, main

from robustness.case import Case, Refused, Works, params


def png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares ``width`` x ``height``: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def encoded(mode: str = "RGB", size=(40, 40), fmt: str = "PNG", **save) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    image = image.convert(mode) if mode != "RGB" else image
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def file(name: str | bytes, content: bytes | None = None, make=None):
    """A folder holding one good face and this extra file."""
    def setup(folder: Path):
        target = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else os.fsencode(name))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if make is not None:
            make(target)
        else:
            with open(target, "wb") as fh:
                fh.write(content)
        return []
    return setup


def symlink(name: str, to: str):
    def setup(folder: Path):
        os.symlink(folder / to, folder / name)
        return []
    return setup


def option(*args: str, extra=None):
    """No extra file; pass options to the command instead."""
    def setup(folder: Path):
        if extra:
            extra(folder)
        return list(args)
    return setup


TRUNCATED_PNG = encoded()[:200]
SKIPPED = "skipped"

CASES = [
    Case("bomb-png-20000x20000", file("bomb.png", png_declaring(20000, 20000)),
         Refused("400000000 pixels, more than the limit", "downscale it, or raise --max-pixels")),
    Case("bomb-png-65535-square", file("huge.png", png_declaring(65535, 65535)),
         Refused("pixels, more than the limit|decompression bomb", "downscale|decoder")),
    Case("bomb-png-wide-strip", file("strip.png", png_declaring(2_000_000, 100)),
         Refused("200000000 pixels", "--max-pixels")),
    Case("max-pixels-option", option("--max-pixels", "5000", extra=lambda f: (f / "big.png").write_bytes(
        encoded(size=(100, 100)))), Refused("10000 pixels \\(100x100\\), more than the limit of 5000", "--max-pixels")),
    Case("truncated-png", file("cut.png", TRUNCATED_PNG), Refused("not a readable image", "")),
    Case("truncated-jpeg", file("cut.jpg", encoded(fmt="JPEG")[:300]), Refused("not a readable image", "")),
    Case("zero-byte-png", file("empty.png", b""), Refused("not a readable image", "")),
    Case("text-named-png", file("notes.png", b"hello"), Refused("not a readable image", "")),
    Case("html-named-jpg", file("page.jpg", b"<html>403</html>"), Refused("not a readable image", "")),
    Case("gif-in-folder", file("anim.gif", encoded("P", fmt="GIF")), Refused("GIF", "convert it to PNG")),
    Case("heic-in-folder", file("phone.heic", b"\0\0\0\x18ftypheic"), Refused("HEIC", "convert it")),
    Case("avif-in-folder", file("x.avif", b"\0"), Refused("AVIF", "convert it")),
    Case("svg-in-folder", file("logo.svg", b"<svg/>"), Refused("SVG", "export it to PNG")),
    Case("broken-symlink", symlink("gone.png", "missing.png"), Refused("broken symbolic link", "")),
    Case("symlink-loop-file", lambda f: (os.symlink(f / "l2.png", f / "l1.png"),
                                         os.symlink(f / "l1.png", f / "l2.png"), [])[-1],
         Refused("broken symbolic link or a link loop", "")),
    Case("folder-link-loop", lambda f: (os.symlink(f, f / "loop"), [])[-1], Works("folder links are not followed")),
    Case("named-missing-file", option(extra=None), Works("control: nothing extra")),
    Case("one-pixel-image", file("dot.png", encoded(size=(1, 1))), Refused("1x1 pixels, below the minimum side",
                                                                          "face crop")),
    Case("extreme-aspect-1x512", file("line.png", encoded(size=(1, 512))), Refused("1x512 pixels.*minimum side",
                                                                                   "face crop")),
    Case("minimum-side-8x8", file("small.png", encoded(size=(8, 8))), Works("scored: at the minimum side")),
    Case("greyscale-L", file("grey.png", encoded("L")), Works("converted to RGB")),
    Case("palette-P", file("pal.png", encoded("P")), Works("converted to RGB")),
    Case("rgba", file("alpha.png", encoded("RGBA")), Works("alpha dropped")),
    Case("la", file("la.png", encoded("LA")), Works("converted")),
    Case("one-bit", file("bw.png", encoded("1")), Works("converted")),
    Case("cmyk-jpeg", file("print.jpg", encoded("CMYK", fmt="JPEG")), Works("converted")),
    Case("progressive-jpeg", file("prog.jpg", encoded(fmt="JPEG", progressive=True)), Works("scored")),
    Case("webp", file("x.webp", encoded(fmt="WEBP")), Works("scored")),
    Case("bmp", file("x.bmp", encoded(fmt="BMP")), Works("scored")),
    Case("tiff", file("x.tiff", encoded(fmt="TIFF")), Works("scored")),
    Case("uppercase-suffix", file("SHOUT.PNG", encoded()), Works("suffix case ignored")),
    Case("png-named-jpg", file("wrong.jpg", encoded()), Works("decoded by content")),
    Case("non-utf8-name", file(b"caf\xe9.png", encoded()), Works("name printed with \\xNN escapes",
                                                                reported="")),
    Case("name-with-comma-and-quote", file('a,"b".png', encoded()), Works("CSV quoting")),
    Case("name-with-newline", file("line\nbreak.png", encoded()), Works("CSV quoting keeps one record")),
    Case("name-250-chars-with-maps", file("n" * 246 + ".png", encoded()), Works("map name shortened")),
    Case("deep-nesting", file("a/b/c/d/e/f/g/h/deep.png", encoded()), Works("recursive")),
    Case("same-name-two-folders-maps", file("sub/face.png", encoded()), Works("unique map names")),
    Case("folder-named-like-image", lambda f: ((f / "dir.png").mkdir(), [])[-1], Works("not an image file")),
    Case("non-image-files-ignored", file("notes.txt", b"hello"), Works("not reported: not an image format")),
]


def _good_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "face.png").write_bytes(encoded(size=(48, 48)))
    return folder


@params(CASES)
def test_scoring_folder(case: Case, tmp_path, tiny_checkpoint, capsys):
    folder = _good_folder(tmp_path)
    options = case.make(folder)
    maps = tmp_path / "maps"
    code = main(["score", str(folder), "--checkpoint", str(tiny_checkpoint), "--format", "csv", "--quiet",
                 "--maps", str(maps), *options])
    captured = capsys.readouterr()
    rows = captured.out.splitlines()
    assert rows[0] == "path,score"
    assert any(row.startswith(f"{folder / 'face.png'},") for row in rows), "the good file must still be scored"
    assert "Traceback" not in captured.err
    if isinstance(case.expect, Refused):
        assert code == EXIT_SKIPPED, captured.err
        skipped = [line for line in captured.err.splitlines() if line.startswith("skipped:")]
        assert skipped, captured.err
        case.expect.check(" ".join(skipped))
    else:
        assert code == 0, captured.err
        produced = len(list(maps.glob("*_map.png")))
        import csv as csv_module
        records = list(csv_module.reader(io.StringIO(captured.out)))[1:]
        assert produced == len(records), "one map per scored image"
        assert all(np.isfinite(float(score)) and 0 <= float(score) <= 1 for _, score in records)


def test_bomb_then_good_files_every_score_kept_in_json(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        (folder / name).write_bytes(encoded())
    (folder / "b.png").write_bytes(png_declaring(20000, 20000))
    code = main(["score", str(folder), "--checkpoint", str(tiny_checkpoint), "--format", "json", "--quiet",
                 "--batch-size", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_SKIPPED and [Path(r["path"]).name for r in out] == ["a.png", "c.png"]


def test_only_unreadable_files_exit_2(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"junk")
    assert main(["score", str(folder), "--checkpoint", str(tiny_checkpoint), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "skipped:" in err and "error: none of the 1 image(s) could be scored" in err
    shutil.rmtree(folder)
