"""Tile geometry (the SAHI idea): tiles covering an image, boxes cut by tile edges, tile boxes moved to the image.

Pure geometry, shared by the dataset stage (tiling) and sliced inference (:mod:`dronevision.infer.sliced`).
"""

from __future__ import annotations

import numpy as np


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    return [*starts, length - size]  # the last tile is aligned to the far edge, as SAHI does


def slice_bboxes(resolution_wh: tuple[int, int], *, size: int, overlap: float) -> np.ndarray:
    """Tiles of ``size`` x ``size`` with a fractional ``overlap``, covering the image, as ``(T, 4)`` ``xyxy``.

    A tile never leaves the image: the last row and column are shifted back to end at the edge, and an image
    smaller than a tile is one tile of its own size.

    Examples:
        >>> slice_bboxes((1000, 600), size=640, overlap=0.2).tolist()
        [[0, 0, 640, 600], [360, 0, 1000, 600]]
        >>> slice_bboxes((300, 200), size=640, overlap=0.2).tolist()
        [[0, 0, 300, 200]]
        >>> slice_bboxes((2000, 1500), size=640, overlap=0.2)[:, 0].tolist()  # 12 tiles, as SAHI cuts them
        [0, 512, 1024, 1360, 0, 512, 1024, 1360, 0, 512, 1024, 1360]
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    w, h = resolution_wh
    step = max(1, size - int(overlap * size))  # SAHI's rounding: int(0.7 * 640) is 447, 640 - int(0.3 * 640) is 448
    tiles = [[x, y, min(x + size, w), min(y + size, h)] for y in _starts(h, size, step) for x in _starts(w, size, step)]
    return np.asarray(tiles, dtype=np.int64).reshape(-1, 4)


def box_areas(xyxy: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` boxes (0 for degenerate ones)."""
    return np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)


def clip_boxes(xyxy: np.ndarray, window_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to a window; returns the clipped boxes in window coordinates and the visible fraction of each.

    Examples:
        >>> clipped, visible = clip_boxes(np.array([[90., 10, 110, 20]]), np.array([0, 0, 100, 100]))
        >>> clipped.tolist(), visible.tolist()
        ([[90.0, 10.0, 100.0, 20.0]], [0.5])
    """
    x1, y1, x2, y2 = (float(v) for v in window_xyxy)
    clipped = np.stack(
        [
            np.clip(xyxy[:, 0], x1, x2),
            np.clip(xyxy[:, 1], y1, y2),
            np.clip(xyxy[:, 2], x1, x2),
            np.clip(xyxy[:, 3], y1, y2),
        ],
        axis=1,
    ).reshape(-1, 4)
    area = box_areas(xyxy)
    visible = np.divide(box_areas(clipped), area, out=np.zeros(len(xyxy)), where=area > 0)
    return clipped - np.array([x1, y1, x1, y1]), visible


def shift_boxes(xyxy: np.ndarray, offsets_xy: np.ndarray) -> np.ndarray:
    """Move ``(N, 4)`` boxes found in tiles to image coordinates by their tiles' top-left corners ``(N, 2)``.

    Examples:
        >>> shift_boxes(np.array([[1., 2, 3, 4]]), np.array([[100, 10]])).tolist()
        [[101.0, 12.0, 103.0, 14.0]]
    """
    offsets = np.asarray(offsets_xy, dtype=np.float64).reshape(-1, 2)
    return np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) + np.tile(offsets, 2)
