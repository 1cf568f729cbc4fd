"""Tiles for small objects (the SAHI idea): tile geometry, batched sliced inference, and merging tile boxes.

Shared by the dataset stage (tiling), pre-labelling, evaluation and tracking.

- :mod:`~dronevision.infer.geometry`: tiles covering an image, boxes cut by tile edges (pure).
- :mod:`~dronevision.infer.merge`: NMS and greedy NMM with IoU or IoS matching, SAHI's semantics (pure).
- :mod:`~dronevision.infer.yolo`: letterbox and YOLO decoding for ONNX models, vectorised over a batch.
- :mod:`~dronevision.infer.detector`: :func:`load_detector` (ultralytics ``torch``, OpenVINO, ONNX Runtime).
- :mod:`~dronevision.infer.sliced`: :func:`sliced_predict` and :func:`sliced_predict_iter`.

Example::

    detector = load_detector(Path("best.onnx"), conf=0.25)  # OpenVINO on the CPU, every core
    det = sliced_predict(detector, frame_bgr, tile=640, overlap=0.2, batch=6)
"""

from dronevision.infer.detector import Detector, OnnxDetector, TorchDetector, load_detector
from dronevision.infer.geometry import box_areas, clip_boxes, shift_boxes, slice_bboxes
from dronevision.infer.merge import greedy_nmm, merge_detections, nms, overlap, pairwise_overlap
from dronevision.infer.sliced import sliced_predict, sliced_predict_iter

__all__ = [
    "Detector",
    "OnnxDetector",
    "TorchDetector",
    "box_areas",
    "clip_boxes",
    "greedy_nmm",
    "load_detector",
    "merge_detections",
    "nms",
    "overlap",
    "pairwise_overlap",
    "shift_boxes",
    "slice_bboxes",
    "sliced_predict",
    "sliced_predict_iter",
]
