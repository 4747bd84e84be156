"""Memory bounds checked before ``torch.load`` inflates or allocates anything.

A small hostile file can make ``torch.load`` take far more memory than its size: a zip
checkpoint whose members are deflate-compressed zeros (a 2 MB file inflating to 2 GB), a
``data.pkl`` padded the same way, or a legacy (non-zip) pickle that declares storages of
billions of elements (torch allocates them before reading a byte of data). torch writes its
zip members uncompressed and a legacy file stores every storage's bytes, so a real checkpoint
never needs more than its own size; these checks hold every file to that, from the zip's
central directory and the pickle's opcodes alone.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

# A deflate-recompressed checkpoint of float weights shrinks by ~10 %; 8x leaves room for zero-heavy
# buffers, while a bomb (1000x for zeros) is refused.
MAX_INFLATION = 8
INFLATION_SLACK = 1 << 20
MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a state dict with 100k tensors is ~10 MB

_ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                  "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1}


class TooLarge(ValueError):
    """The file would take far more memory than its size allows for a checkpoint."""


def check_zip_members(path: Path, size: int) -> None:
    """Refuse a torch zip whose central directory declares more bytes than the file can hold."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch words damaged archives itself
    limit = MAX_INFLATION * size + INFLATION_SLACK
    total = sum(m.file_size for m in members)
    pickles = [m for m in members if m.filename.endswith("data.pkl") and m.file_size > MAX_PICKLE_BYTES]
    if pickles:
        m = pickles[0]
        raise TooLarge(f"{path} could not be read as a PyTorch checkpoint: its {m.filename} would inflate to "
                       f"{m.file_size} bytes (a state dict's pickle needs a few MB; the limit is "
                       f"{MAX_PICKLE_BYTES >> 20} MiB): the file is damaged or a zip bomb; download it again")
    if total > limit:
        biggest = max(members, key=lambda m: m.file_size)
        raise TooLarge(f"{path} could not be read as a PyTorch checkpoint: its zip members would inflate to "
                       f"{total} bytes from a {size}-byte file ({biggest.filename}: {biggest.file_size} bytes; torch "
                       "stores tensor data uncompressed): the file is damaged or a zip bomb; download it again")


def check_legacy_storages(path: Path, size: int) -> None:
    """Refuse a legacy (non-zip) torch file whose pickle declares more storage bytes than the file holds.

    The declarations are read from the opcodes (``pickletools``), nothing is built or imported.
    """
    with open(path, "rb") as fh:
        data = fh.read(min(size, MAX_PICKLE_BYTES))
    stream = io.BytesIO(data)
    declared: dict[str, int] = {}
    try:
        for _ in range(4):  # magic number, protocol, system info, then the object with its storages
            _scan_pickle(stream, declared)
    except Exception:  # noqa: BLE001 - not parseable here: torch reads (and words) it
        return
    total = sum(declared.values())
    if total > size:
        key, biggest = max(declared.items(), key=lambda kv: kv[1])
        raise TooLarge(f"{path} could not be read as a PyTorch checkpoint: it declares {total} bytes of tensor data "
                       f"but is only {size} bytes long (storage {key!r}: {biggest} bytes; torch would allocate them "
                       "before reading): it is cut short, damaged or hostile; download it again")


def _scan_pickle(stream: io.BytesIO, declared: dict[str, int]) -> None:
    """Follow one pickle's opcodes with a stack of plain values, recording each persistent storage id."""
    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
        elif name in ("TUPLE", "LIST", "DICT"):
            start = marks.pop() if marks else 0
            items, stack[start:] = stack[start:], []
            stack.append(tuple(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items, stack[-n:] = stack[-n:], []
            stack.append(tuple(items))
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":
                arg = f"{stack[-2]} {stack[-1]}" if len(stack) >= 2 else "?"
                del stack[-2:]
            stack.append(("global", str(arg)))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" else arg
            _record(pid, declared)
            stack.append(None)
        elif name in ("POP",):
            stack and stack.pop()
        elif name == "POP_MARK":
            del stack[marks.pop():]
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            del stack[marks.pop():]
        elif name in ("APPEND", "BUILD"):
            stack.pop()
        elif name == "SETITEM":
            del stack[-2:]
        elif name in ("REDUCE", "NEWOBJ"):
            del stack[-2:]
            stack.append(None)
        elif name == "STOP":
            return
        elif name == "DUP":
            stack.append(stack[-1])
        elif not op.stack_before and not op.stack_after:
            continue  # PROTO, FRAME
        elif op.stack_after and not op.stack_before:
            stack.append(arg)  # a pushed value: string, number, None, bool, empty container
        else:
            raise ValueError(f"opcode {name} not followed")


def _record(pid, declared: dict[str, int]) -> None:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        return
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    kind = storage_type[1].split(" ")[-1] if isinstance(storage_type, tuple) else "Untyped"
    element = _ELEMENT_BYTES.get(kind.removesuffix("Storage"), 8)
    if isinstance(numel, int) and numel >= 0:
        declared[key] = max(declared.get(key, 0), numel * element)
