"""COCO detection JSON (``images``, ``annotations``, ``categories``): parse into :class:`SourceImage` records.

:func:`parse_coco` checks a loaded JSON document without touching the disk; :func:`read_coco` reads the file, picks
the image folder and checks that the images exist.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from dronevision.dataset.records import BadRecord as _Bad
from dronevision.dataset.records import Issues, SourceImage, existing_images, load_json, safe_join
from dronevision.dataset.records import json_number as _number
from dronevision.dataset.records import short_repr as _short
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)


def _is_id(value: Any) -> bool:
    """COCO ids are integers; strings are accepted too (some exporters write them)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _record_where(where: str, section: str, index: int, item: Any) -> str:
    """``x.json: annotations[12] (id=40)``: the file, the list entry and its id when it has a usable one."""
    ident = item.get("id") if isinstance(item, dict) else None
    return f"{where}: {section}[{index}]" + (f" (id={_short(ident)})" if _is_id(ident) else "")


def _section(data: dict[str, Any], key: str, *, where: str, required: bool) -> list[Any]:
    """A top-level list; a missing or ill-typed one means nothing can be read, so it raises whatever the policy."""
    if key not in data and not required:
        return []
    value = data.get(key)
    if not isinstance(value, list):
        found = "nothing" if key not in data else type(value).__name__
        raise DroneVisionError(f"{where}: '{key}' must be a list, got {found} (is this a COCO detection file?)")
    return value


def _categories(items: list[Any], *, issues: Issues, where: str) -> dict[int | str, str]:
    """``{category id: name}``; bad entries are reported and left out (their annotations then are unknown_class)."""
    names: dict[int | str, str] = {}
    for index, item in enumerate(items):
        rec = _record_where(where, "categories", index, item)
        if not isinstance(item, dict):
            issues.report("bad_format", rec, f"expected an object with 'id' and 'name', got {type(item).__name__}")
        elif not _is_id(item.get("id")):
            issues.report("bad_format", rec, f"'id' must be an integer, got {_short(item.get('id'))}")
        elif not isinstance(item.get("name"), str) or not item["name"].strip():
            issues.report("bad_format", rec, f"'name' must be a non-empty string, got {_short(item.get('name'))}")
        elif item["id"] in names:
            issues.report("bad_format", rec, f"category id {_short(item['id'])} appears twice")
        else:
            names[item["id"]] = item["name"]
    return names


def _file_name(item: dict[str, Any]) -> str:
    """The image's ``file_name``: a non-empty string without control characters that names a file."""
    name = item.get("file_name")
    if not isinstance(name, str) or not name:
        raise _Bad("bad_format", f"'file_name' must be a non-empty string, got {_short(name)}")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or not PurePosixPath(name).stem:
        raise _Bad("bad_format", f"'file_name' {_short(name)} is not a file name")
    return name


def _resolution(item: dict[str, Any]) -> tuple[int, int] | None:
    """``(width, height)`` when both are given; 0 (written by tools that did not open the image) means unknown."""
    if item.get("width") is None or item.get("height") is None:
        return None
    sizes = []
    for key in ("width", "height"):
        value = _number(item[key])
        if value is None:
            raise _Bad("non_numeric", f"'{key}' is not a number: {_short(item[key])}")
        if value < 0:
            raise _Bad("negative_size", f"'{key}' is negative: {_short(item[key])}")
        if not value.is_integer():
            raise _Bad("bad_format", f"'{key}' must be a whole number of pixels, got {_short(item[key])}")
        sizes.append(int(value))
    return (sizes[0], sizes[1]) if all(sizes) else None


def _annotation(item: Any, names: dict[int | str, str]) -> tuple[int | str, str, tuple[float, ...], bool]:
    """``(image_id, class name, xyxy, is crowd)`` of one annotation, or :class:`_Bad`."""
    if not isinstance(item, dict):
        raise _Bad("bad_format", f"expected an annotation object, got {type(item).__name__}")
    for key in ("image_id", "category_id", "bbox"):
        if key not in item:
            raise _Bad("bad_format", f"missing '{key}'")
    for key in ("image_id", "category_id"):
        if not _is_id(item[key]):
            raise _Bad("bad_format", f"'{key}' must be an integer, got {_short(item[key])}")
    bbox = item["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise _Bad("bad_format", f"'bbox' must be [x, y, w, h], got {_short(bbox)}")
    numbers = [n for n in map(_number, bbox) if n is not None]
    if len(numbers) != 4:
        raise _Bad("non_numeric", f"'bbox' holds a value that is not a finite number: {_short(bbox)}")
    x, y, w, h = numbers
    if w < 0 or h < 0:
        raise _Bad("negative_size", f"'bbox' has a negative width or height: {_short(bbox)}")
    xyxy = (x, y, x + w, y + h)
    if not all(math.isfinite(v) for v in xyxy):
        raise _Bad("non_numeric", f"'bbox' overflows: {_short(bbox)}")
    crowd = item.get("iscrowd", 0)
    if crowd not in (0, 1):
        raise _Bad("bad_format", f"'iscrowd' must be 0 or 1, got {_short(crowd)}")
    if item["category_id"] not in names:
        raise _Bad("unknown_class", f"category_id {_short(item['category_id'])} is not in categories")
    return item["image_id"], names[item["category_id"]], xyxy, bool(crowd)


def parse_coco(data: dict[str, Any], *, root: Path, issues: Issues, where: str) -> list[SourceImage]:
    """Turn a loaded COCO detection document into one :class:`SourceImage` per image, in file order.

    ``bbox`` ``[x, y, w, h]`` becomes ``xyxy``; ``iscrowd=1`` annotations become ignored regions. Images without
    annotations are kept, with no boxes. A bad image, annotation or category goes to ``issues`` and is left out
    (annotations of a left-out image go with it, counted in ``issues.dropped``). A document without an ``images``
    list, or whose ``annotations``/``categories`` are not lists, raises whatever the policy: nothing can be read.

    Args:
        data: the parsed JSON.
        root: the folder ``file_name`` is relative to.
        issues: the bad-input policy.
        where: the file, for messages.

    Examples:
        >>> data = {
        ...     "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        ...     "annotations": [{"id": 40, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10]}],
        ...     "categories": [{"id": 3, "name": "car"}],
        ... }
        >>> [image] = parse_coco(data, root=Path("ds"), issues=Issues(), where="x.json")
        >>> image.name, image.labels, image.xyxy.tolist(), image.resolution_wh, image.where
        ('a', ('car',), [[10.0, 5.0, 30.0, 15.0]], (64, 48), 'x.json: images[0] (id=1)')
        >>> data["annotations"][0]["category_id"] = 7
        >>> parse_coco(data, root=Path("ds"), issues=Issues(), where="x.json")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: x.json: annotations[0] (id=40): category_id 7 is not in categories
    """
    if not isinstance(data, dict):
        raise DroneVisionError(f"{where}: expected a JSON object with 'images', got {type(data).__name__}")
    images = _section(data, "images", where=where, required=True)
    annotations = _section(data, "annotations", where=where, required=False)
    names = _categories(_section(data, "categories", where=where, required=False), issues=issues, where=where)

    first_index: dict[int | str, int] = {}  # every image id read, kept or not
    entries: dict[int | str, dict[str, Any]] = {}
    for index, item in enumerate(images):
        rec = _record_where(where, "images", index, item)
        if not isinstance(item, dict):
            issues.report("bad_format", rec, f"expected an object with 'id' and 'file_name', got {type(item).__name__}")
            continue
        if not _is_id(item.get("id")):
            issues.report("bad_format", rec, f"'id' must be an integer, got {_short(item.get('id'))}")
            continue
        image_id = item["id"]
        if image_id in first_index:
            first = first_index[image_id]
            issues.report("duplicate_image_id", rec, f"id {_short(image_id)} is already used by images[{first}]")
            continue
        first_index[image_id] = index
        try:
            file_name, resolution_wh = _file_name(item), _resolution(item)
        except _Bad as bad:
            issues.report(bad.kind, rec, bad.message)
            continue
        path = safe_join(root, file_name, issues=issues, where=rec)
        if path is None:
            continue
        entries[image_id] = {"image": path, "name": PurePosixPath(file_name).stem, "wh": resolution_wh, "where": rec}
        entries[image_id].update(xyxy=[], labels=[], ignore=[])

    for index, item in enumerate(annotations):
        rec = _record_where(where, "annotations", index, item)
        try:
            image_id, label, xyxy, crowd = _annotation(item, names)
        except _Bad as bad:
            issues.report(bad.kind, rec, bad.message)
            continue
        entry = entries.get(image_id)
        if entry is None:
            if image_id in first_index:  # its image was reported and left out; the annotation goes with it, counted
                issues.drop("annotation_of_skipped_image")
            else:
                issues.report("label_without_image", rec, f"image_id {_short(image_id)} is not in images")
            continue
        if crowd:
            entry["ignore"].append(xyxy)
        else:
            entry["xyxy"].append(xyxy)
            entry["labels"].append(label)

    return [
        SourceImage(
            image=e["image"],
            name=e["name"],
            group="",
            xyxy=np.array(e["xyxy"], dtype=np.float64).reshape(-1, 4),
            labels=tuple(e["labels"]),
            ignore_xyxy=np.array(e["ignore"], dtype=np.float64).reshape(-1, 4),
            resolution_wh=e["wh"],
            where=e["where"],
        )
        for e in entries.values()
    ]


def _image_root(path: Path) -> Path:
    """The JSON's folder, or the sibling ``images/`` of an ``annotations/`` folder (the usual COCO layout)."""
    folder = path.parent
    if folder.name == "annotations" and (folder.parent / "images").is_dir():
        return folder.parent / "images"
    return folder


def read_coco(path: Path, *, issues: Issues, images_dir: Path | None = None) -> list[SourceImage]:
    """Read a COCO detection JSON file and check that its images exist.

    Args:
        path: the JSON file.
        issues: the bad-input policy; an image file that does not exist is a ``missing_image``.
        images_dir: the folder ``file_name`` is relative to. Default: the JSON's folder, or ``../images`` when the
            JSON sits in an ``annotations/`` folder that has an ``images/`` sibling.

    Raises:
        DroneVisionError: the file cannot be read or is not valid JSON (whatever the policy), or a bad record
            under the ``raise`` policy.
    """
    path = Path(path)
    data = load_json(path, "COCO annotation file")
    root = Path(images_dir) if images_dir is not None else _image_root(path)
    records = existing_images(parse_coco(data, root=root, issues=issues, where=str(path)), issues)
    log.info("%s: %d images, %d boxes (images in %s)", path, len(records), sum(len(r.xyxy) for r in records), root)
    return records
