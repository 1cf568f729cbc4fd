"""COCO records from ground truth and predictions, and ultralytics' own validation numbers beside ours.

The COCO scoring itself is :func:`dronevision.evaluate.protocols.coco_protocol`, the project's one COCOeval wrapper.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.schema import Detections

log = logging.getLogger(__name__)

# --- pure core -------------------------------------------------------------------------------------------------


def yolo_to_xyxy(rows: Sequence[Sequence[float]], resolution_wh: tuple[int, int]) -> Detections:
    """YOLO label rows ``(class, cx, cy, w, h)`` (normalised) to pixel ``xyxy`` boxes.

    Examples:
        >>> yolo_to_xyxy([(0, 0.5, 0.5, 0.5, 0.25)], resolution_wh=(200, 100)).xyxy.tolist()
        [[50.0, 37.5, 150.0, 62.5]]
    """
    if not rows:
        return Detections.empty()
    arr = np.asarray(rows, dtype=np.float64)
    w, h = resolution_wh
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return Detections(xyxy=xyxy, class_id=arr[:, 0])


def coco_ground_truth(
    images: Sequence[tuple[str, tuple[int, int], Detections]], names: dict[int, str]
) -> dict[str, Any]:
    """A COCO ground-truth dict from ``(file name, (w, h), boxes)`` per image; ids are positions, classes + 1.

    Examples:
        >>> gt = coco_ground_truth([("a.jpg", (10, 10), yolo_to_xyxy([(0, .5, .5, .2, .4)], (10, 10)))], {0: "car"})
        >>> gt["annotations"][0]["bbox"], gt["categories"]
        ([4.0, 3.0, 2.0, 4.0], [{'id': 1, 'name': 'car'}])
    """
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": k + 1, "name": v} for k, v in sorted(names.items())],
    }
    for image_id, (file_name, (w, h), det) in enumerate(images):
        coco["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for (x1, y1, x2, y2), cls in zip(det.xyxy.tolist(), det.class_id.tolist()):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return coco


def coco_detections(predictions: Iterable[Detections]) -> list[dict[str, Any]]:
    """COCO result records from per-image predictions, image ids by position (as in :func:`coco_ground_truth`)."""
    records = []
    for image_id, det in enumerate(predictions):
        assert det.confidence is not None, "predictions need confidences"
        for (x1, y1, x2, y2), cls, score in zip(det.xyxy.tolist(), det.class_id.tolist(), det.confidence.tolist()):
            records.append(
                {"image_id": image_id, "category_id": cls + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    return records


# --- I/O adapters ----------------------------------------------------------------------------------------------


def load_model(weights: Path) -> Any:
    """An ultralytics detector from a local .pt or .onnx (never downloaded: the caller checks the path)."""
    from ultralytics import YOLO

    return YOLO(str(weights), task="detect")


def ultralytics_metrics(
    weights: Path,
    data_yaml: Path,
    *,
    split: str,
    imgsz: int,
    batch: int,
    device: str | None,
    out_dir: Path,
    plots: bool,
    rect: bool | None = None,
) -> dict[str, float]:
    """ultralytics' own validation numbers (its mAP interpolation differs from pycocotools').

    ``rect=False`` letterboxes every image to ``imgsz`` squared, as a fixed-shape ONNX file must be fed; None keeps
    ultralytics' default.
    """
    from dronevision.infer.model import end2end_args

    model = load_model(weights)
    metrics = model.val(
        data=str(data_yaml),
        split=split,
        imgsz=imgsz,
        batch=batch,
        device=device,
        project=str(out_dir.parent),
        name=out_dir.name,
        exist_ok=True,
        plots=plots,
        verbose=False,
        **({} if rect is None else {"rect": rect}),
        **end2end_args(model.model),  # a .pt's NMS-free head, as its ONNX export runs it
    )
    precision, recall, map50, map50_95 = (float(v) for v in metrics.mean_results())
    return {"map50": map50, "map50_95": map50_95, "precision": precision, "recall": recall}
