"""VisDrone-DET (images/ + annotations/) and VisDrone-VID / MOT (sequences/ + annotations/) sources.

DET lines: ``<left>,<top>,<width>,<height>,<score>,<category>,<truncation>,<occlusion>``.
VID lines: ``<frame>,<target_id>,<left>,<top>,<width>,<height>,<score>,<category>,<truncation>,<occlusion>``.
Category 0 or score 0 marks an ignored region; category 11 is ``others``.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dronevision.dataset.records import Issues, SourceImage, read_text
from dronevision.dataset.yolo import IMAGE_SUFFIXES
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

CATEGORIES = (
    "ignored-regions",
    "pedestrian",
    "people",
    "bicycle",
    "car",
    "van",
    "truck",
    "tricycle",
    "awning-tricycle",
    "bus",
    "motor",
    "others",
)
OTHERS = 11
ANNOTATION = "VisDrone annotation file"  # for messages


@dataclass
class ParsedBoxes:
    """Boxes parsed from VisDrone lines, before they are attached to an image."""

    xyxy: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    truncation: list[int] = field(default_factory=list)
    occlusion: list[int] = field(default_factory=list)
    target_id: list[int] = field(default_factory=list)
    ignore_xyxy: list[list[float]] = field(default_factory=list)


def _fields(line: str) -> list[str]:
    parts = [p.strip() for p in line.strip().split(",")]
    return parts[:-1] if parts and parts[-1] == "" else parts  # a trailing comma


def parse_visdrone_lines(
    lines: Sequence[str], *, source: Path, issues: Issues, video: bool = False, keep_others: bool = False
) -> dict[int, ParsedBoxes]:
    """Parse DET (``video=False``, all boxes under key 0) or VID lines (keyed by frame number).

    Blank lines and a trailing comma are tolerated. Bad lines go to ``issues`` and are skipped.

    Examples:
        >>> out = parse_visdrone_lines(["10,20,30,40,1,4,0,1,", "", "0,0,5,5,0,0,0,0"], source=Path("a.txt"),
        ...                            issues=Issues())
        >>> out[0].xyxy, out[0].labels, out[0].occlusion, out[0].ignore_xyxy
        ([[10.0, 20.0, 40.0, 60.0]], ['car'], [1], [[0.0, 0.0, 5.0, 5.0]])
    """
    n_fields = 10 if video else 8
    fast = _parse_clean(lines, n_fields=n_fields, video=video, keep_others=keep_others, issues=issues)
    if fast is not None:
        return fast
    parsed: dict[int, ParsedBoxes] = defaultdict(ParsedBoxes)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        fields = _fields(line)
        if len(fields) != n_fields:
            issues.report("wrong_field_count", where, f"expected {n_fields} comma-separated fields, got {len(fields)}")
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            issues.report("non_numeric", where, f"not numbers: {line.strip()!r}")
            continue
        if not all(map(math.isfinite, values)):
            issues.report("non_numeric", where, f"not finite numbers: {line.strip()!r}")
            continue
        frame, target = (int(values[0]), int(values[1])) if video else (0, -1)
        left, top, w, h, score, category, truncation, occlusion = values[-8:]
        if w < 0 or h < 0:
            issues.report("negative_size", where, f"negative width or height: {line.strip()!r}")
            continue
        if category != int(category) or not 0 <= category <= OTHERS:
            issues.report("unknown_class", where, f"category {fields[-3]} is not a VisDrone category (0..11)")
            continue
        box = [left, top, left + w, top + h]
        entry = parsed[frame]
        if category == 0 or score == 0:
            entry.ignore_xyxy.append(box)
        elif category == OTHERS and not keep_others:
            issues.drop("visdrone_others")
        else:
            entry.xyxy.append(box)
            entry.labels.append(CATEGORIES[int(category)])
            entry.truncation.append(int(truncation))
            entry.occlusion.append(int(occlusion))
            entry.target_id.append(target)
    return dict(parsed)


def _parse_clean(
    lines: Sequence[str], *, n_fields: int, video: bool, keep_others: bool, issues: Issues
) -> dict[int, ParsedBoxes] | None:
    """Vectorised parse of a file without problems; None sends it to the line-by-line parser, which reports them."""
    rows = [_fields(line) for line in lines if line.strip()]
    if not rows:
        return {}
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError:  # ragged rows or a non-number
        return None
    if arr.ndim != 2 or arr.shape[1] != n_fields or not np.isfinite(arr).all():
        return None
    left, top, w, h, score, category, truncation, occlusion = arr[:, -8:].T
    if (w < 0).any() or (h < 0).any() or (category != np.round(category)).any() or (category < 0).any():
        return None
    if (category > OTHERS).any():
        return None
    frames = arr[:, 0].astype(np.int64) if video else np.zeros(len(arr), np.int64)
    targets = arr[:, 1].astype(np.int64) if video else np.full(len(arr), -1)
    xyxy = np.stack([left, top, left + w, top + h], axis=1)
    cats = category.astype(np.int64)
    ignored = (cats == 0) | (score == 0)
    others = ~ignored & (cats == OTHERS) & (not keep_others)
    if others.any():
        issues.drop("visdrone_others", int(others.sum()))
    boxes = ~ignored & ~others
    parsed: dict[int, ParsedBoxes] = {}
    for frame in np.unique(frames).tolist():
        at = frames == frame
        sel, ign = at & boxes, at & ignored
        parsed[frame] = ParsedBoxes(
            xyxy=xyxy[sel].tolist(),
            labels=[CATEGORIES[c] for c in cats[sel].tolist()],
            truncation=truncation[sel].astype(np.int64).tolist(),
            occlusion=occlusion[sel].astype(np.int64).tolist(),
            target_id=targets[sel].tolist(),
            ignore_xyxy=xyxy[ign].tolist(),
        )
    return parsed


def _image_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _require_dir(path: Path, name: str) -> Path:
    folder = path / name
    if not folder.is_dir():
        raise DroneVisionError(f"{path}: no {name}/ folder (expected {name}/ and annotations/)")
    return folder


def read_visdrone_det(path: Path, *, issues: Issues, keep_others: bool = False) -> Iterator[SourceImage]:
    """Read a VisDrone-DET folder: ``images/<name>.jpg`` with ``annotations/<name>.txt``, one image at a time."""
    images, annotations = _image_files(_require_dir(path, "images")), _require_dir(path, "annotations")
    labels = {p.stem: p for p in sorted(annotations.glob("*.txt"))}
    for stem in sorted(labels.keys() - images.keys()):
        issues.report("label_without_image", str(labels[stem]), "annotation file has no image in images/")
    for stem, image in images.items():
        if stem not in labels:
            issues.report("image_without_label", str(image), "image has no annotation file in annotations/")
            continue
        boxes = parse_visdrone_lines(
            read_text(labels[stem], ANNOTATION).splitlines(),
            source=labels[stem],
            issues=issues,
            keep_others=keep_others,
        ).get(0, ParsedBoxes())
        yield _record(image, stem, "", boxes, where=str(labels[stem]))


def read_visdrone_vid(
    path: Path, *, issues: Issues, frame_stride: int = 1, keep_others: bool = False
) -> Iterator[SourceImage]:
    """Read VisDrone-VID / MOT: ``sequences/<seq>/<frame>.jpg`` with ``annotations/<seq>.txt``, every Nth frame.

    Frame numbers in the annotations are the frame files' numbers (``0000001.jpg`` is frame 1).
    """
    if frame_stride < 1:
        raise DroneVisionError(f"source.frame_stride must be >= 1, got {frame_stride}")
    sequences, annotations = _require_dir(path, "sequences"), _require_dir(path, "annotations")
    labels = {p.stem: p for p in sorted(annotations.glob("*.txt"))}
    folders = {p.name: p for p in sorted(sequences.iterdir()) if p.is_dir()}
    for seq in sorted(labels.keys() - folders.keys()):
        issues.report("label_without_image", str(labels[seq]), "annotation file has no sequence folder")
    for seq, folder in folders.items():
        if seq not in labels:
            issues.report("image_without_label", str(folder), "sequence has no annotation file in annotations/")
            continue
        frames = _image_files(folder)
        by_frame = parse_visdrone_lines(
            read_text(labels[seq], ANNOTATION).splitlines(),
            source=labels[seq],
            issues=issues,
            video=True,
            keep_others=keep_others,
        )
        numbered = {}
        for stem, image in frames.items():
            if not stem.isdigit():
                issues.report("bad_format", str(image), "frame file name is not a frame number")
                continue
            numbered[int(stem)] = image
        for frame in sorted(by_frame.keys() - numbered.keys()):
            issues.report("label_without_image", f"{labels[seq]}", f"frame {frame} has labels but no image")
        first = min(numbered, default=1)
        for frame, image in sorted(numbered.items()):
            if (frame - first) % frame_stride:
                continue
            boxes = by_frame.get(frame, ParsedBoxes())
            yield _record(image, f"{seq}_{frame:07d}", seq, boxes, where=f"{labels[seq]} frame {frame}")


def _record(image: Path, name: str, group: str, boxes: ParsedBoxes, *, where: str) -> SourceImage:
    attrs = {
        "truncation": np.asarray(boxes.truncation, dtype=np.int64),
        "occlusion": np.asarray(boxes.occlusion, dtype=np.int64),
    }
    if group:
        attrs["target_id"] = np.asarray(boxes.target_id, dtype=np.int64)
    return SourceImage(
        image=image,
        name=name,
        group=group,
        xyxy=boxes.xyxy,
        labels=boxes.labels,
        attrs=attrs,
        ignore_xyxy=boxes.ignore_xyxy,
        where=where,
    )
