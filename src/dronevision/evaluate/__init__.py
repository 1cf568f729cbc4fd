"""Evaluate detectors: COCO and VisDrone protocols, pictures, sliced inference; ``python -m dronevision.evaluate``."""

from dronevision.evaluate.core import (
    COCO_STATS,
    coco_detections,
    coco_ground_truth,
    coco_metrics,
    evaluate_checkpoint,
    load_model,
    load_split,
    predict,
    ultralytics_metrics,
    yolo_to_xyxy,
)

__all__ = [
    "COCO_STATS",
    "coco_detections",
    "coco_ground_truth",
    "coco_metrics",
    "evaluate_checkpoint",
    "load_model",
    "load_split",
    "predict",
    "ultralytics_metrics",
    "yolo_to_xyxy",
]
