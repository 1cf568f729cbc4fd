"""Altitude shift: the split seen from lower down (zoom in, ``z > 1``) or higher up (zoom out, ``z < 1``).

``python -m dronevision.evaluate weights=... scales=[0.5,1,2,3]`` scores the model on a zoomed variant of the split
per scale (COCO mAP50 and mAP50-95). Pure geometry first (:func:`zoom_in_windows`, :func:`crop_boxes`,
:func:`zoom_in`, :func:`mosaic_layout`, :func:`zoom_out`), then the I/O (:func:`build_variant` writes a variant as a
YOLO dataset, reused while its source is unchanged), then :func:`evaluate_altitude` (its curve:
:func:`dronevision.evaluate.pictures.plot_altitude_curve`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from omegaconf import OmegaConf

from dronevision.errors import DroneVisionError

if TYPE_CHECKING:
    from dronevision.evaluate.ground_truth import GroundTruth
    from dronevision.infer.sliced import SliceSettings
    from dronevision.schema import Detections

log = logging.getLogger(__name__)

GREY = 114  # the empty cells of a mosaic, as ultralytics' letterbox
VARIANT_VERSION = 1  # bump when the geometry changes: cached variants are rebuilt


class Tile(NamedTuple):
    """One image of a variant: pixels, ``(N, 4)`` xyxy boxes, class ids, and each box's index among the input boxes
    (for :func:`zoom_out`: among the boxes of all input images, concatenated in order)."""

    image: np.ndarray
    xyxy: np.ndarray
    class_id: np.ndarray
    origin: np.ndarray


# --- pure core -------------------------------------------------------------------------------------------------


def check_scales(value: Any, *, with_weights: bool = True) -> list[float] | None:
    """``None`` (altitude shift off) or a non-empty list of distinct positive numbers.

    Examples:
        >>> check_scales(None), check_scales([0.5, 1, 2])
        (None, [0.5, 1.0, 2.0])
        >>> check_scales(2)
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: scales must be a list of positive numbers such as scales=[0.5,1,2,3], got 2
    """
    if OmegaConf.is_config(value):
        value = OmegaConf.to_object(value)
    if value is None:
        return None
    hint = f"scales must be a list of positive numbers such as scales=[0.5,1,2,3], got {value!r}"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not value:
        raise DroneVisionError(hint)
    scales = []
    for z in value:
        if isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z) or z <= 0:
            raise DroneVisionError(hint)
        if float(z) in scales:
            raise DroneVisionError(f"scales lists {z} twice: {list(value)}")
        scales.append(float(z))
    if not with_weights:
        raise DroneVisionError("scales= needs weights=: detections made elsewhere cannot be rerun on zoomed images")
    return scales


def scale_name(z: float) -> str:
    """A scale as metrics.json, MLflow and the variant folders spell it.

    Examples:
        >>> scale_name(0.5), scale_name(1.0), scale_name(2), scale_name(1 / 3)
        ('0.5', '1', '2', '0.333333')
    """
    return f"{z:g}"


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))  # half up, not Python's half to even


def zoom_in_windows(resolution_wh: tuple[int, int], z: float) -> np.ndarray:
    """The crops of a zoom by ``z > 1``: ``ceil(z)`` x ``ceil(z)`` windows of ``W/z`` x ``H/z`` (rounded to pixels)
    evenly spaced to cover the image, row by row; ``(n, 4)`` integer xyxy.

    Examples:
        >>> zoom_in_windows((100, 100), 2).tolist()
        [[0, 0, 50, 50], [50, 0, 100, 50], [0, 50, 50, 100], [50, 50, 100, 100]]
        >>> zoom_in_windows((100, 60), 1.5).tolist()
        [[0, 0, 67, 40], [33, 0, 100, 40], [0, 20, 67, 60], [33, 20, 100, 60]]
    """
    if z <= 1:
        raise DroneVisionError(f"zoom in needs a scale above 1, got {z}")
    w, h = resolution_wh
    n = math.ceil(z - 1e-9)
    cw, ch = w / z, h / z
    if _round(cw) < 1 or _round(ch) < 1:
        raise DroneVisionError(f"scale {z} leaves crops under 1 pixel of a {w}x{h} image")

    def starts(size: int, crop: float) -> list[float]:
        return [i * (size - crop) / (n - 1) for i in range(n)] if n > 1 else [0.0]

    return np.array(
        [[_round(x0), _round(y0), _round(x0 + cw), _round(y0 + ch)] for y0 in starts(h, ch) for x0 in starts(w, cw)],
        dtype=np.int64,
    ).reshape(-1, 4)


def crop_boxes(
    xyxy: np.ndarray, window: Sequence[int], out_wh: tuple[int, int], *, min_inside: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes seen through a crop window resized to ``out_wh``: a box is kept when at least ``min_inside`` of its area
    lies in the window, clipped to it, then scaled. Returns the kept boxes and the boolean mask of kept inputs
    (boxes without area are dropped).

    Examples:
        >>> boxes, kept = crop_boxes(np.array([[60, 60, 80, 80], [40, 10, 70, 30]]), (50, 0, 100, 50), (100, 100))
        >>> boxes.tolist(), kept.tolist()
        ([[0.0, 20.0, 40.0, 60.0]], [False, True])
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window)
    clipped = np.clip(xyxy, [x0, y0, x0, y0], [x1, y1, x1, y1])
    area = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    kept = (area > 0) & (inside >= min_inside * area * (1 - 1e-9))
    scale = np.array([out_wh[0] / (x1 - x0), out_wh[1] / (y1 - y0)] * 2)
    return (clipped[kept] - [x0, y0, x0, y0]) * scale, kept


def zoom_in(image: np.ndarray, xyxy: np.ndarray, class_id: np.ndarray, z: float) -> list[Tile]:
    """The crops of :func:`zoom_in_windows`, each resized back to the image's size, with the boxes
    :func:`crop_boxes` keeps.

    Examples:
        >>> tiles = zoom_in(np.zeros((100, 100, 3), np.uint8), np.array([[60., 60., 80., 80.]]), np.array([0]), 2)
        >>> [t.xyxy.tolist() for t in tiles], tiles[3].image.shape
        ([[], [], [], [[20.0, 20.0, 60.0, 60.0]]], (100, 100, 3))
    """
    import cv2

    h, w = image.shape[:2]
    class_id = np.asarray(class_id, dtype=np.int64).reshape(-1)
    tiles = []
    for window in zoom_in_windows((w, h), z):
        x0, y0, x1, y1 = (int(v) for v in window)
        crop = cv2.resize(image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)
        boxes, kept = crop_boxes(xyxy, window, (w, h))
        tiles.append(Tile(crop, boxes, class_id[kept], np.flatnonzero(kept)))
    return tiles


def per_side(z: float) -> int:
    """Images per mosaic side at a zoom out by ``z < 1``: as many shrunk images as fit, ``floor(1/z)`` (rather than
    ``round``, so that ``k * z <= 1``: at 0.35, three images would need 1.05 widths).

    Examples:
        >>> per_side(0.5), per_side(1 / 3), per_side(0.35), per_side(0.25), per_side(0.7)
        (2, 3, 2, 4, 1)
    """
    if not 0 < z < 1:
        raise DroneVisionError(f"zoom out needs a scale between 0 and 1, got {z}")
    return max(1, math.floor(1 / z + 1e-9))


def mosaic_layout(sizes_wh: Sequence[tuple[int, int]], z: float) -> tuple[tuple[int, int], list[tuple[int, ...]]]:
    """Where up to ``per_side(z)**2`` images go in one mosaic: the mosaic has the first image's size, cell ``i`` is at
    row ``i // k``, column ``i % k``; each image is shrunk by ``z`` (less if its cell is smaller) to whole pixels.
    Returns the mosaic's ``(w, h)`` and ``(x, y, new_w, new_h)`` per image.

    Examples:
        >>> mosaic_layout([(100, 100)] * 3, 0.5)
        ((100, 100), [(0, 0, 50, 50), (50, 0, 50, 50), (0, 50, 50, 50)])
    """
    k = per_side(z)
    if not 0 < len(sizes_wh) <= k * k:
        raise DroneVisionError(f"a mosaic at scale {z} holds 1 to {k * k} images, got {len(sizes_wh)}")
    mw, mh = sizes_wh[0]
    cell_w, cell_h = mw // k, mh // k
    placed = []
    for i, (w, h) in enumerate(sizes_wh):
        s = min(z, cell_w / w, cell_h / h)
        placed.append(((i % k) * mw // k, (i // k) * mh // k, max(1, _round(w * s)), max(1, _round(h * s))))
    return (mw, mh), placed


def zoom_out(items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], z: float) -> list[Tile]:
    """Images ``(image, xyxy, class_id)`` shrunk by ``z`` and tiled, in order, into mosaics of the first image's size
    (:func:`mosaic_layout`), empty cells grey (114); boxes scaled and shifted with their image, those under 1 pixel
    wide or high dropped (see :attr:`Tile.origin` for which were kept).

    Examples:
        >>> im = np.zeros((100, 100, 3), np.uint8)
        >>> items = [(im, np.zeros((0, 4)), np.zeros(0)), (im, np.array([[0., 0., 20., 20.], [0, 0, 1, 1]]), [0, 0])]
        >>> (tile,) = zoom_out(items, 0.5)
        >>> tile.xyxy.tolist(), tile.origin.tolist(), int(tile.image[99, 99, 0])
        ([[50.0, 0.0, 60.0, 10.0]], [0], 114)
    """
    import cv2

    k2 = per_side(z) ** 2
    tiles, offset = [], 0
    for start in range(0, len(items), k2):
        group = items[start : start + k2]
        (mw, mh), placed = mosaic_layout([(im.shape[1], im.shape[0]) for im, _, _ in group], z)
        first = group[0][0]
        canvas = np.full((mh, mw, *first.shape[2:]), GREY, dtype=first.dtype)
        boxes, classes, origin = [], [], []
        for (image, xyxy, class_id), (x, y, nw, nh) in zip(group, placed):
            h, w = image.shape[:2]
            canvas[y : y + nh, x : x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
            xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
            moved = xyxy * [nw / w, nh / h, nw / w, nh / h] + [x, y, x, y]
            kept = ((moved[:, 2] - moved[:, 0]) >= 1) & ((moved[:, 3] - moved[:, 1]) >= 1)
            boxes.append(moved[kept])
            classes.append(np.asarray(class_id, dtype=np.int64).reshape(-1)[kept])
            origin.append(offset + np.flatnonzero(kept))
            offset += len(xyxy)
        tiles.append(Tile(canvas, np.concatenate(boxes), np.concatenate(classes), np.concatenate(origin)))
    return tiles


def yolo_label_lines(xyxy: np.ndarray, class_id: np.ndarray, resolution_wh: tuple[int, int]) -> list[str]:
    """Pixel boxes as YOLO label lines (normalised ``class cx cy w h``, 8 decimals so that reading them back is exact
    to well under a pixel).

    Examples:
        >>> yolo_label_lines(np.array([[50., 0., 60., 10.]]), np.array([2]), (100, 100))
        ['2 0.55000000 0.05000000 0.10000000 0.10000000']
    """
    w, h = resolution_wh
    return [
        f"{int(c)} {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} {(y2 - y1) / h:.8f}"
        for (x1, y1, x2, y2), c in zip(np.asarray(xyxy).reshape(-1, 4).tolist(), np.asarray(class_id).tolist())
    ]


def altitude_mlflow_metrics(altitude: Mapping[str, Any] | None, prefix: str) -> dict[str, float]:
    """metrics.json's ``altitude`` block as MLflow metrics ``<prefix>/altitude/<z>/map50`` and ``.../map50_95``.

    Examples:
        >>> altitude_mlflow_metrics({"per_scale": {"0.5": {"map50": 0.4, "map50_95": None}}}, "eval")
        {'eval/altitude/0.5/map50': 0.4}
    """
    out = {}
    for z, entry in (altitude or {}).get("per_scale", {}).items():
        for key in ("map50", "map50_95"):
            if entry.get(key) is not None:
                out[f"{prefix}/altitude/{z}/{key}"] = float(entry[key])
    return out


# --- I/O -------------------------------------------------------------------------------------------------------


def variant_key(truth: GroundTruth, z: float) -> str:
    """What a variant is made of, hashed: the scale, the class names, each image's path, size and mtime, its boxes."""
    digest = hashlib.sha256(json.dumps([VARIANT_VERSION, z, sorted(truth.names.items())]).encode())
    for image, det in zip(truth.images, truth.boxes):
        stat = Path(image).stat()
        digest.update(f"{image}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        digest.update(np.ascontiguousarray(det.xyxy, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(det.class_id, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DroneVisionError(f"{path}: cannot be read as an image")
    return image


def _tiles(truth: GroundTruth, z: float) -> Iterator[tuple[str, Tile, list[int]]]:
    """The variant's images with their file names and the positions of their source images in the split, one source
    image (zoom in) or one mosaic (zoom out) at a time."""
    if z > 1:
        n = math.ceil(z - 1e-9)
        for i, (path, det) in enumerate(zip(truth.images, truth.boxes)):
            for t, tile in enumerate(zoom_in(_read(path), det.xyxy, det.class_id, z)):
                yield f"{i:06d}_{Path(path).stem}_r{t // n}c{t % n}", tile, [i]
        return
    k2 = per_side(z) ** 2
    for j, start in enumerate(range(0, len(truth.images), k2)):
        group = list(range(start, min(start + k2, len(truth.images))))
        items = [(_read(truth.images[i]), truth.boxes[i].xyxy, truth.boxes[i].class_id) for i in group]
        (tile,) = zoom_out(items, z)
        yield f"mosaic_{j:06d}", tile, group


def build_variant(truth: GroundTruth, z: float, out: Path) -> tuple[Path, dict[str, int]]:
    """Write the split zoomed by ``z`` as a YOLO dataset in ``out`` (``images/``, ``labels/``, a ``data.yaml`` whose
    train, val and test are all ``images``, the same class names) and ``variant.json`` (key, counts, the source images
    of each image). A folder already built from the same source (:func:`variant_key`) is reused. Returns the folder
    and the counts: ``images``, ``boxes``, ``dropped`` (boxes of the split in no image of the variant).
    """
    import cv2
    import yaml

    out = Path(out)
    key = variant_key(truth, z)
    record = out / "variant.json"
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("key") == key:
            log.info("altitude %s: reusing %s", scale_name(z), out)
            return out, done["counts"]
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    (partial / "labels").mkdir()
    suffix = ".png" if all(Path(p).suffix.lower() == ".png" for p in truth.images) else ".jpg"
    first_box = np.cumsum([0] + [len(d) for d in truth.boxes])  # a source image's first box among all boxes
    kept: set[int] = set()
    n_boxes = 0
    sources: dict[str, list[str]] = {}
    for name, tile, group in _tiles(truth, z):
        cv2.imwrite(str(partial / "images" / f"{name}{suffix}"), tile.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines = yolo_label_lines(tile.xyxy, tile.class_id, (tile.image.shape[1], tile.image.shape[0]))
        (partial / "labels" / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
        kept.update((first_box[group[0]] + tile.origin).tolist())
        n_boxes += len(tile.xyxy)
        sources[name] = [str(truth.images[i]) for i in group]
    counts = {"images": len(sources), "boxes": n_boxes, "dropped": int(first_box[-1]) - len(kept)}
    data = {"path": str(out.resolve()), "train": "images", "val": "images", "test": "images", "names": truth.names}
    (partial / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    meta = {"key": key, "z": z, "source": str(truth.source), "counts": counts, "sources": sources}
    (partial / "variant.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    log.info("altitude %s: %s in %s", scale_name(z), counts, out)
    return out, counts


# --- the evaluation --------------------------------------------------------------------------------------------


def known_gsd_settings(settings: SliceSettings, z: float) -> SliceSettings:
    """``settings`` for the variant at zoom ``z`` with its altitude known: its GSD is the training's divided by ``z``
    (``slicing.gsd.train_m``, or 1 when unset: only the ratio matters), so GSD-aware inference resizes it by 1/z.

    Examples:
        >>> from dronevision.infer import SliceSettings
        >>> known_gsd_settings(SliceSettings(), 2.0).gsd
        GsdSettings(train_m=1.0, value_m=0.5, altitude_m=None, focal_mm=None, sensor_width_mm=None, sidecar=True)
    """
    train_m = settings.gsd.train_m or 1.0
    return replace(settings, gsd=replace(settings.gsd, train_m=train_m, value_m=train_m / z, altitude_m=None))


def evaluate_altitude(
    scales: Sequence[float],
    truth: GroundTruth,
    predictions: Sequence[Detections],
    *,
    detector: Any,
    settings: SliceSettings,
    batch: int,
    out_dir: Path,
    coco: Mapping[str, Any] | None = None,
    detect: Any = None,
    known_gsd: bool = False,
) -> dict[str, Any]:
    """COCO mAP50 and mAP50-95 of ``detector`` per scale, on variants built under ``out_dir/altitude/<z>/``; scale 1
    is the split itself, scored from ``predictions`` (or ``coco``, the main evaluation's COCO result, when given).
    ``detect(detector, variant, settings=, batch=, progress=)`` makes a variant's detections: the evaluate stage's
    ``predict`` by default; detections made elsewhere can be scored the same way. ``known_gsd``: each variant is
    read as footage whose altitude is known (:func:`known_gsd_settings`), so GSD-aware inference resizes it back.
    Writes ``out_dir/altitude_curve.png``; returns metrics.json's ``altitude`` block."""
    from dronevision.evaluate.command import compute_metrics, predict
    from dronevision.evaluate.ground_truth import load_ground_truth
    from dronevision.evaluate.pictures import plot_altitude_curve

    detect = detect or predict

    per_scale: dict[str, dict[str, Any]] = {}
    for z in scales:
        if z == 1:
            variant, dropped = truth, 0
            overall = (coco or compute_metrics("coco", truth, predictions))["overall"]
        else:
            folder, counts = build_variant(truth, z, out_dir / "altitude" / scale_name(z))
            variant, dropped = load_ground_truth(folder, "val"), counts["dropped"]
            seen = known_gsd_settings(settings, z) if known_gsd else settings
            found, _ = detect(detector, variant, settings=seen, batch=batch, progress=False)
            overall = compute_metrics("coco", variant, found)["overall"]
        per_scale[scale_name(z)] = {
            "map50": overall["AP50"],
            "map50_95": overall["AP"],
            "images": len(variant.images),
            "boxes": int(sum(len(b) for b in variant.boxes)),
            "dropped": dropped,
        }
        log.info("altitude %s: mAP50 %s mAP50-95 %s", scale_name(z), overall["AP50"], overall["AP"])
    curve = plot_altitude_curve(per_scale, out_dir / "altitude_curve.png")
    return {"scales": list(scales), "known_gsd": known_gsd, "per_scale": per_scale, "curve": str(curve)}
