"""Pascal VOC XML (one ``Annotations/<name>.xml`` per image in ``JPEGImages/``): parse into :class:`SourceImage`.

:func:`parse_voc_xml` checks one XML document without touching the disk; :func:`read_voc` reads a VOC folder and
checks that every annotation has its image and every image its annotation.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import numpy as np

from dronevision.dataset.records import BadRecord as _Bad
from dronevision.dataset.records import Issues, SourceImage, safe_join
from dronevision.dataset.records import short_repr as _short
from dronevision.dataset.yolo import IMAGE_SUFFIXES
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

BNDBOX = ("xmin", "ymin", "xmax", "ymax")


def _text(parent: ET.Element, tag: str) -> str:
    """The stripped text of a required child element."""
    child = parent.find(tag)
    if child is None:
        raise _Bad("bad_format", f"missing <{tag}> in <{parent.tag}>")
    text = (child.text or "").strip()
    if not text:
        raise _Bad("bad_format", f"<{tag}> in <{parent.tag}> is empty")
    return text


def _number(parent: ET.Element, tag: str) -> float:
    """A required child element holding a finite number."""
    text = _text(parent, tag)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _Bad("non_numeric", f"<{tag}> is not a finite number: {_short(text)}")
    return value


def _flag(parent: ET.Element, tag: str) -> int:
    """An optional 0/1 child element (``difficult``, ``truncated``); absent or empty means 0."""
    child = parent.find(tag)
    if child is None or not (child.text or "").strip():
        return 0
    value = _number(parent, tag)
    if value not in (0, 1):
        raise _Bad("bad_format", f"<{tag}> must be 0 or 1, got {_short((child.text or '').strip())}")
    return int(value)


def _file_name(root: ET.Element) -> str:
    """``<filename>``: a name without control characters that names a file."""
    name = _text(root, "filename")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or not PurePosixPath(name).stem:
        raise _Bad("bad_format", f"<filename> {_short(name)} is not a file name")
    return name


def _resolution(root: ET.Element) -> tuple[int, int] | None:
    """``(width, height)`` from ``<size>`` when present; 0 (written by tools that did not open the image) is unknown."""
    size = root.find("size")
    if size is None:
        return None
    sizes = []
    for tag in ("width", "height"):
        value = _number(size, tag)
        if value < 0:
            raise _Bad("negative_size", f"<size><{tag}> is negative: {value:g}")
        if not value.is_integer():
            raise _Bad("bad_format", f"<size><{tag}> must be a whole number of pixels, got {value:g}")
        sizes.append(int(value))
    return (sizes[0], sizes[1]) if all(sizes) else None


def _object(obj: ET.Element) -> tuple[str, tuple[float, float, float, float], bool, int]:
    """``(class name, xyxy, difficult, truncated)`` of one ``<object>``, or :class:`_Bad`."""
    name = _text(obj, "name")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise _Bad("bad_format", "missing <bndbox> in <object>")
    xmin, ymin, xmax, ymax = (_number(bndbox, tag) for tag in BNDBOX)
    if xmax < xmin or ymax < ymin:
        raise _Bad("negative_size", f"<bndbox> has xmax < xmin or ymax < ymin: {xmin:g} {ymin:g} {xmax:g} {ymax:g}")
    difficult, truncated = _flag(obj, "difficult"), _flag(obj, "truncated")
    return name, (xmin - 1, ymin - 1, xmax, ymax), bool(difficult), truncated  # 1-based pixel indices -> xyxy


def parse_voc_xml(text: str | bytes, *, root: Path, issues: Issues, where: str) -> SourceImage | None:
    """Turn one Pascal VOC annotation into a :class:`SourceImage`, or None when the whole file is skipped.

    VOC boxes are 1-based inclusive pixel indices, so ``xmin - 1, ymin - 1, xmax, ymax`` is ``xyxy``.
    ``difficult=1`` objects become ignored regions; ``truncated`` is kept as the ``truncation`` attribute. A bad
    ``<object>`` goes to ``issues`` and is left out; a bad ``<filename>`` or ``<size>`` skips the file. XML that
    does not parse raises whatever the policy: nothing can be read from it.

    Args:
        text: the XML document (bytes let the parser honour its encoding declaration).
        root: the folder ``<filename>`` is relative to (``JPEGImages``).
        issues: the bad-input policy.
        where: the file, for messages.

    Examples:
        >>> xml = (
        ...     "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height></size>"
        ...     "<object><name>car</name><truncated>1</truncated>"
        ...     "<bndbox><xmin>11</xmin><ymin>6</ymin><xmax>30</xmax><ymax>15</ymax></bndbox></object></annotation>"
        ... )
        >>> image = parse_voc_xml(xml, root=Path("JPEGImages"), issues=Issues(), where="a.xml")
        >>> image.name, image.labels, image.xyxy.tolist(), image.attrs["truncation"].tolist(), image.resolution_wh
        ('a', ('car',), [[10.0, 5.0, 30.0, 15.0]], [1], (64, 48))
        >>> parse_voc_xml(xml.replace("<xmax>30", "<xmax>3"), root=Path("JPEGImages"), issues=Issues(), where="a.xml")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.xml: object[0]: <bndbox> has xmax < xmin or ymax < ymin: 11 6 3 15
    """
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as e:
        reason = str(e).split(": line ")[0]
        raise DroneVisionError(f"{where}:{e.position[0]}: not valid XML ({reason})") from None
    except (ValueError, LookupError) as e:  # e.g. an unknown encoding in the XML declaration
        raise DroneVisionError(f"{where}: not valid XML ({e})") from None
    if tree.tag != "annotation":
        issues.report("bad_format", where, f"the root element is <{tree.tag}>, expected <annotation>")
        return None
    try:
        file_name, resolution_wh = _file_name(tree), _resolution(tree)
    except _Bad as bad:
        issues.report(bad.kind, where, bad.message)
        return None
    path = safe_join(root, file_name, issues=issues, where=where)
    if path is None:
        return None

    xyxy, labels, truncation, ignore = [], [], [], []
    for index, obj in enumerate(tree.findall("object")):
        try:
            label, box, difficult, truncated = _object(obj)
        except _Bad as bad:
            issues.report(bad.kind, f"{where}: object[{index}]", bad.message)
            continue
        if difficult:
            ignore.append(box)
        else:
            xyxy.append(box)
            labels.append(label)
            truncation.append(truncated)
    return SourceImage(
        image=path,
        name=PurePosixPath(file_name).stem,
        group="",
        xyxy=np.array(xyxy, dtype=np.float64).reshape(-1, 4),
        labels=tuple(labels),
        attrs={"truncation": np.array(truncation, dtype=np.int64)},
        ignore_xyxy=np.array(ignore, dtype=np.float64).reshape(-1, 4),
        resolution_wh=resolution_wh,
        where=where,
    )


def read_voc(path: Path, *, issues: Issues, images_dir: Path | None = None) -> list[SourceImage]:
    """Read a Pascal VOC folder (``Annotations/*.xml`` and ``JPEGImages/``), sorted by annotation file name.

    Args:
        path: the VOC folder.
        issues: the bad-input policy; an annotation whose image does not exist is a ``missing_image``, an image
            without an annotation an ``image_without_label``.
        images_dir: the folder ``<filename>`` is relative to. Default: ``path / "JPEGImages"``.

    Raises:
        DroneVisionError: a folder is missing, a file cannot be read or is not XML (whatever the policy), or a bad
            record under the ``raise`` policy.
    """
    path = Path(path)
    annotations = path / "Annotations"
    if not annotations.is_dir():
        raise DroneVisionError(f"{path}: no Annotations folder (a VOC folder holds Annotations/ and JPEGImages/)")
    images_dir = Path(images_dir) if images_dir is not None else path / "JPEGImages"
    if not images_dir.is_dir():
        raise DroneVisionError(f"{images_dir}: image folder does not exist (pass images_dir)")
    xml_files = sorted((p for p in annotations.iterdir() if p.suffix.lower() == ".xml"), key=lambda p: p.name)

    records, referenced = [], set()
    for xml_file in xml_files:
        try:
            data = xml_file.read_bytes()
        except OSError as e:
            raise DroneVisionError(f"{xml_file}: cannot be read ({e.strerror})") from None
        record = parse_voc_xml(data, root=images_dir, issues=issues, where=str(xml_file))
        if record is None:
            continue
        referenced.add(record.image)
        if not record.image.is_file():
            issues.report("missing_image", record.where, f"image file {record.image} does not exist")
            continue
        records.append(record)

    stems = {p.stem for p in xml_files}
    for image in sorted(images_dir.iterdir(), key=lambda p: p.name):
        if image.suffix.lower() in IMAGE_SUFFIXES and image.stem not in stems and image not in referenced:
            issues.report("image_without_label", str(image), f"no annotation file {annotations / image.stem}.xml")
    log.info("%s: %d images, %d boxes", path, len(records), sum(len(r.xyxy) for r in records))
    return records
