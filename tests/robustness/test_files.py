"""Paths that are not regular files, and text inputs (JSON, YAML, CSV) built to hang, bloat or confuse a reader.

Every case runs in-process under an alarm: a reader that blocks on a FIFO fails the case instead of hanging.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from ifqa_loss.ablation.config import load_config as load_sweep
from ifqa_loss.annotations import read_annotations
from ifqa_loss.imageio import ImageReadError, check_pixel_count, list_images, read_image
from ifqa_loss.losses.composer import LossComposer
from ifqa_loss.safeio import UnreadableInput, parse_json, parse_yaml, read_json
from ifqa_loss.training.gfiqa import read_meta
from ifqa_loss.weights import CheckpointError, import_checkpoint, load_network, read_manifest

from robustness.case import Case, Refused, Works, params

REGULAR = "not a regular file"


def fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


def unix_socket(tmp: Path, name: str) -> Path:
    path = tmp / name
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    _OPEN.append(server)
    return path


_OPEN: list = []


def link_to(device: str):
    def make(tmp: Path, name: str) -> Path:
        os.symlink(device, tmp / name)
        return tmp / name
    return make


def written(content: bytes | str):
    def make(tmp: Path, name: str) -> Path:
        path = tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path
    return make


def on(reader, maker, name: str):
    """Make the path ``name`` with ``maker(tmp, name)``, then read it with ``reader(path, tmp)``."""
    def make(tmp: Path):
        path = maker(tmp, name)
        return lambda: reader(path, tmp)
    return make


def as_checkpoint(path, tmp):
    return load_network("ifqa", path)


def as_import(path, tmp):
    os.environ["IFQA_LOSS_HOME"] = str(tmp / "home")
    return import_checkpoint(path)


def as_manifest(path, tmp):
    os.environ["IFQA_LOSS_HOME"] = str(tmp)
    return read_manifest()


def as_landmarks(path, tmp):
    return read_annotations(path, "landmarks")


def as_boxes(path, tmp):
    return read_annotations(path, "boxes")


def as_meta(path, tmp):
    return read_meta(path)


def as_image(path, tmp):
    return read_image(path)


def as_image_header(path, tmp):
    return check_pixel_count(path)


def as_listed_image(path, tmp):
    images, problems = list_images([path.parent])
    if problems:
        raise ValueError("; ".join(problems))
    return images


def as_named_image(path, tmp):
    images, problems = list_images([path])
    if problems:
        raise ValueError("; ".join(problems))
    return images


def as_loss_yaml(path, tmp):
    return LossComposer.from_yaml(path)


def as_sweep(path, tmp):
    return load_sweep(path)


def as_run_folder(path, tmp):
    from ifqa_loss.ablation.report import collect

    return collect([path.parent])


def json_text(text: str, limit_depth: int = 64):
    return lambda tmp: (lambda: parse_json(text, "input", limit_depth))


def yaml_text(text: str):
    return lambda tmp: (lambda: parse_yaml(text, "input"))


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
FIVE = [[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]]
GOOD_BOXES = {"loc_left_eye": [8, 8, 14, 12], "loc_right_eye": [18, 8, 24, 12], "loc_mouth": [10, 20, 22, 26]}
LOSS_YAML = "l1:\n  type: L1Loss\n  weight: 1.0\n"


def lm(value) -> str:
    return json.dumps({"a.png": value})


CASES = [
    # --- FIFOs, sockets and devices, wherever a path is read: refused at once, never waited on ------------------
    Case("fifo-as-checkpoint", on(as_checkpoint, fifo, "c.pth"), Refused("named pipe.*" + REGULAR, "regular file")),
    Case("socket-as-checkpoint", on(as_checkpoint, unix_socket, "c.pth"), Refused("socket.*" + REGULAR, "regular")),
    Case("dev-null-as-checkpoint", on(as_checkpoint, lambda t, n: Path("/dev/null"), ""),
         Refused("character device", "regular file")),
    Case("link-to-dev-zero-as-checkpoint", on(as_checkpoint, link_to("/dev/zero"), "c.pth"),
         Refused("character device.*never end", "regular file")),
    Case("link-to-dev-urandom-as-checkpoint", on(as_checkpoint, link_to("/dev/urandom"), "c.safetensors"),
         Refused("character device", "regular file")),
    Case("fifo-as-import-source", on(as_import, fifo, "c.pth"), Refused("named pipe", "regular file")),
    Case("link-to-dev-zero-as-import-source", on(as_import, link_to("/dev/zero"), "c.pth"),
         Refused("character device", "regular file")),
    Case("fifo-as-manifest", on(as_manifest, fifo, "manifest.json"), Refused("named pipe", "import the weights")),
    Case("dev-zero-as-manifest", on(as_manifest, link_to("/dev/zero"), "manifest.json"),
         Refused("character device", "import the weights")),
    Case("fifo-as-landmarks", on(as_landmarks, fifo, "lm.json"), Refused("named pipe", "regular file")),
    Case("dev-zero-as-landmarks", on(as_landmarks, link_to("/dev/zero"), "lm.json"),
         Refused("character device", "regular file")),
    Case("fifo-as-meta", on(as_meta, fifo, "meta.csv"), Refused("meta file.*named pipe", "regular file")),
    Case("dev-zero-as-meta", on(as_meta, link_to("/dev/zero"), "meta.csv"), Refused("character device", "regular")),
    Case("socket-as-meta", on(as_meta, unix_socket, "meta.csv"), Refused("socket", "regular file")),
    Case("fifo-as-image", on(as_image, fifo, "face.png"), Refused("image.*named pipe", "regular file")),
    Case("fifo-image-header", on(as_image_header, fifo, "face.png"), Refused("named pipe", "regular file")),
    Case("dev-zero-as-image", on(as_image_header, link_to("/dev/zero"), "face.png"),
         Refused("character device", "regular file")),
    Case("fifo-in-image-folder", on(as_listed_image, fifo, "face.png"), Refused("named pipe.*not an image file", "")),
    Case("device-link-in-image-folder", on(as_listed_image, link_to("/dev/zero"), "face.jpg"),
         Refused("character device.*not an image file", "")),
    Case("fifo-named-on-command-line", on(as_named_image, fifo, "face.png"), Refused("named pipe", "")),
    Case("fifo-as-loss-yaml", on(as_loss_yaml, fifo, "loss.yaml"), Refused("named pipe", "regular file")),
    Case("fifo-as-sweep-file", on(as_sweep, fifo, "sweep.yaml"), Refused("sweep file.*named pipe", "regular file")),
    Case("dev-zero-as-sweep-file", on(as_sweep, link_to("/dev/zero"), "sweep.yaml"),
         Refused("sweep file.*character device", "regular file")),
    Case("folder-as-sweep-file", on(as_sweep, lambda t, n: t, ""), Refused("sweep file.*is a folder", "YAML file")),
    Case("missing-sweep-file", on(as_sweep, lambda t, n: t / n, "nope.yaml"), Refused("does not exist", "path")),
    # --- JSON: nesting, size, strictness ---------------------------------------------------------------------
    Case("json-nested-100k-deep", json_text(deep_json(100_000)), Refused("nests 100000 levels", "limit is 64")),
    Case("json-nested-65-deep", json_text(deep_json(65)), Refused("nests 65 levels", "limit")),
    Case("json-nested-64-deep", json_text(deep_json(64)), Works("at the limit")),
    Case("json-brackets-inside-strings", json_text(json.dumps({"k": "[" * 1000})), Works("strings are not nesting")),
    Case("json-nan", json_text('{"a": NaN}'), Refused("NaN, which is not JSON", "number")),
    Case("json-infinity", json_text('[Infinity]'), Refused("Infinity", "number")),
    Case("json-duplicate-key", json_text('{"a": 1, "a": 2}'), Refused("names 'a' twice", "keep one")),
    Case("json-cut-short", json_text('{"a": [1, 2'), Refused("not valid JSON.*line 1", "fix")),
    Case("manifest-nested-deep", on(as_manifest, written(deep_json(5000)), "manifest.json"),
         Refused("corrupt.*nests", "import the weights")),
    Case("manifest-over-1mib", on(as_manifest, written('{"pad": "' + "x" * (1 << 20) + '"}'), "manifest.json"),
         Refused("larger than 1 MiB", "import the weights")),
    Case("manifest-duplicate-metric", on(as_manifest, written('{"ifqa": {"file": "a", "sha256": "b"}, "ifqa": '
                                                               '{"file": "c", "sha256": "d"}}'), "manifest.json"),
         Refused("names 'ifqa' twice", "import the weights")),
    Case("manifest-utf16", on(as_manifest, written('{}'.encode("utf-16")), "manifest.json"),
         Refused("UTF-16", "import the weights")),
    Case("run-config-cut-short", on(as_run_folder, written('{"seeds": [0'), "config.json"),
         Refused("config.json.*not valid JSON", "restore it from config.yaml")),
    Case("run-config-duplicate-key", on(as_run_folder, written('{"seeds": [0], "seeds": [1]}'), "config.json"),
         Refused("names 'seeds' twice", "restore it from config.yaml")),
    Case("run-config-not-a-mapping", on(as_run_folder, written("[]"), "config.json"),
         Refused("config.json holds a list", "restore it from config.yaml")),
    # --- YAML: aliases cannot expand without bound -----------------------------------------------------------
    Case("yaml-billion-laughs", yaml_text(LAUGHS), Refused("expands to more than 1000000 values", "write the values")),
    Case("yaml-billion-laughs-loss-config", on(as_loss_yaml, written(LAUGHS), "loss.yaml"),
         Refused("billion laughs", "write the values")),
    Case("yaml-recursive-alias", yaml_text("a: &a [*a]\n"), Refused("recursive alias|not valid YAML", "")),
    Case("yaml-nested-deep", yaml_text("[" * 200 + "]" * 200), Refused("more than 64 levels", "")),
    Case("yaml-nested-100k-deep", yaml_text("[" * 100_000 + "]" * 100_000), Refused("more than 64 levels", "")),
    Case("yaml-python-tag", yaml_text("a: !!python/object/apply:os.system [echo]\n"),
         Refused("not plain YAML data.*python", "plain values")),
    Case("yaml-billion-laughs-sweep", on(as_sweep, written(LAUGHS), "sweep.yaml"),
         Refused("sweep file.*expands to more than 100000 values", "write the values")),
    Case("yaml-sweep-nested-33-deep", on(as_sweep, written("a: " + "[" * 33 + "]" * 33), "sweep.yaml"),
         Refused("sweep file.*more than 32 levels", "")),
    Case("yaml-sweep-over-1mib", on(as_sweep, written("# " + "x" * (1 << 20) + "\n"), "sweep.yaml"),
         Refused("sweep file.*larger than 1 MiB", "right file")),
    Case("yaml-sweep-nan-weight", on(as_sweep, written("sweep: [{metric: ifqa, weights: [.nan]}]\n"), "sweep.yaml"),
         Refused(r"sweep\[0\]\.weights\[0\] must be a finite number", "")),
    Case("yaml-few-aliases", yaml_text("a: &a [1, 2]\nb: *a\nc: *a\n"), Works("aliases within the limit")),
    Case("yaml-not-utf8", on(as_loss_yaml, written("terms: {caf\xe9: 1}\n".encode("latin-1")), "loss.yaml"),
         Refused("not UTF-8.*0xe9.*line 1", "iconv")),
    Case("yaml-good-loss-config", on(as_loss_yaml, written(LOSS_YAML), "loss.yaml"), Works("builds the terms")),
    # --- text encodings: the message names the problem --------------------------------------------------------
    Case("meta-latin1", on(as_meta, written("name,mos\ncaf\xe9.png,0.5\n".encode("latin-1")), "meta.csv"),
         Refused("not UTF-8 text: byte 0xe9 at offset 12 \\(line 2\\)", "save it as UTF-8")),
    Case("meta-windows-1252", on(as_meta, written("name,mos\n\u201cx\u201d.png,0.5\n".encode("cp1252")), "m.csv"),
         Refused("not UTF-8.*0x93", "UTF-8")),
    Case("meta-utf16", on(as_meta, written("name,mos\na.png,0.5\n".encode("utf-16")), "meta.csv"),
         Refused("UTF-16", "iconv")),
    Case("meta-binary", on(as_meta, written(bytes(range(256))), "meta.csv"), Refused("not UTF-8", "UTF-8")),
    Case("meta-utf8-bom", on(as_meta, written("\ufeffname,mos\na.png,0.5\n".encode()), "meta.csv"),
         Works("the byte-order mark is dropped")),
    Case("landmarks-latin1", on(as_landmarks, written('{"caf\xe9.png": []}'.encode("latin-1")), "lm.json"),
         Refused("not UTF-8", "UTF-8")),
    # --- landmarks files: each image's entry in the expected form --------------------------------------------
    Case("landmarks-five-points", on(as_landmarks, written(lm(FIVE)), "lm.json"), Works("5 points")),
    Case("landmarks-68-points", on(as_landmarks, written(lm([[i, i % 7] for i in range(68)])), "lm.json"),
         Works("68 points")),
    Case("landmarks-boxes", on(as_boxes, written(lm(GOOD_BOXES)), "lm.json"), Works("GFP-GAN boxes")),
    Case("landmarks-four-points", on(as_landmarks, written(lm(FIVE[:4])), "lm.json"),
         Refused("image 'a.png'.*5 or 68 \\[x, y\\].*got 4 entries", "")),
    Case("landmarks-point-of-three", on(as_landmarks, written(lm([[1, 2, 3]] + FIVE[1:])), "lm.json"),
         Refused("image 'a.png'.*point 0 = \\[1, 2, 3\\]", "two finite numbers")),
    Case("landmarks-string-coordinate", on(as_landmarks, written(lm([["1", 2]] + FIVE[1:])), "lm.json"),
         Refused("image 'a.png'.*point 0", "finite numbers")),
    Case("landmarks-bool-coordinate", on(as_landmarks, written(lm([[True, 2]] + FIVE[1:])), "lm.json"),
         Refused("point 0", "finite numbers")),
    Case("landmarks-overflow-to-inf", on(as_landmarks, written('{"a.png": [[1e400, 2]' + ", [3, 4]" * 4 + "]}"),
                                          "lm.json"), Refused("image 'a.png'.*point 0", "finite")),
    Case("landmarks-nan-literal", on(as_landmarks, written('{"a.png": [[NaN, 2]]}'), "lm.json"),
         Refused("NaN, which is not JSON", "number")),
    Case("landmarks-coincident", on(as_landmarks, written(lm([[5, 5]] * 5)), "lm.json"),
         Refused("image 'a.png'.*one spot or one line", "")),
    Case("landmarks-on-a-line", on(as_landmarks, written(lm([[i, 3] for i in range(5)])), "lm.json"),
         Refused("one spot or one line", "")),
    Case("landmarks-top-level-list", on(as_landmarks, written(json.dumps([FIVE])), "lm.json"),
         Refused("holds a JSON list", "image name")),
    Case("landmarks-entry-a-dict", on(as_landmarks, written(lm({"x": 1})), "lm.json"),
         Refused("image 'a.png'.*got a dict", "")),
    Case("landmarks-missing-file", on(as_landmarks, lambda t, n: t / n, "none.json"),
         Refused("does not exist", "--landmarks")),
    Case("boxes-missing-mouth", on(as_boxes, written(lm({k: GOOD_BOXES[k] for k in list(GOOD_BOXES)[:2]})),
                                   "lm.json"), Refused("image 'a.png'.*no \\['loc_mouth'\\]", "loc_left_eye")),
    Case("boxes-three-numbers", on(as_boxes, written(lm({**GOOD_BOXES, "loc_mouth": [1, 2, 3]})), "lm.json"),
         Refused("loc_mouth = \\[1, 2, 3\\]", "4 finite numbers")),
    Case("boxes-empty-box", on(as_boxes, written(lm({**GOOD_BOXES, "loc_left_eye": [14, 8, 8, 12]})), "lm.json"),
         Refused("loc_left_eye.*empty box", "x2 > x1")),
    Case("landmarks-file-nested-deep", on(as_landmarks, written('{"a.png": ' + deep_json(50) + "}"), "lm.json"),
         Refused("nests 51 levels", "")),
]


@pytest.fixture(autouse=True)
def alarm():
    """A reader that blocks fails the case after 20 s instead of hanging the suite."""
    def hung(signum, frame):
        raise TimeoutError("the reader blocked: it waited on a pipe or device")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    while _OPEN:
        _OPEN.pop().close()


@params(CASES)
def test_file_input(case: Case, tmp_path, monkeypatch):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "home"))  # restored after the cases that repoint it
    run = case.make(tmp_path)
    started = time.perf_counter()
    if isinstance(case.expect, Refused):
        with pytest.raises((ValueError, CheckpointError, UnreadableInput, ImageReadError)) as info:
            run()
        case.expect.check(str(info.value))
        assert time.perf_counter() - started < 5, "refused at once, not after a wait"
    else:
        run()


def test_read_json_names_the_file_and_keeps_the_limit(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"a": "x" * 100}))
    with pytest.raises(UnreadableInput, match="m.json' is larger than 0 MiB"):
        read_json(path, "manifest", limit=50)
