"""Tiles for small objects (the SAHI idea): tile geometry, batched sliced inference, and merging tile boxes.

Shared by the dataset stage (tiling), pre-labelling, evaluation and tracking.

- :mod:`~dronevision.slicing.geometry`: tiles covering an image, boxes cut by tile edges (pure).
- :mod:`~dronevision.slicing.merge`: NMS and greedy NMM with IoU or IoS matching, SAHI's semantics (pure).
- :mod:`~dronevision.slicing.yolo`: letterbox and YOLO decoding for ONNX models, vectorised over a batch.
- :mod:`~dronevision.slicing.detector`: :func:`load_detector` (ultralytics ``torch``, OpenVINO, ONNX Runtime).
- :mod:`~dronevision.slicing.sliced`: :func:`sliced_predict` and :func:`sliced_predict_iter`.

Example::

    detector = load_detector(Path("best.onnx"), conf=0.25)  # OpenVINO on the CPU, every core
    det = sliced_predict(detector, frame_bgr, tile=640, overlap=0.2, batch=6)
"""

from dronevision.slicing.detector import Detector, OnnxDetector, TorchDetector, load_detector
from dronevision.slicing.geometry import box_areas, clip_boxes, shift_boxes, slice_bboxes
from dronevision.slicing.merge import greedy_nmm, merge_detections, nms, overlap, pairwise_overlap
from dronevision.slicing.sliced import sliced_predict, sliced_predict_iter

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
