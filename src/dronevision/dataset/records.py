"""What every source reader yields, and the bad-input policy they share.

A reader turns one source (a VisDrone folder, a COCO JSON, ...) into :class:`SourceImage` records: the image file,
its boxes in source-image pixels (``xyxy``) with their source class names, optional per-box attributes, ignored
regions, and the group (sequence, video or flight) that splits must keep together. Readers check syntax and
references; geometry (clipping to the image, zero area) and class mapping happen once, in the build.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SourceImage:
    """One annotated image of a source.

    Attributes:
        image: the image file.
        name: output file stem, unique within a build (e.g. ``0000001_02999_d_0000005``).
        group: what a split keeps together: a sequence, video or flight id.
        xyxy: ``(N, 4)`` boxes in source-image pixels.
        labels: ``N`` source class names.
        attrs: optional per-box integer attributes of length ``N`` (``truncation``, ``occlusion``, ``target_id``).
        ignore_xyxy: ``(M, 4)`` ignored regions in source-image pixels.
        resolution_wh: image size when the annotation states it (COCO, VOC, CVAT), else None (read from the file).
        where: the annotation file (and record) for messages.
        split: a split forced by the source, else None.
    """

    image: Path
    name: str
    group: str
    xyxy: np.ndarray
    labels: tuple[str, ...]
    attrs: Mapping[str, np.ndarray] = field(default_factory=dict)
    ignore_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    resolution_wh: tuple[int, int] | None = None
    where: str = ""
    split: str | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "ignore_xyxy", np.asarray(self.ignore_xyxy, dtype=np.float64).reshape(-1, 4))
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) != len(xyxy):
            raise ValueError(f"{self.where}: {len(xyxy)} boxes but {len(self.labels)} labels")
        for key, values in self.attrs.items():
            if len(values) != len(xyxy):
                raise ValueError(f"{self.where}: attribute {key} has {len(values)} values for {len(xyxy)} boxes")


class Issues:
    """The ``on_error`` policy: ``raise`` stops at the first bad record with one line naming file and line;
    ``skip`` warns once per kind, counts every occurrence, and the caller skips the record.

    Examples:
        >>> issues = Issues("skip")
        >>> issues.report("wrong_field_count", "a.txt:3", "expected 8 fields, got 5")
        >>> issues.report("wrong_field_count", "a.txt:4", "expected 8 fields, got 2")
        >>> dict(issues.counts)
        {'wrong_field_count': 2}
        >>> Issues("raise").report("non_numeric", "a.txt:1", "not a number: 'x'")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.txt:1: not a number: 'x'
    """

    def __init__(self, policy: str = "raise", *, log_warnings: bool = True) -> None:
        if policy not in ON_ERROR:
            raise DroneVisionError(f"on_error must be one of {', '.join(ON_ERROR)}, got '{policy}'")
        self.policy = policy
        self.log_warnings = log_warnings
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.clipped: Counter[str] = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        """Count records dropped on purpose (not errors), e.g. VisDrone's ``others`` class."""
        if n:
            self.dropped[reason] += n

    def clip(self, reason: str, n: int = 1) -> None:
        """Count boxes kept but cut to fit (the image, a tile)."""
        if n:
            self.clipped[reason] += n

    def report(self, kind: str, where: str, message: str) -> None:
        """Raise, or count and warn (once per kind); after it returns, skip the record."""
        if self.policy == "raise":
            raise DroneVisionError(f"{where}: {message}")
        if kind not in self.counts and self.log_warnings:
            log.warning("%s: %s (skipped; further '%s' problems are counted in the manifest)", where, message, kind)
        self.counts[kind] += 1


class BadRecord(Exception):
    """One bad record inside a reader: its issue kind and a one-line message, reported through :class:`Issues`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def short_repr(value: object, limit: int = 60) -> str:
    """``repr`` of a value read from a file, on one line and cut to ``limit`` characters.

    Examples:
        >>> short_repr("a" * 100, limit=10)
        "'aaaaaa..."
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_number(value: object) -> float | None:
    """A finite JSON number as a float, else None (strings, booleans, null, NaN and infinities are not numbers).

    Examples:
        >>> json_number(3), json_number("3"), json_number(True), json_number(float("nan"))
        (3.0, None, None, None)
    """
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's content, without the byte-order mark that Windows tools put first.

    Raises:
        DroneVisionError: the file is missing, cannot be read or is not UTF-8 (one line naming it).
    """
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DroneVisionError(f"{path}: {what} does not exist") from None
    except UnicodeDecodeError as e:
        utf16 = e.object[:2] in (b"\xff\xfe", b"\xfe\xff")
        hint = "UTF-16 text: save it as UTF-8" if utf16 else f"byte {e.start}"
        raise DroneVisionError(f"{path}: not UTF-8 text ({hint}; a {what} was expected)") from None
    except OSError as e:
        raise DroneVisionError(f"{path}: cannot be read ({e.strerror})") from None


def load_json(path: Path, what: str) -> object:
    """Read a JSON file; anything unreadable is a :class:`DroneVisionError` naming the file (and line)."""
    import json

    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DroneVisionError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise DroneVisionError(f"{path}: not valid JSON (nested too deeply)") from None


def existing_images(records: list[SourceImage], issues: Issues) -> list[SourceImage]:
    """The records whose image file exists; the others are reported as ``missing_image``."""
    kept = []
    for record in records:
        try:
            exists = record.image.is_file()
        except (OSError, ValueError):  # a name the file system cannot hold
            exists = False
        if not exists:
            issues.report("missing_image", record.where, f"image file {record.image} does not exist")
            continue
        kept.append(record)
    return kept


def safe_join(root: Path, name: str, *, issues: Issues, where: str) -> Path | None:
    """``root / name`` for a file name read from an annotation, refusing absolute paths and ``..``.

    Examples:
        >>> safe_join(Path("/data"), "images/a.jpg", issues=Issues(), where="x.json").as_posix()
        '/data/images/a.jpg'
        >>> safe_join(Path("/data"), "../etc/passwd", issues=Issues(), where="x.json")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: x.json: file name '../etc/passwd' escapes the source folder
    """
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or ".." in posix.parts or ".." in windows.parts:
        issues.report("path_escape", where, f"file name '{name}' escapes the source folder")
        return None
    return root / posix


ImageBoxes = tuple[Path, tuple[int, int], Detections]  # image, (w, h), boxes in its pixels


def label_names(names: Mapping[int, str]) -> list[str]:
    """The distinct class names in class-id order (several ids may share a name, merging those classes).

    Examples:
        >>> label_names({7: "truck", 2: "car", 5: "car"})
        ['car', 'truck']
    """
    return list(dict.fromkeys(names[k] for k in sorted(names)))


def check_items(items: Sequence[ImageBoxes], names: Mapping[int, str]) -> None:
    """Refuse what no annotation tool reads back: unknown class ids, odd boxes or sizes, unusable class names.

    Examples:
        >>> det = Detections(xyxy=[[5, 5, 2, 9]], class_id=[0])
        >>> check_items([(Path("a.jpg"), (64, 48), det)], {0: "car"})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.jpg: box 0 has x2 < x1 or y2 < y1: [5.0, 5.0, 2.0, 9.0]
    """
    for name in names.values():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DroneVisionError(f"class name {name!r} must be non-empty, without surrounding spaces")
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise DroneVisionError(f"class name {name!r} holds control characters")
    for image, resolution_wh, det in items:
        w, h = resolution_wh
        if not (isinstance(w, (int, np.integer)) and isinstance(h, (int, np.integer)) and w > 0 and h > 0):
            raise DroneVisionError(f"{image}: image size must be positive whole pixels, got {resolution_wh}")
        unknown = sorted(set(det.class_id.tolist()) - set(names))
        if unknown:
            raise DroneVisionError(f"{image}: class ids {unknown} are not in names {dict(names)}")
        finite = np.isfinite(det.xyxy).all(axis=1)
        if det.confidence is not None:
            finite &= np.isfinite(det.confidence)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise DroneVisionError(f"{image}: box {i} has a value that is not finite: {det.xyxy[i].tolist()}")
        negative = (det.xyxy[:, 2] < det.xyxy[:, 0]) | (det.xyxy[:, 3] < det.xyxy[:, 1])
        if negative.any():
            i = int(np.flatnonzero(negative)[0])
            raise DroneVisionError(f"{image}: box {i} has x2 < x1 or y2 < y1: {det.xyxy[i].tolist()}")


def relative_image_name(image: Path, image_root: Path) -> str:
    """The image path relative to ``image_root`` with ``/`` separators; an image outside it is refused."""
    for path, root in ((Path(image), Path(image_root)), (Path(image).resolve(), Path(image_root).resolve())):
        if path.is_relative_to(root):
            relative = path.relative_to(root).as_posix()
            if any(ord(c) < 32 or c == "\x7f" for c in relative):
                raise DroneVisionError(f"{image}: the file name holds control characters")
            return relative
    raise DroneVisionError(f"{image}: image is not inside image_root {image_root}")
