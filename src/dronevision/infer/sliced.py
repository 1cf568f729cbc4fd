"""Sliced inference (the SAHI idea): detect in overlapping tiles run in batches, move boxes to the image, merge.

Semantics follow SAHI's ``get_sliced_prediction`` so that its boxes and ours can be compared one to one: the same
tiles (:func:`dronevision.infer.geometry.slice_bboxes`), boxes clipped to their tile by the model and shifted by
the tile's corner, nothing dropped at tile borders, an optional full-frame pass added when there is more than one
tile, then one merge over all boxes (:func:`dronevision.infer.merge.merge_detections`). SAHI's defaults,
``full_frame=True, merge="nmm", match="ios", match_threshold=0.5``, class-aware, are :class:`SliceSettings`'
defaults; the project's own live in ``configs/slicing/default.yaml``.

One difference on purpose: with a single tile and no full-frame pass the model's own detections are returned
unmerged, so one tile covering the image gives exactly the plain inference (SAHI would still merge them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.detector import Detector, add_time
from dronevision.infer.geometry import shift_boxes, slice_bboxes
from dronevision.infer.gsd import GsdScaler, GsdSettings, settings_values
from dronevision.infer.merge import MATCHES, MERGES, merge_detections
from dronevision.schema import Detections

log = logging.getLogger(__name__)


# --- pure core -------------------------------------------------------------------------------------------------


def tile_crops(image: np.ndarray, tiles_xyxy: np.ndarray) -> list[np.ndarray]:
    """Views of ``image`` for each tile (no copies).

    Examples:
        >>> [c.shape for c in tile_crops(np.zeros((4, 6, 3)), np.array([[0, 0, 4, 4], [2, 0, 6, 4]]))]
        [(4, 4, 3), (4, 4, 3)]
    """
    return [image[y1:y2, x1:x2] for x1, y1, x2, y2 in np.asarray(tiles_xyxy).tolist()]


def shift_tile_detections(per_tile: Sequence[Detections], tiles_xyxy: np.ndarray) -> Detections:
    """Boxes found in each tile, moved to image pixels by the tile's top-left corner, as one set.

    Examples:
        >>> d = Detections(xyxy=[[1, 2, 3, 4]], class_id=[0], confidence=[0.9])
        >>> shift_tile_detections([d, d], np.array([[0, 0, 10, 10], [100, 50, 110, 60]])).xyxy.tolist()
        [[1.0, 2.0, 3.0, 4.0], [101.0, 52.0, 103.0, 54.0]]
    """
    tiles = np.asarray(tiles_xyxy).reshape(-1, 4)
    if len(per_tile) != len(tiles):
        raise ValueError(f"{len(per_tile)} detection sets for {len(tiles)} tiles")
    merged = Detections.merge(per_tile)
    offsets = np.repeat(tiles[:, :2], [len(d) for d in per_tile], axis=0)
    return Detections(xyxy=shift_boxes(merged.xyxy, offsets), class_id=merged.class_id, confidence=merged.confidence)


def _check_number(name: str, value: Any, *, zero: bool = False) -> None:
    """Refuse ``slicing.<name>`` unless it is a number > 0 (>= 0 with ``zero``), in one line."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not zero):
        raise DroneVisionError(f"slicing.{name} must be a number {'>=' if zero else '>'} 0, got {value!r}")


# --- settings --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceSettings:
    """Sliced-inference settings: the ``slicing`` config group (``configs/slicing/default.yaml``, where the
    project's defaults live), read once and passed by value. The field defaults are SAHI's, for Python callers.

    Attributes:
        enabled: slice (else plain inference on whole images).
        tile: tile side in pixels (an image smaller than a tile in a dimension is one tile in that dimension).
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        batch: tiles per forward pass (a static-batch ONNX model uses its own batch).
        full_frame: also detect on the whole image (SAHI's ``perform_standard_pred``), when it has several tiles.
        merge: ``nmm`` (greedy non-maximum merging) or ``nms``.
        match: ``ios`` (intersection over the smaller box) or ``iou``.
        match_threshold: boxes overlapping at least this much are merged or suppressed.
        class_agnostic: merge boxes across classes.
        scales: multi-scale inference, e.g. ``(0.75, 1.0, 1.5)``: each image also resized by these factors, the
            boxes mapped back and merged by ``merge``/``match`` (:mod:`dronevision.infer.multiscale`); None: one.
        scales_focus: a power ``p``: each scale's confidences times ``(its score / the best scale's) ** p``, a
            score being the mean of the scale's 20 highest confidences in that image (one frame, one altitude:
            the scale the model is surest at counts most); 0: off.
        scales_box_px: the training objects' median side in pixels as the model saw them; with ``scales``, a box
            larger than this at the largest scale, or smaller at a smaller one, counts less
            (:func:`dronevision.infer.multiscale.size_weights`). None: the model's own
            (:attr:`dronevision.infer.Detector.train_box_px`), else no weighting.
        scales_box_sigma: the spread of that weighting in natural-log units of size.
        gsd: GSD-aware inference (:class:`dronevision.infer.gsd.GsdSettings`): images resized so that objects
            appear at the training scale; off while ``gsd.train_m`` is None.

    Examples:
        >>> SliceSettings.from_config({"enabled": True, "tile": 512}).tile
        512
        >>> SliceSettings.from_config({"tiles": 512})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: unknown slicing keys ['tiles']; valid: enabled, tile, overlap, ...
    """

    enabled: bool = False
    tile: int = 640
    overlap: float = 0.2
    batch: int = 8
    full_frame: bool = True
    merge: str = "nmm"
    match: str = "ios"
    match_threshold: float = 0.5
    class_agnostic: bool = False
    scales: tuple[float, ...] | None = None
    scales_focus: float = 0.0
    scales_box_px: float | None = None
    scales_box_sigma: float = 0.4
    gsd: GsdSettings = GsdSettings()

    def __post_init__(self) -> None:
        if not isinstance(self.tile, int) or isinstance(self.tile, bool) or self.tile < 1:
            raise DroneVisionError(f"slicing.tile must be a whole number of pixels >= 1, got {self.tile!r}")
        if not 0 <= float(self.overlap) < 1:
            raise DroneVisionError(f"slicing.overlap must be in [0, 1), got {self.overlap!r}")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise DroneVisionError(f"slicing.batch must be a whole number >= 1, got {self.batch!r}")
        for name, value, choices in (("merge", self.merge, MERGES), ("match", self.match, MATCHES)):
            if value not in choices:
                raise DroneVisionError(f"slicing.{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.scales is not None:
            scales = self.scales if isinstance(self.scales, (list, tuple)) else [self.scales]
            if not scales or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 8 for x in scales
            ):
                raise DroneVisionError(f"slicing.scales must be a list of factors in (0, 8], got {self.scales!r}")
            object.__setattr__(self, "scales", tuple(float(x) for x in scales))
        _check_number("scales_focus", self.scales_focus, zero=True)
        _check_number("scales_box_sigma", self.scales_box_sigma)
        if self.scales_box_px is not None:
            _check_number("scales_box_px", self.scales_box_px)
        if isinstance(self.gsd, Mapping):
            object.__setattr__(self, "gsd", GsdSettings.from_config(self.gsd))

    @property
    def scaling(self) -> bool:
        """Whether images are resized before detection (``scales`` or ``gsd`` set)."""
        return self.scales is not None or self.gsd.active

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> SliceSettings:
        """Settings from a ``slicing`` mapping (a Hydra group or a dict); unknown keys are refused, missing ones
        take the field defaults, and None means disabled."""
        if not config:
            return cls()
        values = settings_values(cls, config, "slicing")
        if "scales" in values and not isinstance(values["scales"], (int, float)):
            values["scales"] = tuple(values["scales"])  # a Hydra ListConfig
        if "gsd" in values:
            values["gsd"] = GsdSettings.from_config(dict(values["gsd"]))
        return cls(**values)


# --- inference -------------------------------------------------------------------------------------------------


def sliced_predict(
    detector: Detector, image_bgr: np.ndarray, settings: SliceSettings, *, timings: dict[str, float] | None = None
) -> Detections:
    """Detect in overlapping square tiles of one image, run in batches, and merge the boxes.

    ``settings.enabled`` is not consulted: this always slices (see :func:`predict_images`).

    Args:
        detector: from :func:`dronevision.infer.load_detector` (its ``conf``, ``iou``, ``imgsz`` apply per tile).
        image_bgr: ``(H, W, 3)`` uint8 BGR.
        settings: tile size, overlap, batch and merge.
        timings: if given, the seconds spent are added to it per stage: the detector's ``tiles``, ``inference``
            and ``decode`` (:meth:`Detector.predict`), then ``merge`` (moving tile boxes to the image, merging).

    Returns:
        Boxes in image pixels with confidences, highest first (unmerged, as the model gave them, for one tile).
    """
    s = settings
    h, w = image_bgr.shape[:2]
    tiles = slice_bboxes((w, h), size=s.tile, overlap=s.overlap)
    full_frame = s.full_frame and len(tiles) > 1
    images = [*tile_crops(image_bgr, tiles), *([image_bgr] if full_frame else [])]
    found = detector.predict(images, batch=s.batch, timings=timings)  # the whole frame is a shape group of its own
    if len(tiles) == 1:
        return found[0]
    started = time.perf_counter()
    det = shift_tile_detections(found[: len(tiles)], tiles)
    if full_frame:
        det = Detections.merge([det, found[-1]])
    if len(det) > 1:
        det = merge_detections(
            det, merge=s.merge, match=s.match, threshold=s.match_threshold, class_agnostic=s.class_agnostic
        )
    add_time(timings, "merge", started)
    return det


def read_bgr(image: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8; a file that is not an image is a :class:`DroneVisionError`."""
    import cv2

    frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if frame is None:
        raise DroneVisionError(f"{image}: cannot be read as an image")
    return frame


def predict_images(
    detector: Detector,
    images: Sequence[np.ndarray | str | Path],
    *,
    settings: SliceSettings,
    batch: int = 8,
    progress: bool = False,
) -> Iterator[Detections]:
    """Detections per image, in order: plain inference in batches of ``batch`` images, or sliced inference
    (:func:`sliced_predict`) image by image when ``settings.enabled``. Images are BGR arrays or files, read as they
    come. The one loop that evaluate, compare, pre-labelling and track run a detector with.

    With ``settings.scales`` or ``settings.gsd`` images are resized first (the config's GSD; per-video sidecars and
    SRT tracks are the caller's: :meth:`GsdScaler.for_video`) by :func:`dronevision.infer.multiscale.scaled_predict`.
    """
    from tqdm import tqdm

    if settings.scaling:
        yield from _scaled_images(detector, images, settings=settings, batch=batch, progress=progress)
        return

    step = batch if not settings.enabled else 1
    chunks = [images[i : i + step] for i in range(0, len(images), step)]
    unit = "image" if settings.enabled else "batch"
    for chunk in tqdm(chunks, desc="inference", unit=unit, disable=not progress or len(images) < 2):
        frames = [item if isinstance(item, np.ndarray) else read_bgr(item) for item in chunk]
        if settings.enabled:
            yield sliced_predict(detector, frames[0], settings)
        else:
            yield from detector.predict(frames, batch=batch)


def _scaled_images(
    detector: Detector,
    images: Sequence[np.ndarray | str | Path],
    *,
    settings: SliceSettings,
    batch: int,
    progress: bool,
) -> Iterator[Detections]:
    """:func:`predict_images` with images resized by the config's GSD factor and ``settings.scales``."""
    from tqdm import tqdm

    from dronevision.infer.multiscale import scaled_predict

    scaler = GsdScaler(settings.gsd)
    step = 1 if settings.enabled else batch
    chunks = [images[i : i + step] for i in range(0, len(images), step)]
    for chunk in tqdm(chunks, desc="inference", unit="batch", disable=not progress or len(images) < 2):
        frames = [item if isinstance(item, np.ndarray) else read_bgr(item) for item in chunk]
        factors = [scaler.factor(frame.shape[1]) for frame in frames]
        yield from scaled_predict(detector, frames, settings, factors=factors, batch=batch)
