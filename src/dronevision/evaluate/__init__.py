"""Evaluate detectors: COCO and VisDrone protocols, pictures, sliced inference; ``python -m dronevision.evaluate``."""

from dronevision.evaluate.altitude import build_variant, evaluate_altitude, zoom_in, zoom_out
from dronevision.evaluate.core import coco_detections, coco_ground_truth, load_model, ultralytics_metrics, yolo_to_xyxy

__all__ = [
    "build_variant",
    "coco_detections",
    "coco_ground_truth",
    "evaluate_altitude",
    "load_model",
    "ultralytics_metrics",
    "yolo_to_xyxy",
    "zoom_in",
    "zoom_out",
]
