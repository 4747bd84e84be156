"""Reading user-named files without hanging or blowing memory up.

Every path a command reads (checkpoints, manifests, meta and landmark files, images) is opened
with ``O_NONBLOCK`` and checked to be a regular file before a byte is read: a FIFO, socket or
device (also through a link, e.g. to ``/dev/zero``) is refused at once instead of waiting forever
or reading without end. Text inputs have a size limit and must be UTF-8; JSON and YAML inputs
have a nesting limit, and YAML aliases cannot expand a small file into a huge document.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

MAX_TEXT_BYTES = 64 << 20  # manifests, meta tables, landmark files: far above any real one
MAX_NESTING = 64  # JSON/YAML depth; real inputs need 3 or 4
MAX_YAML_NODES = 1_000_000  # nodes after expanding aliases (a "billion laughs" file expands to 10^9)

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class UnreadableInput(ValueError):
    """A named input is not a regular file, too large, too deeply nested, or not UTF-8 text."""


def special_kind(mode: int) -> str | None:
    """What a non-regular file is (``"a named pipe (FIFO)"``, ...), ``None`` for regular files and folders."""
    return next((what for test, what in _KINDS if test(mode)), None)


def refuse_special(path: str | os.PathLike, what: str = "input") -> None:
    """Raise :class:`UnreadableInput` when ``path`` (links followed) is a FIFO, socket or device.

    Missing paths pass (the caller words that); nothing is opened, so this never blocks.

    Example:
        >>> refuse_special("/dev/null", "checkpoint")
        Traceback (most recent call last):
        ...
        ifqa_loss.safeio.UnreadableInput: checkpoint '/dev/null' is a character device, not a regular file: ...
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    kind = special_kind(mode)
    if kind:
        raise UnreadableInput(f"{what} {_shown(path)} is {kind}, not a regular file: reading it could wait forever "
                              "or never end; pass a regular file")


def open_regular(path: str | os.PathLike, what: str = "input"):
    """``open(path, "rb")`` that cannot block: opened non-blocking, refused unless it is a regular file."""
    refuse_special(path, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = special_kind(os.fstat(fd).st_mode)  # swapped between the stat and the open
        if kind:
            raise UnreadableInput(f"{what} {_shown(path)} is {kind}, not a regular file; pass a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes_limited(path: str | os.PathLike, what: str = "input", limit: int = MAX_TEXT_BYTES) -> bytes:
    """The file's bytes; :class:`UnreadableInput` when it is not a regular file or holds more than ``limit``."""
    with open_regular(path, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnreadableInput(f"{what} {_shown(path)} is larger than {limit >> 20} MiB, far more than such a file "
                              "holds: pass the right file (or split it)")
    return data


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); the error names the encoding problem and where it is."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableInput(f"{source} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableInput(f"{source} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                              f"(line {line}) is not valid UTF-8 (Latin-1, Windows-1252 or a binary file?); "
                              "save it as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)") from None


def read_text(path: str | os.PathLike, what: str = "input", limit: int = MAX_TEXT_BYTES) -> str:
    """UTF-8 text of a regular file of at most ``limit`` bytes (see :func:`decode_text`)."""
    return decode_text(read_bytes_limited(path, what, limit), f"{what} {_shown(path)}")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    for match in re.finditer(r"[\[\]{}]", _STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str, source: str, max_depth: int = MAX_NESTING):
    """Strict JSON (no NaN/Infinity, no duplicate keys), nested at most ``max_depth`` deep."""
    depth = json_depth(text)
    if depth > max_depth:
        raise UnreadableInput(f"{source} nests {depth} levels deep (the limit is {max_depth}): not the expected "
                              "file (or a hostile one)")

    def constant(name: str):
        raise UnreadableInput(f"{source} holds {name}, which is not JSON: write a number")

    def unique(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise UnreadableInput(f"{source} names {key!r} twice: keep one entry")
            seen[key] = value
        return seen

    try:
        return json.loads(text, parse_constant=constant, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise UnreadableInput(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                              "fix or regenerate it") from None
    except RecursionError:
        raise UnreadableInput(f"{source} nests too deeply to read") from None


def read_json(path: str | os.PathLike, what: str = "input", limit: int = MAX_TEXT_BYTES,
              max_depth: int = MAX_NESTING):
    """A JSON file read with every limit of this module (regular file, size, UTF-8, nesting, strict JSON).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = path.write_text('{"a": [1, 2]}')
        >>> read_json(path, "manifest")
        {'a': [1, 2]}
    """
    return parse_json(read_text(path, what, limit), f"{what} {_shown(path)}", max_depth)


def parse_yaml(text: str, source: str, max_depth: int = MAX_NESTING, max_nodes: int = MAX_YAML_NODES):
    """``yaml.safe_load`` after checking the composed document: nesting depth and node count *after* alias
    expansion (each alias counts as the whole subtree it repeats), so a "billion laughs" file is refused
    before anything is built."""
    import yaml

    try:
        depth = 0  # the event stream is produced without recursion: refuse deep nesting before composing
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > max_depth:
                    raise UnreadableInput(f"{source} nests more than {max_depth} levels deep: not the expected file")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise UnreadableInput(f"{source} is not valid YAML ({_first_line(str(exc))}); fix it") from None
    except RecursionError:  # PyYAML's composer recurses per level: hundreds of levels exhaust the stack
        raise UnreadableInput(f"{source} nests more than {max_depth} levels deep: not the expected file") from None
    if node is None:
        return None
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def expanded(n, depth: int) -> int:
        if depth > max_depth:
            raise UnreadableInput(f"{source} nests more than {max_depth} levels deep: not the expected file")
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in active:
            raise UnreadableInput(f"{source} holds a recursive alias (a node that contains itself)")
        active.add(id(n))
        children = n.value if isinstance(n.value, list) else []
        total = 1
        for child in children:
            for part in child if isinstance(child, tuple) else (child,):
                total += expanded(part, depth + 1)
                if total > max_nodes:
                    raise UnreadableInput(f"{source} expands to more than {max_nodes} values (YAML aliases repeating "
                                          "aliases: a 'billion laughs' file); write the values out")
        active.discard(id(n))
        sizes[id(n)] = total
        return total

    expanded(node, 0)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # composed, but a tag no safe loader builds (e.g. !!python/object)
        raise UnreadableInput(f"{source} is not plain YAML data ({_first_line(str(exc))}); write plain "
                              "values (numbers, strings, lists, mappings)") from None


def read_yaml(path: str | os.PathLike, what: str = "input", limit: int = MAX_TEXT_BYTES,
              max_depth: int = MAX_NESTING, max_nodes: int = MAX_YAML_NODES):
    """A YAML file read with every limit of this module (see :func:`parse_yaml`)."""
    return parse_yaml(read_text(path, what, limit), f"{what} {_shown(path)}", max_depth, max_nodes)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _shown(path: str | os.PathLike) -> str:
    return repr(os.fsdecode(path)) if isinstance(path, (str, bytes, Path)) else repr(str(path))
