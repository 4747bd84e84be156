"""Per-image face annotations files (``--landmarks``), read and checked before any training starts.

The file is JSON ``{image name: value}`` where each value is 5 or 68 ``[x, y]`` points
(eyes, nose tip, mouth corners / iBUG), or GFP-GAN component boxes
``{"loc_left_eye": [x1, y1, x2, y2], "loc_right_eye": [...], "loc_mouth": [...]}``, in pixels
of the original file. It is read with :mod:`ifqa_loss.safeio`'s limits (a regular UTF-8 file,
bounded size and nesting, strict JSON) and every entry is checked: numbers finite, points not
all coinciding, boxes with positive sides. Errors name the image and the expected form.
"""
from __future__ import annotations

import math
import os

from .safeio import UnreadableInput, read_json

BOX_KEYS = ("loc_left_eye", "loc_right_eye", "loc_mouth")
POINT_COUNTS = (5, 68)
MAX_ANNOTATION_BYTES = 256 << 20  # 68 points for a few hundred thousand images
POINTS_FORM = "a list of 5 or 68 [x, y] pixel points"
BOXES_FORM = "{'loc_left_eye': [x1, y1, x2, y2], 'loc_right_eye': [...], 'loc_mouth': [...]}"


def read_annotations(path: str | os.PathLike, kind: str = "landmarks") -> dict[str, list]:
    """``{image name: points or boxes}`` from a landmarks JSON file, every entry checked.

    ``kind``: ``"landmarks"`` (5 or 68 points each) or ``"boxes"`` (GFP-GAN component boxes).
    Raises ``ValueError`` naming the file, the image and the expected form.

    Example:
        >>> import json, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "lm.json"
        >>> _ = path.write_text(json.dumps({"a.png": [[1, 1], [9, 1], [5, 5], [2, 8], [8, 8]]}))
        >>> sorted(read_annotations(path))
        ['a.png']
        >>> _ = path.write_text(json.dumps({"a.png": [[1, 1], [9, 1]]}))
        >>> read_annotations(path)
        Traceback (most recent call last):
        ...
        ValueError: landmarks file ...: image 'a.png': expected a list of 5 or 68 [x, y] pixel points, got 2 entries
    """
    if kind not in ("landmarks", "boxes"):
        raise ValueError(f"kind must be 'landmarks' or 'boxes', got {kind!r}")
    source = f"{kind} file {os.fsdecode(path)!r}"
    try:
        data = read_json(path, f"{kind} file", limit=MAX_ANNOTATION_BYTES, max_depth=6)
    except FileNotFoundError:
        raise ValueError(f"{source} does not exist: check --landmarks") from None
    except IsADirectoryError:
        raise ValueError(f"{source} is a folder: pass the JSON file") from None
    except UnreadableInput as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{source} holds a JSON {type(data).__name__}; expected an object {{image name: "
                         f"{POINTS_FORM if kind == 'landmarks' else BOXES_FORM}}}")
    check = _check_points if kind == "landmarks" else _check_boxes
    for name, value in data.items():
        problem = check(value)
        if problem:
            form = POINTS_FORM if kind == "landmarks" else BOXES_FORM
            raise ValueError(f"{source}: image {name!r}: expected {form}, got {problem}")
    return data


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_points(value) -> str | None:
    if not isinstance(value, list):
        return f"a {type(value).__name__}"
    if len(value) not in POINT_COUNTS:
        return f"{len(value)} entries"
    for i, point in enumerate(value):
        if not (isinstance(point, list) and len(point) == 2 and all(_number(c) for c in point)):
            return f"point {i} = {_short(point)} (each point is [x, y], two finite numbers)"
    xs, ys = [p[0] for p in value], [p[1] for p in value]
    if max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
        return "points that all lie on one spot or one line (coincident landmarks: no face located)"
    return None


def _check_boxes(value) -> str | None:
    if not isinstance(value, dict):
        return f"a {type(value).__name__}"
    missing = [k for k in BOX_KEYS if k not in value]
    if missing:
        return f"no {missing}"
    for key in BOX_KEYS:
        box = value[key]
        if not (isinstance(box, list) and len(box) == 4 and all(_number(c) for c in box)):
            return f"{key} = {_short(box)} (4 finite numbers x1, y1, x2, y2)"
        if box[2] <= box[0] or box[3] <= box[1]:
            return f"{key} = {box} (x2 > x1 and y2 > y1 needed: an empty box)"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
