"""Evaluate detectors: COCO and VisDrone protocols, pictures, sliced inference; ``python -m dronevision.evaluate``."""

from dronevision.evaluate.core import coco_detections, coco_ground_truth, load_model, ultralytics_metrics, yolo_to_xyxy

__all__ = ["coco_detections", "coco_ground_truth", "load_model", "ultralytics_metrics", "yolo_to_xyxy"]
