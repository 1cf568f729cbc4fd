"""The pure core of a dataset build: taxonomy, grouped splits, and what each output image will hold.

No files are read or written here; :mod:`dronevision.dataset.command` does the I/O.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dronevision.dataset.records import Issues, SourceImage
from dronevision.errors import DroneVisionError
from dronevision.infer import box_areas, clip_boxes, slice_bboxes

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Taxonomy:
    """Source class names -> target classes (ids in ``classes`` order); unmapped names are dropped or refused.

    Examples:
        >>> t = Taxonomy(classes=("car", "truck"), mapping={"car": "car", "van": "car", "truck": "truck"})
        >>> t.class_id("Van"), t.class_id("pedestrian")
        (0, None)
    """

    classes: tuple[str, ...]
    mapping: Mapping[str, str]
    on_unmapped: str = "drop"
    name: str = ""

    def class_id(self, label: str) -> int | None:
        """Target class id of a source class name (case-insensitive), or None when unmapped."""
        target = self.mapping.get(label.strip().lower())
        return None if target is None else self.classes.index(target)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], labels: Iterable[str]) -> Taxonomy:
        """From a ``taxonomy/`` config; ``identity`` (no ``map``) keeps the source names, sorted."""
        on_unmapped = str(cfg.get("on_unmapped", "drop"))
        if on_unmapped not in ("drop", "error"):
            raise DroneVisionError(f"taxonomy.on_unmapped must be drop or error, got '{on_unmapped}'")
        if not cfg.get("map"):
            names = tuple(sorted({label.strip().lower() for label in labels}))
            return cls(classes=names, mapping={n: n for n in names}, on_unmapped=on_unmapped, name="identity")
        classes = tuple(cfg["classes"])
        mapping = {str(k).strip().lower(): str(v) for k, v in cfg["map"].items()}
        unknown = sorted(set(mapping.values()) - set(classes))
        if unknown:
            raise DroneVisionError(f"taxonomy {cfg.get('name')}: maps to {unknown}, which are not in its classes")
        return cls(classes=classes, mapping=mapping, on_unmapped=on_unmapped, name=str(cfg.get("name", "")))


def group_of(name: str, pattern: str | None) -> str:
    """The split group of an image name: the first capture group of ``pattern``, else the whole name.

    Examples:
        >>> group_of("0000001_02999_d_0000005", r"^([^_]+)")
        '0000001'
        >>> group_of("frame", r"^(\\d+)_"), group_of("a_b", None)
        ('frame', 'a_b')
    """
    match = re.search(pattern, name) if pattern else None
    if match is None:
        return name
    return match.groupdict().get("group") or (match.group(1) if match.groups() else match.group(0))


def assign_splits(
    group_sizes: Mapping[str, int], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Put whole groups into splits: shuffled with ``seed``, then val and test filled up to their share of images.

    A group is never divided, so no sequence has frames in two splits. With two or more groups and a positive
    fraction, val (then test) gets at least one group, and train keeps at least one.

    Examples:
        >>> assign_splits({"a": 5, "b": 5, "c": 5, "d": 5}, val_fraction=0.25, test_fraction=0.0, seed=0)
        {'a': 'train', 'b': 'train', 'c': 'val', 'd': 'train'}
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DroneVisionError("split.val_fraction and split.test_fraction must be in [0, 1) and sum below 1")
    groups = sorted(group_sizes)
    random.Random(seed).shuffle(groups)
    total = sum(group_sizes.values())
    out = dict.fromkeys(groups, "train")
    free = list(groups)
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        target, taken = fraction * total, 0
        for group in list(free):
            if fraction == 0 or len(free) < 2:
                break
            size = group_sizes[group]
            if taken == 0 or taken + size <= target:  # at least one group, then up to the target
                out[group], taken = split, taken + size
                free.remove(group)
    return dict(sorted(out.items()))


def to_yolo_lines(class_ids: Sequence[int], xyxy: np.ndarray, resolution_wh: tuple[int, int]) -> str:
    """YOLO label text (``class cx cy w h``, normalised, 6 decimals) for pixel boxes.

    Examples:
        >>> to_yolo_lines([2], np.array([[0., 0, 50, 20]]), (100, 40))
        '2 0.250000 0.250000 0.500000 0.500000\\n'
    """
    w, h = resolution_wh
    lines = []
    for cls, (x1, y1, x2, y2) in zip(class_ids, xyxy.tolist()):
        lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class Item:
    """One output image (a whole source image or a tile) and its labels, decided before any pixel is touched."""

    record: SourceImage
    file: str  # relative to the dataset root: images/<split>/<name><suffix>
    split: str
    window_xyxy: tuple[int, int, int, int]  # the part of the source image this output shows
    class_ids: tuple[int, ...]
    xyxy: np.ndarray  # boxes in output-image pixels
    keep: np.ndarray  # indices of the kept boxes in the record (for their attributes)
    ignore_xyxy: np.ndarray  # ignored regions in output-image pixels
    mask: bool  # fill the ignored regions with the image mean
    rewrite: bool  # pixels change (tile or mask): decode and encode; else link the file

    @property
    def label_file(self) -> str:
        return "labels" + self.file.removeprefix("images").rsplit(".", 1)[0] + ".txt"

    @property
    def resolution_wh(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.window_xyxy
        return x2 - x1, y2 - y1


def plan_items(
    record: SourceImage,
    *,
    resolution_wh: tuple[int, int],
    split: str,
    taxonomy: Taxonomy,
    cfg: Mapping[str, Any],
    issues: Issues,
) -> list[Item]:
    """Clip, filter and map one record's boxes, and cut it into tiles when tiling is on. Pure."""
    w, h = resolution_wh
    xyxy = record.xyxy
    full = np.array([0, 0, w, h])
    clipped, visible = clip_boxes(xyxy, full)
    outside = visible == 0
    zero = box_areas(xyxy) == 0
    for i in np.flatnonzero(outside & ~zero):
        issues.report(
            "box_outside_image", record.where, f"box {xyxy[i].round(1).tolist()} lies outside the {w}x{h} image"
        )
    issues.drop("zero_area", int(zero.sum()))
    n_clipped = int(((visible > 0) & (visible < 1)).sum())
    issues.clip("to_image", n_clipped)
    keep = ~outside & ~zero
    ids = np.full(len(xyxy), -1)
    for i in np.flatnonzero(keep):
        cls = taxonomy.class_id(record.labels[i])
        if cls is None:
            if taxonomy.on_unmapped == "error":
                raise DroneVisionError(
                    f"{record.where}: class '{record.labels[i]}' is not in taxonomy "
                    f"'{taxonomy.name}' (taxonomy.on_unmapped=error)"
                )
            issues.drop(f"unmapped:{record.labels[i]}")
            keep[i] = False
        ids[i] = -1 if cls is None else cls
    filters = cfg.get("filter", {}) or {}
    for attr, key in (("occlusion", "max_occlusion"), ("truncation", "max_truncation")):
        limit = filters.get(key)
        if limit is not None and attr in record.attrs:
            over = keep & (np.asarray(record.attrs[attr]) > limit)
            issues.drop(f"filter_{attr}", int(over.sum()))
            keep &= ~over
    min_size = float(filters.get("min_size") or 0)
    if min_size > 0:
        small = keep & (np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]) < min_size)
        issues.drop("filter_min_size", int(small.sum()))
        keep &= ~small
    kept = np.flatnonzero(keep)
    ignore, _ = clip_boxes(record.ignore_xyxy, full)
    ignore = ignore[box_areas(ignore) > 0]
    mask = bool(cfg.get("mask_ignored", True)) and len(ignore) > 0
    suffix = record.image.suffix.lower()
    tiling = cfg.get("tiling", {}) or {}
    if not tiling.get("enabled"):
        return [
            Item(
                record,
                f"images/{split}/{record.name}{suffix}",
                split,
                (0, 0, w, h),
                tuple(ids[kept].tolist()),
                clipped[kept],
                kept,
                ignore,
                mask=mask,
                rewrite=mask,
            )
        ]
    items = []
    tile_suffix = ".png" if suffix == ".png" else ".jpg"
    for tile in slice_bboxes((w, h), size=int(tiling["tile"]), overlap=float(tiling["overlap"])):
        in_tile, vis = clip_boxes(clipped[kept], tile)
        cut = (vis > 0) & (vis < float(tiling["min_visibility"]))
        issues.drop("tile_low_visibility", int(cut.sum()))
        sel = vis >= float(tiling["min_visibility"])
        issues.clip("by_tile", int((sel & (vis < 1)).sum()))
        tile_ignore, ivis = clip_boxes(ignore, tile)
        if not sel.any() and not tiling.get("keep_empty", True):
            issues.drop("empty_tile")
            continue
        x1, y1, x2, y2 = (int(v) for v in tile)
        items.append(
            Item(
                record,
                f"images/{split}/{record.name}_x{x1}_y{y1}{tile_suffix}",
                split,
                (x1, y1, x2, y2),
                tuple(ids[kept][sel].tolist()),
                in_tile[sel],
                kept[sel],
                tile_ignore[ivis > 0],
                mask=mask,
                rewrite=True,
            )
        )
    return items
