"""Reading a dataset image with its boxes, and writing one back: the only disk access of preview and materialize."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dronevision.dataset.yolo import label_path, parse_label_lines
from dronevision.errors import DroneVisionError


def yolo_rows_to_xyxy(
    rows: list[tuple[int, float, float, float, float]], resolution_wh: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """YOLO rows ``(class, cx, cy, w, h)`` (normalised) to pixel ``xyxy`` boxes and class ids.

    Examples:
        >>> xyxy, ids = yolo_rows_to_xyxy([(1, 0.5, 0.5, 0.2, 0.5)], (100, 40))
        >>> xyxy.tolist(), ids.tolist()
        ([[40.0, 10.0, 60.0, 30.0]], [1])
    """
    arr = np.asarray([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4) * np.tile(resolution_wh, 2)
    xyxy = np.concatenate([arr[:, :2] - arr[:, 2:] / 2, arr[:, :2] + arr[:, 2:] / 2], axis=1)
    return xyxy.astype(np.float32), np.asarray([r[0] for r in rows], dtype=np.int64)


def read_rows(image: Path, *, n_classes: int) -> list[tuple[int, float, float, float, float]]:
    """The parsed YOLO label rows of an image; no label file means no boxes."""
    label = label_path(image)
    return (
        parse_label_lines(label.read_text().splitlines(), n_classes=n_classes, source=label) if label.is_file() else []
    )


def load_sample(image: Path, *, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(RGB image, xyxy boxes in pixels, class ids)`` of a dataset image; no label file means no boxes."""
    import cv2

    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DroneVisionError(f"{image}: cannot be decoded as an image")
    h, w = bgr.shape[:2]
    xyxy, ids = yolo_rows_to_xyxy(read_rows(image, n_classes=n_classes), (w, h))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), xyxy, ids


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image (JPEG quality 95, or lossless by suffix)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise DroneVisionError(f"{path}: could not be written")
