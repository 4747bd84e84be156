"""Small hostile checkpoints that would make ``torch.load`` take gigabytes (or hours): refused from their zip central
directory or pickle opcodes before anything is inflated or allocated.

The bombs are built here (streamed, a few MB on disk each) and loaded in ONE child process whose address space is
capped at its start-up size + 1 GiB (``resource.setrlimit``): a regression fails with an allocation error instead
of taking the machine's memory. The child reports each case's peak-RSS growth and time; both are asserted, and
for the memory bombs the same file handed to ``torch.load`` itself is shown to need more than the cap.
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from robustness.case import Case, Refused, Works, params

GiB = 1 << 30
CHUNK = 16 << 20
CRC_2GIB_ZEROS = 0x4DBDF21C  # zlib.crc32 of 2 GiB of zero bytes (precomputed: 2 s to compute here)


def _zeros_deflated(total: int, prefix: bytes = b"") -> tuple[bytes, int]:
    """Raw deflate of ``prefix`` + ``total`` zero bytes, built from one compressed 16 MiB block repeated (each block
    ends with a full flush, so the copies are independent): milliseconds instead of compressing gigabytes."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)] if prefix else []
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = block.compress(bytes(CHUNK)) + block.flush(zlib.Z_FULL_FLUSH)
    assert total % CHUNK == 0
    out += [one] * (total // CHUNK)
    out.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())
    return b"".join(out), len(prefix) + total


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip of ``(name, stored bytes, method, crc, uncompressed size)`` members (what zipfile cannot write
    without compressing the data itself)."""
    body, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset = body.tell()
        raw = name.encode()
        body.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0))
        body.write(raw + data)
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                                  len(raw), 0, 0, 0, 0, 0, offset) + raw)
    directory = central.getvalue()
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), body.tell(), 0)
    path.write_bytes(body.getvalue() + directory + end)


def _torch_members(obj) -> list[tuple[str, bytes]]:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def zip_data_bomb(path: Path) -> None:
    """A torch zip whose tensor record inflates to 2 GiB (the pickle says 4 floats)."""
    members = []
    for name, data in _torch_members({"D": {"w": torch.zeros(4)}}):
        if name.endswith("data/0"):
            deflated, size = _zeros_deflated(2 * GiB)
            members.append((name, deflated, zipfile.ZIP_DEFLATED, CRC_2GIB_ZEROS, size))
        else:
            members.append((name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    _write_zip(path, members)


def pickle_padding_bomb(path: Path) -> None:
    """A torch zip whose data.pkl is the real pickle followed by 256 MiB of padding, deflated."""
    members = []
    for name, data in _torch_members({"D": {"w": torch.zeros(4)}}):
        if name.endswith("data.pkl"):
            deflated, size = _zeros_deflated(256 << 20, prefix=data)
            crc = zlib.crc32(data)
            for _ in range((256 << 20) // CHUNK):
                crc = zlib.crc32(bytes(CHUNK), crc)
            members.append((name, deflated, zipfile.ZIP_DEFLATED, crc, size))
        else:
            members.append((name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    _write_zip(path, members)


def legacy_declaring(numel: int, storages: int = 1):
    """A legacy (non-zip) file whose pickle declares ``numel`` floats for its last storage (it stores 10)."""
    def make(path: Path) -> None:
        buffer = io.BytesIO()
        torch.save({f"w{i}": torch.zeros(10) for i in range(storages)}, buffer, _use_new_zipfile_serialization=False)
        data = buffer.getvalue()
        stream = io.BytesIO(data)
        for _ in range(3):  # magic number, protocol, system info
            list(pickletools.genops(stream))
        start = stream.tell()
        ops = list(pickletools.genops(io.BytesIO(data[start:])))
        last = max(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
        op, arg, pos = next(ops[j] for j in range(last, 0, -1) if ops[j][0].name.startswith("BININT"))
        assert op.name == "BININT1" and arg == 10, (op.name, arg)
        at = start + pos
        path.write_bytes(data[:at] + b"J" + struct.pack("<i", numel) + data[at + 2:])
    return make


def zero_stride(path: Path) -> None:
    """A 4-byte storage posing as a 10^12-element tensor (a broadcast view): checking it would take hours."""
    torch.save({"D": {"w": torch.zeros(1).expand(10**12)}}, path)


def recompressed_good(path: Path) -> None:
    """A real (tiny) checkpoint whose members were deflated by a zip tool: within the bound, it loads."""
    members = []
    for name, data in _torch_members({"D": {"w": torch.arange(64.0)}}):
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        deflated = packer.compress(data) + packer.flush()
        members.append((name, deflated, zipfile.ZIP_DEFLATED, zlib.crc32(data), len(data)))
    _write_zip(path, members)


CASES = [
    Case("zip-member-inflating-to-2gib", zip_data_bomb, Refused("would inflate to 2147483\\d+ bytes", "zip bomb")),
    Case("data-pkl-padded-to-256mib", pickle_padding_bomb, Refused("data.pkl would inflate", "zip bomb")),
    Case("legacy-declaring-8gib", legacy_declaring(2**31 - 1), Refused("declares 8589934\\d+ bytes", "download")),
    Case("legacy-declaring-8gib-in-third-storage", legacy_declaring(2**31 - 1, storages=3),
         Refused("declares 85899\\d+ bytes", "download")),
    Case("legacy-declaring-just-over-its-size", legacy_declaring(2000), Refused("declares 80\\d\\d bytes", "cut")),
    Case("zero-stride-10e12-elements", zero_stride, Refused("declares more values than the file stores", "contiguous")),
    Case("zip-recompressed-by-a-tool", recompressed_good, Works("deflated members within the bound load")),
]
MEMORY_BOMBS = {"zip-member-inflating-to-2gib", "data-pkl-padded-to-256mib", "legacy-declaring-8gib"}

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    from ifqa_loss.weights import CheckpointError, read_checkpoint

    def vm_bytes():
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:"))

    cap = vm_bytes() + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = {}
    for name, path, raw in json.loads(sys.argv[1]):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        started = time.perf_counter()
        try:
            read_checkpoint(path)
            outcome = "loaded"
        except CheckpointError as exc:
            outcome = "refused: " + str(exc)
        except BaseException as exc:
            outcome = f"crashed: {type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        results[name] = {"outcome": outcome, "seconds": seconds, "peak_rss_growth": grown, "torch_alone": None}
    def status_bytes(key):
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(key + ":"))

    for name, path, raw in json.loads(sys.argv[1]):  # after ours
        if raw:  # the same file through torch.load itself; the peak is reset first (an earlier load's stays otherwise)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            before = status_bytes("VmRSS")
            try:
                torch.load(path, weights_only=True, mmap=False)
                alone = "loaded"
            except BaseException as exc:
                alone = f"{type(exc).__name__}: {str(exc)[:200]}"
            grown = status_bytes("VmHWM") - before
            results[name]["torch_alone"] = f"{alone} (peak RSS +{grown / 2**20:.0f} MiB)"
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    jobs = []
    for case in CASES:
        path = folder / f"{case.id}.pth"
        case.make(path)
        jobs.append((case.id, str(path), case.id in MEMORY_BOMBS))
    sizes = {case.id: (folder / f"{case.id}.pth").stat().st_size for case in CASES}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        result["file_bytes"] = sizes[name]
        print(f"bomb {name}: {sizes[name]} bytes on disk; {result['outcome'][:60]}...; "
              f"peak RSS +{result['peak_rss_growth'] / 2**20:.1f} MiB, {result['seconds'] * 1000:.0f} ms; "
              f"torch.load alone: {(result['torch_alone'] or '-')[:60]}")
    return results


@params(CASES)
def test_bomb(case: Case, measured):
    result = measured[case.id]
    assert result["file_bytes"] < 4 << 20, "the hostile file itself is small"
    assert not result["outcome"].startswith("crashed"), result["outcome"]
    if isinstance(case.expect, Refused):
        assert result["outcome"].startswith("refused: "), result["outcome"]
        case.expect.check(result["outcome"])
        assert result["peak_rss_growth"] < 64 << 20, f"refusing took {result['peak_rss_growth']} bytes"
        assert result["seconds"] < 2.0, f"refusing took {result['seconds']:.1f} s"
    else:
        assert result["outcome"] == "loaded", result["outcome"]
    if case.id in MEMORY_BOMBS:  # the bomb is real: torch alone needs more memory than the cap, or far more RSS
        alone = result["torch_alone"]
        if alone.startswith("loaded"):  # under the cap, but only after inflating the padding
            assert float(alone.split("+")[1].split(" ")[0]) >= 200, alone
        else:
            assert any(w in alone for w in ("alloc", "memory", "Memory")), alone
