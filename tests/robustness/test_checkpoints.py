"""Hostile and faulty weight files: each is refused naming the problem and the fix, or loads unchanged."""
from __future__ import annotations

import bz2
import copy
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from ifqa_loss.weights import CheckpointError, load_network, sha256_file

from robustness.case import Case, Refused, Works, params

REDOWNLOAD = "download it again|re-download"
SAVE_AGAIN = "save the checkpoint again|save"


class _RunsCode:
    """Unpickling this would call ``target(*args)``: a checkpoint that carries code."""

    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return (self.target, self.args)


def torch_file(edit=None, *, legacy=False, name="c.pth"):
    """A checkpoint file: the tiny payload after ``edit(payload)`` (which may return a replacement)."""
    def make(tmp: Path, payload: dict):
        obj = copy.copy(payload)
        obj["D"] = dict(payload["D"])
        obj["config"] = dict(payload["config"])
        if edit is not None:
            replaced = edit(obj)
            obj = obj if replaced is None else replaced
        path = tmp / name
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        return path, {}
    return make


def tensor(key_edit):
    """Edit one tensor of the state dict: ``key_edit(state_dict)``."""
    def edit(obj):
        key_edit(obj["D"])
    return torch_file(edit)


def config(**values):
    def edit(obj):
        obj["config"].update(values)
    return torch_file(edit)


def raw(content: bytes | None = None, name="c.pth", derive=None):
    """A file of the given bytes, or ``derive(good_bytes)`` of the good checkpoint."""
    def make(tmp: Path, payload: dict):
        path = tmp / name
        if derive is not None:
            good = io.BytesIO()
            torch.save(payload, good)
            data = derive(good.getvalue())
        else:
            data = content
        path.write_bytes(data)
        return path, {}
    return make


def legacy_cut(fraction: float):
    def make(tmp: Path, payload: dict):
        path = tmp / "legacy.pth"
        torch.save(payload, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path, {}
    return make


def safetensors_file(edit_sd=None, metadata=None, derive=None):
    def make(tmp: Path, payload: dict):
        path = tmp / "w.safetensors"
        state_dict = {k: v.clone() for k, v in payload["D"].items()}
        if edit_sd:
            edit_sd(state_dict)
        meta = {"metric": "ifqa", "config": json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in payload["config"].items()})}
        if metadata is not None:
            meta.update(metadata)
        save_file(state_dict, str(path), metadata=meta)
        if derive:
            path.write_bytes(derive(path.read_bytes()))
        return path, {}
    return make


def pinned(digest_of):
    def make(tmp: Path, payload: dict):
        path = tmp / "c.pth"
        torch.save(payload, path)
        return path, {"sha256": digest_of(path)}
    return make


def link(kind: str):
    def make(tmp: Path, payload: dict):
        path = tmp / "c.pth"
        if kind == "loop":
            os.symlink(tmp / "other.pth", path)
            os.symlink(path, tmp / "other.pth")
        elif kind == "broken":
            os.symlink(tmp / "gone.pth", path)
        elif kind == "good":
            torch.save(payload, tmp / "real.pth")
            os.symlink(tmp / "real.pth", path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "missing":
            pass
        return path, {}
    return make


def archive(kind: str):
    def derive(good: bytes) -> bytes:
        if kind == "gzip":
            return gzip.compress(good)
        if kind == "bz2":
            return bz2.compress(good)
        if kind == "xz":
            return lzma.compress(good)
        buffer = io.BytesIO()
        if kind == "tar":
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo("IFQA_Metric.pth")
                info.size = len(good)
                tar.addfile(info, io.BytesIO(good))
        elif kind == "zip":  # a plain zip archive holding the file (not torch's own zip layout)
            with zipfile.ZipFile(buffer, "w") as zf:
                zf.writestr("IFQA_Metric.pth", good)
        return buffer.getvalue()
    return raw(derive=derive)


def _set(key, value):
    def edit(sd):
        sd[key] = value(sd[key])
    return edit


FIRST = "encoder128.conv1.weight"
DTYPE_FIX = "float16/bfloat16/float32/float64"

CASES = [
    # --- not a checkpoint at all -----------------------------------------------------------------------------
    Case("empty-file", raw(b""), Refused("empty", REDOWNLOAD)),
    Case("one-byte", raw(b"\x80"), Refused("could not be read", REDOWNLOAD)),
    Case("html-quota-page", raw(b"<!DOCTYPE html><html><title>Quota exceeded</title></html>"),
         Refused("web page", "download the file itself")),
    Case("html-lowercase-with-whitespace", raw(b"\n\n  <html><body>Google Drive - Virus scan warning</body>"),
         Refused("web page", "download the file itself")),
    Case("html-sign-in-page", raw(b"<head><meta charset='utf-8'></head><body>Sign in</body>"),
         Refused("web page", "download the file itself")),
    Case("xml-error", raw(b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"),
         Refused("web page", "download the file itself")),
    Case("gzip-compressed", archive("gzip"), Refused("gzip", "gunzip")),
    Case("bzip2-compressed", archive("bz2"), Refused("bzip2", "bunzip2")),
    Case("xz-compressed", archive("xz"), Refused("xz", "unxz")),
    Case("tar-archive", archive("tar"), Refused("tar archive", "extract")),
    Case("plain-zip-archive", archive("zip"), Refused("could not be read", REDOWNLOAD)),
    Case("png-image", raw(b"\x89PNG\r\n\x1a\n" + bytes(64)), Refused("PNG image", "weight file")),
    Case("jpeg-image", raw(b"\xff\xd8\xff\xe0" + bytes(64)), Refused("JPEG image", "weight file")),
    Case("random-bytes", raw(bytes(range(256)) * 8), Refused("could not be read", REDOWNLOAD)),
    Case("text-file", raw(b"IFQA weights: see the README\n"), Refused("text file.*not a checkpoint", "weight file")),
    Case("json-file", raw(b'{"D": {"w": [1, 2]}}'), Refused("text file.*not a checkpoint", "weight file")),
    # --- cut short -------------------------------------------------------------------------------------------
    *(Case(f"zip-cut-at-{int(f * 100)}pct", raw(derive=lambda b, f=f: b[: int(len(b) * f)]),
           Refused("could not be read", REDOWNLOAD)) for f in (0.01, 0.1, 0.5, 0.9, 0.99)),
    *(Case(f"legacy-cut-at-{int(f * 100)}pct", legacy_cut(f), Refused("could not be read", REDOWNLOAD))
      for f in (0.05, 0.5, 0.95)),
    Case("zip-with-flipped-bytes", raw(derive=lambda b: b[:200] + bytes(x ^ 0xFF for x in b[200:400]) + b[400:]),
         Refused("could not be read|NaN|not a state dict", "download|earlier|expected")),
    # --- pickles that carry code -----------------------------------------------------------------------------
    Case("code-os-system", torch_file(lambda o: {"D": _RunsCode(os.system, "true")}),
         Refused("refused.*code.*os.system|refused.*code.*posix.system", "state_dict")),
    Case("code-path-touch", torch_file(lambda o: {"D": _RunsCode(Path.touch, Path("/tmp/ifqa-robustness-code-ran"))}),
         Refused("refused.*code", "state_dict")),
    Case("code-builtins-eval", torch_file(lambda o: {"D": _RunsCode(eval, "1+1")}),
         Refused("refused.*code.*eval", "state_dict")),
    Case("code-subprocess", torch_file(lambda o: {"D": _RunsCode(subprocess.Popen, ["true"])}),
         Refused("refused.*code.*Popen", "state_dict")),
    Case("code-legacy-format", torch_file(lambda o: {"D": _RunsCode(os.system, "true")}, legacy=True),
         Refused("refused.*code", "state_dict")),
    Case("code-plain-pickle-protocol-2", raw(pickle.dumps({"D": _RunsCode(os.system, "true")}, protocol=2)),
         Refused("refused.*code.*system", "state_dict")),
    Case("code-plain-pickle-protocol-5", raw(pickle.dumps({"D": _RunsCode(os.system, "true")}, protocol=5)),
         Refused("could not be read", REDOWNLOAD)),
    Case("code-beside-weights", torch_file(lambda o: {**o, "hook": _RunsCode(os.system, "true")}),
         Refused("refused.*code", "state_dict")),
    Case("numpy-array-object", torch_file(lambda o: {"D": {"w": __import__("numpy").zeros(3)}}),
         Refused("refused|not a state dict", "state_dict|expected")),
    # --- right container, wrong content ----------------------------------------------------------------------
    Case("pickled-list", torch_file(lambda o: [1, 2, 3]), Refused("holds a list", "state dict")),
    Case("pickled-int", torch_file(lambda o: 7), Refused("holds a int", "state dict")),
    Case("pickled-string", torch_file(lambda o: "weights"), Refused("holds a str", "state dict")),
    Case("pickled-none", torch_file(lambda o: {"D": None}), Refused("not a state dict", "expected")),
    Case("empty-dict", torch_file(lambda o: {}), Refused("not a state dict", "expected")),
    Case("empty-state-dict", torch_file(lambda o: {"D": {}}), Refused("not a state dict", "expected")),
    Case("dict-of-numbers", torch_file(lambda o: {"D": {"epoch": 3}}), Refused("not a state dict", "expected")),
    Case("bare-tensor", torch_file(lambda o: torch.zeros(3)), Refused("holds a Tensor", "state dict")),
    Case("missing-tensor", tensor(lambda sd: sd.pop(FIRST)), Refused("missing keys.*encoder128", "")),
    Case("extra-tensor", tensor(lambda sd: sd.__setitem__("extra.weight", torch.zeros(1))),
         Refused("unexpected keys.*extra.weight", "")),
    Case("wrong-shape", tensor(_set(FIRST, lambda t: torch.zeros(3, 3, 1, 1))),
         Refused(f"wrong shapes.*{FIRST}", "")),
    Case("dataparallel-prefix", torch_file(lambda o: {**o, "D": {f"module.{k}": v for k, v in o["D"].items()}}),
         Refused("module\\.", "model.module.state_dict|removeprefix")),
    Case("other-metric-recorded", torch_file(lambda o: {**o, "metric": "ifqa++"}), Refused("ifqa\\+\\+", "pass")),
    Case("unknown-metric-recorded", torch_file(lambda o: {**o, "metric": "ifqa-9000"}),
         Refused("ifqa-9000.*does not know", "newer version|damaged")),
    Case("metric-not-a-string", torch_file(lambda o: {**o, "metric": 42}), Works("ignored; config still applies")),
    # --- tensors no network holds ----------------------------------------------------------------------------
    Case("nan-weight", tensor(_set(FIRST, lambda t: t.index_fill(0, torch.tensor([0]), float("nan")))),
         Refused(f"{FIRST}.*NaN", "earlier checkpoint")),
    Case("inf-weight", tensor(_set(FIRST, lambda t: t.index_fill(0, torch.tensor([0]), float("inf")))),
         Refused(f"{FIRST}.*Inf", "earlier checkpoint")),
    Case("minus-inf-bias", tensor(_set("encoder128.conv1.bias", lambda t: t - float("inf"))),
         Refused("encoder128.conv1.bias.*NaN or Inf", "earlier checkpoint")),
    Case("all-nan", tensor(lambda sd: sd.update({k: torch.full_like(v, float("nan")) for k, v in sd.items()})),
         Refused("tensors.*NaN", "earlier checkpoint")),
    *(Case(f"dtype-{str(dt).removeprefix('torch.')}", tensor(_set(FIRST, lambda t, dt=dt: t.to(dt))),
           Refused(f"{FIRST}.*{str(dt).removeprefix('torch.')}", DTYPE_FIX))
      for dt in (torch.int8, torch.uint8, torch.int16, torch.bool, torch.complex64, torch.float8_e4m3fn,
                 torch.float8_e5m2)),
    Case("sparse-coo", tensor(_set(FIRST, lambda t: t.to_sparse())), Refused(f"{FIRST}.*sparse", "to_dense")),
    Case("sparse-csr", tensor(_set("encoder128.norm1.weight", lambda t: t[None].to_sparse_csr())),
         Refused("encoder128.norm1.weight.*sparse", "to_dense")),
    Case("quantized", tensor(_set(FIRST, lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8))),
         Refused(f"{FIRST}.*quantized", "dequantize")),
    Case("meta-tensor", tensor(_set(FIRST, lambda t: t.to("meta"))), Refused(f"{FIRST}.*meta", "cpu")),
    Case("float16-weights", tensor(lambda sd: sd.update({k: v.half() for k, v in sd.items()})), Works("fp16 file")),
    Case("bfloat16-weights", tensor(lambda sd: sd.update({k: v.bfloat16() for k, v in sd.items()})),
         Works("bf16 file")),
    Case("float64-weights", tensor(lambda sd: sd.update({k: v.double() for k, v in sd.items()})), Works("fp64")),
    Case("non-contiguous-weight", tensor(_set(FIRST, lambda t: t.transpose(0, 1).contiguous().transpose(0, 1))),
         Works("strided views load")),
    # --- stored configuration: checked before anything is built ----------------------------------------------
    Case("config-unknown-argument", config(depth=12), Refused("unknown architecture argument 'depth'", "version")),
    Case("config-negative", config(num_bottleneck=-1), Refused("num_bottleneck=-1 is out of range", SAVE_AGAIN)),
    Case("config-zero", config(num_bottleneck=0), Refused("num_bottleneck=0 is out of range", SAVE_AGAIN)),
    Case("config-huge-int", config(num_bottleneck=10**12), Refused("num_bottleneck=.*out of range", SAVE_AGAIN)),
    Case("config-bool", config(num_bottleneck=True), Refused("num_bottleneck=True is a bool", SAVE_AGAIN)),
    Case("config-float-for-int", config(num_bottleneck=1.5), Refused("num_bottleneck=1.5 is a float", SAVE_AGAIN)),
    Case("config-string-for-int", config(num_bottleneck="4"), Refused("num_bottleneck='4' is a str", SAVE_AGAIN)),
    Case("config-list-of-200k", config(widths=[4] * 200_000),
         Refused("widths=.* is a list of 200000 entries", SAVE_AGAIN)),
    Case("config-list-with-negative", config(widths=[4, 8, -8, 16, 16]), Refused("widths=.*-8", SAVE_AGAIN)),
    Case("config-list-with-string", config(widths=[4, 8, "8", 16, 16]), Refused("widths=.*'8'", SAVE_AGAIN)),
    Case("config-list-empty", config(widths=[]), Refused("widths=\\(\\) is a list of 0 entries", SAVE_AGAIN)),
    Case("config-widths-not-a-list", config(widths=64), Refused("widths=64 is a int", SAVE_AGAIN)),
    Case("config-four-widths", config(widths=[4, 8, 8, 16]), Refused("does not build.*5 encoder widths", SAVE_AGAIN)),
    Case("config-far-larger-network", config(widths=[4096] * 5, num_bottleneck=64),
         Refused("far larger than the weights the file stores", SAVE_AGAIN)),
    Case("config-slightly-wider", config(widths=[4, 8, 8, 16, 32]), Refused("wrong shapes", "")),
    Case("config-is-a-list", torch_file(lambda o: {**o, "config": [1, 2]}), Refused("config.*list", SAVE_AGAIN)),
    Case("config-is-a-string", torch_file(lambda o: {**o, "config": "widths=4"}), Refused("config.*str", SAVE_AGAIN)),
    Case("config-non-string-key", torch_file(lambda o: {**o, "config": {1: 2}}), Refused("config", SAVE_AGAIN)),
    # --- safetensors -----------------------------------------------------------------------------------------
    Case("safetensors-good", safetensors_file(), Works("the import format")),
    Case("safetensors-nan", safetensors_file(lambda sd: sd[FIRST].fill_(float("nan"))),
         Refused(f"{FIRST}.*NaN", "earlier checkpoint")),
    Case("safetensors-int8", safetensors_file(lambda sd: sd.__setitem__(FIRST, sd[FIRST].to(torch.int8))),
         Refused(f"{FIRST}.*int8", DTYPE_FIX)),
    Case("safetensors-cut", safetensors_file(derive=lambda b: b[: len(b) // 2]),
         Refused("not a readable safetensors", "re-download|re-import")),
    Case("safetensors-header-length-huge", safetensors_file(derive=lambda b: struct.pack("<Q", 2**40) + b[8:]),
         Refused("not a readable safetensors", "re-download|re-import")),
    Case("safetensors-header-not-json", safetensors_file(derive=lambda b: b[:8] + b"{" + b"\xff" * 20 + b[29:]),
         Refused("not a readable safetensors", "re-download|re-import")),
    Case("safetensors-config-not-json", safetensors_file(metadata={"config": "{widths: 4"}),
         Refused("metadata 'config' is not JSON", "re-import")),
    Case("safetensors-config-a-list", safetensors_file(metadata={"config": "[4, 8]"}),
         Refused("config.*list", SAVE_AGAIN)),
    Case("safetensors-config-hostile", safetensors_file(metadata={"config": json.dumps({"widths": [4] * 10**6})}),
         Refused("1000000 entries", SAVE_AGAIN)),
    Case("safetensors-unknown-metric", safetensors_file(metadata={"metric": "gfiqa-xl"}),
         Refused("gfiqa-xl.*does not know", "newer version|damaged")),
    Case("safetensors-named-pth", safetensors_file(derive=lambda b: b), Works("recognised by content too")),
    # --- paths -----------------------------------------------------------------------------------------------
    Case("missing-path", link("missing"), Refused("does not exist", "check the path")),
    Case("folder-path", link("folder"), Refused("is a folder", "weight file in it")),
    Case("broken-symlink", link("broken"), Refused("broken symbolic link", "check the path")),
    Case("symlink-loop", link("loop"), Refused("symbolic link loop", "real file")),
    Case("symlink-to-good-file", link("good"), Works("links are followed")),
    # --- pinned sha256 ---------------------------------------------------------------------------------------
    Case("sha256-pin-matches", pinned(sha256_file), Works("the pinned file")),
    Case("sha256-pin-uppercase", pinned(lambda p: sha256_file(p).upper()), Works("hex in any case")),
    Case("sha256-pin-differs", pinned(lambda p: "0" * 64), Refused("sha256 is .* expected 0{64}", "download")),
    Case("sha256-pin-malformed", pinned(lambda p: "abc"), Refused("not 64 hexadecimal digits", "")),
    # --- text and other files that are not checkpoints: called what they are -----------------------------------
    Case("text-readme-markdown", raw(b"# IFQA weights\n\nDownload from Google Drive.\n"),
         Refused("text file \\(it begins '# IFQA weights'\\), not a checkpoint", "weight file itself")),
    Case("text-csv", raw(b"name,mos\na.png,0.5\n"), Refused("text file.*not a checkpoint", "\\.pth or \\.safetensors")),
    Case("text-python-source", raw(b"import torch\nmodel = torch.load('x.pth')\n"), Refused("text file", "weight")),
    Case("text-yaml", raw(b"metric: ifqa\nwidths: [4, 8]\n"), Refused("text file", "weight file")),
    Case("text-unicode", raw("Gewichte f\u00fcr IFQA \u2014 siehe README\n".encode()), Refused("text file", "weight")),
    Case("text-sha256-file", raw(b"a" * 64 + b"  IFQA_Metric.pth\n"), Refused("text file", "weight file")),
    Case("text-git-lfs-pointer", raw(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n"),
         Refused("text file.*not a checkpoint", "weight file")),
    Case("text-named-safetensors", raw(b"not weights\n", name="w.safetensors"), Refused("text file|not a readable",
                                                                                       "weight|re-download")),
    # --- safetensors headers: one name, one tensor -----------------------------------------------------------
    Case("safetensors-duplicate-tensor-name", safetensors_file(derive=lambda b: duplicate_name(b)),
         Refused("names the tensor\\(s\\) \\['encoder128.conv1.weight'\\] twice", "re-download|re-import")),
    Case("safetensors-duplicate-bias-name",
         safetensors_file(derive=lambda b: duplicate_name(b, "encoder128.conv1.bias")),
         Refused("\\['encoder128.conv1.bias'\\] twice", "re-download|re-import")),
    # --- tensors that are views of a few bytes ---------------------------------------------------------------
    Case("broadcast-view-weight", tensor(_set(FIRST, lambda t: torch.ones(1).expand(t.shape))),
         Refused(f"{FIRST}.*declares more values than the file stores", "contiguous")),
    Case("broadcast-view-huge", torch_file(lambda o: {"D": {"w": torch.zeros(1).expand(10**12)}}),
         Refused("declares more values", "contiguous")),
    Case("shared-storage-slices-load", tensor(_set(FIRST, lambda t: torch.cat([t.flatten(), t.flatten()])[:t.numel()]
                                                   .view(t.shape))), Works("a slice of a larger storage is data")),
    # --- legacy (non-zip) files within their bound -----------------------------------------------------------
    Case("legacy-format-good", torch_file(legacy=True), Works("the old serialisation still loads")),
    Case("legacy-format-float16", torch_file(lambda o: {**o, "D": {k: v.half() for k, v in o["D"].items()}},
                                             legacy=True), Works("element sizes of each storage type")),
]


def duplicate_name(data: bytes, key: str = FIRST) -> bytes:
    """The safetensors header with its entry ``key`` written twice (same length: the offsets stay valid)."""
    size = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + size].decode()
    start = header.index(f'"{key}"')
    end = header.index("}", start) + 1
    entry = header[start:end]
    padded = (header.rstrip()[:-1] + "," + entry + "}").encode()
    return struct.pack("<Q", len(padded)) + padded + data[8 + size:]


@params(CASES)
def test_weight_file(case: Case, tmp_path, tiny_payload, tiny_checkpoint):
    path, options = case.make(tmp_path, tiny_payload)
    marker_free = set(os.listdir(tmp_path))
    if isinstance(case.expect, Refused):
        try:
            load_network("ifqa", path, **options)
        except (CheckpointError, ValueError) as exc:
            case.expect.check(str(exc))
        else:
            raise AssertionError(f"{case.id}: loaded, but must be refused")
    else:
        net, _ = load_network("ifqa", path, **options)
        loaded = net.state_dict()
        assert loaded.keys() == tiny_payload["D"].keys()
        for key, value in tiny_payload["D"].items():  # every value arrives (at the file's precision)
            torch.testing.assert_close(loaded[key].float(), value.float(), rtol=1e-2, atol=1e-2)
        assert not any(t.is_meta for t in loaded.values())
    assert set(os.listdir(tmp_path)) == marker_free, "loading must not create files (no code ran)"
