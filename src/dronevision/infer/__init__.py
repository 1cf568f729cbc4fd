"""The one place where a model runs: every stage that detects (evaluate, compare, pre-labelling, export's parity
check, the benchmark's end-to-end path, the evaluation after training, track) goes through here.

- :mod:`~dronevision.infer.model`: :func:`read_model_info` and :func:`read_metadata` for ONNX files and OpenVINO IR
  folders (class names, image size, stride, the head kind: ``end2end`` heads output final detections).
- :mod:`~dronevision.infer.session`: :func:`open_session` over ONNX Runtime (CPU, CUDA, TensorRT) and OpenVINO.
- :mod:`~dronevision.infer.yolo`: letterbox (ultralytics' geometry) and :func:`decode` of raw outputs into
  :class:`~dronevision.schema.Detections`, for NMS-based and end-to-end heads alike.
- :mod:`~dronevision.infer.merge`: the project's one NMS, and greedy NMM, with IoU or IoS matching (pure).
- :mod:`~dronevision.infer.geometry`: tiles covering an image, boxes cut by tile edges (pure; also the dataset
  stage's tiling).
- :mod:`~dronevision.infer.detector`: :class:`Detector`, the batching every backend shares (pure core: runtime choice,
  chunks).
- :mod:`~dronevision.infer.backends`: :func:`load_detector` for ``.pt`` (ultralytics on torch), ``.onnx`` and IR.
- :mod:`~dronevision.infer.sliced`: :class:`SliceSettings`, :func:`sliced_predict`, :func:`predict_images`.
- :mod:`~dronevision.infer.gsd`: GSD-aware inference: :class:`GsdSettings` (``slicing.gsd``), :class:`GsdScaler`
  (sidecar, DJI SRT or config), :func:`gsd_from_altitude`, :func:`resize_factor`, :func:`parse_srt` (pure).
- :mod:`~dronevision.infer.multiscale`: :func:`scaled_predict` (``slicing.scales`` and GSD resizing),
  :func:`merge_scales` (pure).

Example::

    detector = load_detector(Path("best.onnx"), conf=0.25)  # OpenVINO on the CPU, every core
    det = sliced_predict(detector, frame_bgr, SliceSettings(enabled=True, tile=640, overlap=0.2, batch=6))
"""

from dronevision.infer.backends import OnnxDetector, TorchDetector, load_detector
from dronevision.infer.detector import Detector, default_threads
from dronevision.infer.geometry import box_areas, clip_boxes, shift_boxes, slice_bboxes
from dronevision.infer.gsd import (
    GsdScaler,
    GsdSettings,
    altitude_at,
    gsd_from_altitude,
    parse_sidecar,
    parse_srt,
    resize_factor,
)
from dronevision.infer.merge import greedy_nmm, merge_detections, nms, overlap, pairwise_overlap
from dronevision.infer.model import (
    ModelInfo,
    RuntimeUnavailable,
    ir_xml,
    parse_metadata,
    read_metadata,
    read_metadata_props,
    read_model_info,
)
from dronevision.infer.multiscale import merge_scales, scaled_predict
from dronevision.infer.session import RUNTIMES, OrtSession, Session, available, check_runtime, open_session
from dronevision.infer.sliced import SliceSettings, predict_images, read_bgr, sliced_predict
from dronevision.infer.yolo import Letterbox, decode, letterbox_batch, letterbox_image, letterbox_plan

__all__ = [
    "scaled_predict",
    "merge_scales",
    "resize_factor",
    "parse_srt",
    "parse_sidecar",
    "gsd_from_altitude",
    "altitude_at",
    "GsdSettings",
    "GsdScaler",
    "RUNTIMES",
    "Detector",
    "Letterbox",
    "ModelInfo",
    "OnnxDetector",
    "OrtSession",
    "RuntimeUnavailable",
    "Session",
    "SliceSettings",
    "TorchDetector",
    "available",
    "box_areas",
    "check_runtime",
    "clip_boxes",
    "decode",
    "default_threads",
    "greedy_nmm",
    "ir_xml",
    "letterbox_batch",
    "letterbox_image",
    "letterbox_plan",
    "load_detector",
    "merge_detections",
    "nms",
    "open_session",
    "overlap",
    "pairwise_overlap",
    "parse_metadata",
    "predict_images",
    "read_bgr",
    "read_metadata",
    "read_metadata_props",
    "read_model_info",
    "shift_boxes",
    "slice_bboxes",
    "sliced_predict",
]
