"""Sliced inference (the SAHI idea): detect in overlapping tiles run in batches, move boxes to the image, merge.

Semantics follow SAHI's ``get_sliced_prediction`` so that its boxes and ours can be compared one to one: the same
tiles (:func:`dronevision.infer.geometry.slice_bboxes`), boxes clipped to their tile by the model and shifted by
the tile's corner, nothing dropped at tile borders, an optional full-frame pass added when there is more than one
tile, then one merge over all boxes (:func:`dronevision.infer.merge.merge_detections`). SAHI's defaults are
``full_frame=True, merge="nmm", match="ios", match_threshold=0.5``, class-aware; ours differ only in
``full_frame=False`` (the downscaled full frame mostly adds large objects, at the cost of one more pass).

One difference on purpose: with a single tile and no full-frame pass the model's own detections are returned
unmerged, so one tile covering the image gives exactly the plain inference (SAHI would still merge them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.detector import Detector
from dronevision.infer.geometry import shift_boxes, slice_bboxes
from dronevision.infer.merge import MATCHES, MERGES, check_choice, merge_detections
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


def concat_detections(parts: Sequence[Detections]) -> Detections:
    """One :class:`Detections` from several, in order (all with confidences).

    Examples:
        >>> a = Detections(xyxy=[[0, 0, 1, 1]], class_id=[2], confidence=[0.5])
        >>> concat_detections([a, Detections.empty(with_confidence=True), a]).class_id.tolist()
        [2, 2]
    """
    if not parts:
        return Detections.empty(with_confidence=True)
    return Detections(
        xyxy=np.concatenate([p.xyxy for p in parts]),
        class_id=np.concatenate([p.class_id for p in parts]),
        confidence=np.concatenate([p.confidence if p.confidence is not None else np.ones(len(p)) for p in parts]),
    )


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
    merged = concat_detections(per_tile)
    offsets = np.repeat(tiles[:, :2], [len(d) for d in per_tile], axis=0)
    return Detections(xyxy=shift_boxes(merged.xyxy, offsets), class_id=merged.class_id, confidence=merged.confidence)


# --- inference -------------------------------------------------------------------------------------------------


def sliced_predict(
    detector: Detector,
    image_bgr: np.ndarray,
    *,
    tile: int = 640,
    overlap: float = 0.2,
    batch: int = 8,
    full_frame: bool = False,
    merge: str = "nmm",
    match: str = "ios",
    match_threshold: float = 0.5,
    class_agnostic: bool = False,
) -> Detections:
    """Detect in overlapping square tiles of one image, run in batches, and merge the boxes.

    Args:
        detector: from :func:`dronevision.infer.load_detector` (its ``conf``, ``iou``, ``imgsz`` apply per tile).
        image_bgr: ``(H, W, 3)`` uint8 BGR.
        tile: tile side in pixels (an image smaller than a tile in a dimension is one tile in that dimension).
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        batch: tiles per forward pass (a static-batch ONNX model uses its own batch).
        full_frame: also detect on the whole image (SAHI's ``perform_standard_pred``), when it has several tiles.
        merge: ``nmm`` (greedy non-maximum merging) or ``nms``.
        match: ``ios`` (intersection over the smaller box) or ``iou``.
        match_threshold: boxes overlapping at least this much are merged or suppressed.
        class_agnostic: merge boxes across classes.

    Returns:
        Boxes in image pixels with confidences, highest first (unmerged, as the model gave them, for one tile).
    """
    check_choice("merge", merge, MERGES)
    check_choice("match", match, MATCHES)
    if tile < 1:
        raise DroneVisionError(f"tile must be at least 1 pixel, got {tile}")
    h, w = image_bgr.shape[:2]
    tiles = slice_bboxes((w, h), size=tile, overlap=overlap)
    per_tile = detector.predict(tile_crops(image_bgr, tiles), batch=batch)
    if len(tiles) == 1:
        return per_tile[0]
    det = shift_tile_detections(per_tile, tiles)
    if full_frame:
        det = concat_detections([det, detector.predict([image_bgr], batch=1)[0]])
    if len(det) <= 1:
        return det
    return merge_detections(det, merge=merge, match=match, threshold=match_threshold, class_agnostic=class_agnostic)


def read_bgr(image: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8; a file that is not an image is a :class:`DroneVisionError`."""
    import cv2

    frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if frame is None:
        raise DroneVisionError(f"{image}: cannot be read as an image")
    return frame


def sliced_predict_iter(
    detector: Detector,
    images: Iterable[np.ndarray | str | Path],
    *,
    progress: bool = False,
    **params: object,
) -> Iterator[Detections]:
    """:func:`sliced_predict` over many images (arrays or files, read as they come); one result per image.

    Args:
        detector: from :func:`dronevision.infer.load_detector`.
        images: BGR arrays or image files.
        progress: show a tqdm bar.
        **params: :func:`sliced_predict`'s keyword arguments (``tile``, ``overlap``, ``batch``, ``merge``, ...).
    """
    items: Iterable[np.ndarray | str | Path] = images
    if progress:
        from tqdm import tqdm

        items = tqdm(images, desc="sliced inference", unit="image")
    for item in items:
        image = item if isinstance(item, np.ndarray) else read_bgr(item)
        yield sliced_predict(detector, image, **params)  # type: ignore[arg-type]
