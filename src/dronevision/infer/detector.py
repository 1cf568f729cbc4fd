"""Detectors that run a list of BGR images in batches: ultralytics (.pt) or our ONNX path (OpenVINO, ONNX Runtime).

:func:`load_detector` picks the backend. ``runtime="auto"`` means: ``torch`` for a ``.pt``; for an ``.onnx``,
``ort-cuda`` when ``device`` names a GPU and ONNX Runtime can use it, else ``openvino`` (the fastest CPU runtime
measured here), else ``ort-cpu``. A ``.pt`` runs only on ``torch`` and an ``.onnx`` only on an ONNX runtime: export
first (``dronevision.export``, or :func:`dronevision.export.convert.export_onnx` with ``dynamic=True`` for batches).

Every detector groups its images by shape and runs each group in chunks of at most ``batch`` (balanced: 12 tiles at
``batch=8`` run as 2 x 6), so the result of an image never depends on the batch it ran in (up to floating-point
noise of batched convolutions). A static-batch ONNX file runs in chunks of its own batch size.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.runtime import RUNTIMES, available, check_runtime, ir_xml, open_session, read_model_info
from dronevision.infer.yolo import decode_yolo, letterbox_batch, letterbox_plan, scale_boxes
from dronevision.schema import Detections

log = logging.getLogger(__name__)

DETECTOR_RUNTIMES = ("auto", "torch", *RUNTIMES)


# --- pure core -------------------------------------------------------------------------------------------------


def balanced_chunks(n: int, batch: int) -> list[range]:
    """Split ``n`` items into the fewest chunks of at most ``batch``, as even as possible.

    Examples:
        >>> [len(r) for r in balanced_chunks(12, 8)], [len(r) for r in balanced_chunks(13, 4)]
        ([6, 6], [4, 3, 3, 3])
        >>> balanced_chunks(0, 8)
        []
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    chunks = -(-n // batch)
    starts = [n * k // chunks for k in range(chunks + 1)] if chunks else [0]
    sizes = sorted((b - a for a, b in zip(starts, starts[1:])), reverse=True)
    out, start = [], 0
    for size in sizes:
        out.append(range(start, start + size))
        start += size
    return out


def wants_gpu(device: str | int | None) -> bool:
    """Whether an ultralytics-style ``device`` names a GPU (``0``, ``cuda``, ``cuda:1``, ``0,1``).

    Examples:
        >>> [wants_gpu(d) for d in (None, "cpu", 0, "0", "cuda:1", "mps")]
        [False, False, True, True, True, False]
    """
    if device is None:
        return False
    text = str(device).strip().lower()
    return text.startswith("cuda") or text.replace(",", "").isdigit()


def pick_runtime(suffix: str, runtime: str, *, device: str | int | None, reasons: dict[str, str | None]) -> str:
    """The runtime for a model file of ``suffix``: ``runtime`` itself, or what ``auto`` means here.

    Args:
        suffix: ``.pt``, ``.onnx`` or ``.xml`` (OpenVINO IR).
        runtime: one of :data:`DETECTOR_RUNTIMES`.
        device: the requested device (a GPU makes ``auto`` prefer ``ort-cuda`` for ONNX).
        reasons: runtime -> None if it can run here, else why not (:func:`dronevision.infer.runtime.available`).

    Examples:
        >>> ok = {"openvino": None, "ort-cpu": None, "ort-cuda": "no CUDA device"}
        >>> pick_runtime(".onnx", "auto", device=None, reasons=ok), pick_runtime(".pt", "auto", device=0, reasons=ok)
        ('openvino', 'torch')
        >>> pick_runtime(".onnx", "auto", device=0, reasons={**ok, "ort-cuda": None})
        'ort-cuda'
        >>> pick_runtime(".xml", "auto", device=None, reasons=ok)
        'openvino'
        >>> pick_runtime(".pt", "openvino", device=None, reasons=ok)
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a .pt checkpoint runs on 'torch' only; export it to ONNX for 'openvino'
    """
    if runtime not in DETECTOR_RUNTIMES:
        raise DroneVisionError(f"unknown runtime '{runtime}'; valid: {', '.join(DETECTOR_RUNTIMES)}")
    suffix = suffix.lower()
    if suffix not in (".pt", ".onnx", ".xml"):
        raise DroneVisionError(f"a detector is a .pt, .onnx or OpenVINO .xml file, got '{suffix}'")
    if suffix == ".xml":
        if runtime not in ("auto", "openvino"):
            raise DroneVisionError(f"an OpenVINO .xml runs on 'openvino' only, not '{runtime}'")
        return "openvino"
    if suffix == ".pt":
        if runtime not in ("auto", "torch"):
            raise DroneVisionError(f"a .pt checkpoint runs on 'torch' only; export it to ONNX for '{runtime}'")
        return "torch"
    if runtime == "torch":
        raise DroneVisionError("an .onnx model runs on an ONNX runtime, not 'torch'; pass the .pt for torch")
    if runtime != "auto":
        return runtime
    preferred = (["ort-cuda"] if wants_gpu(device) else []) + ["openvino", "ort-cpu"]
    for candidate in preferred:
        if reasons.get(candidate) is None:
            return candidate
    raise DroneVisionError(f"no ONNX runtime can run here: {reasons}")


def default_threads() -> int:
    """All CPU cores this process may use (ultralytics alone would leave one idle)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- detectors -------------------------------------------------------------------------------------------------


class Detector(ABC):
    """A detector for lists of BGR ``uint8`` images; subclasses run one batch of same-shaped images.

    Attributes:
        names: class id -> name.
        runtime: ``torch`` or one of :data:`dronevision.infer.runtime.RUNTIMES`.
        threads: CPU threads it computes with.
        max_batch: the largest batch it takes (a static-batch ONNX file's batch), None for any.
    """

    names: dict[int, str]
    runtime: str
    threads: int
    max_batch: int | None = None

    def predict(self, images_bgr: Sequence[np.ndarray], *, batch: int = 8) -> list[Detections]:
        """Detections per image (in image pixels), running images of one shape together in chunks of ``batch``."""
        if batch < 1:
            raise DroneVisionError(f"batch must be at least 1, got {batch}")
        cap = min(batch, self.max_batch) if self.max_batch else batch
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images_bgr):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DroneVisionError(f"image {i}: expected (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
            by_shape.setdefault(image.shape, []).append(i)
        out: list[Detections] = [Detections.empty(with_confidence=True)] * len(images_bgr)
        for indices in by_shape.values():
            for chunk in balanced_chunks(len(indices), cap):
                picked = [indices[k] for k in chunk]
                for i, det in zip(picked, self._predict_batch([images_bgr[i] for i in picked])):
                    out[i] = det
        return out

    @abstractmethod
    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        """Detections for images of one shape, at most ``max_batch`` of them."""

    def describe(self) -> dict[str, Any]:
        """The facts a benchmark reports with a number."""
        return {"runtime": self.runtime, "threads": self.threads, "max_batch": self.max_batch}


class TorchDetector(Detector):
    """An ultralytics checkpoint run by ultralytics' predictor on a list of arrays (one forward pass per chunk).

    ultralytics sets torch to ``cpu_count - 1`` threads when it sets up a predictor; this detector sets up its
    predictor once here and runs every batch with ``threads`` torch threads (restoring the previous count after).
    """

    def __init__(
        self,
        weights: Path,
        *,
        imgsz: int | None,
        conf: float,
        iou: float,
        max_det: int,
        threads: int,
        device: str | int | None,
    ) -> None:
        from ultralytics import YOLO

        self.runtime, self.threads = "torch", threads
        self.model = YOLO(str(weights), task="detect")
        self.names = {int(k): str(v) for k, v in self.model.names.items()}
        self._kwargs: dict[str, Any] = {"conf": conf, "iou": iou, "max_det": max_det, "verbose": False}
        if device is not None:
            self._kwargs["device"] = device
        if imgsz is not None:  # else ultralytics' own default: the checkpoint's training size
            self._kwargs["imgsz"] = imgsz
        self.model.predict(np.zeros((32, 32, 3), np.uint8), **self._kwargs)  # sets the predictor up

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            results = self.model.predict(list(images_bgr), **self._kwargs)
        finally:
            torch.set_num_threads(previous)
        out = []
        for result in results:
            boxes = result.boxes
            xyxy, cls, conf = (t.cpu().numpy() for t in (boxes.xyxy, boxes.cls, boxes.conf))
            out.append(Detections(xyxy=xyxy, class_id=cls, confidence=conf))
        return out


class OnnxDetector(Detector):
    """An ultralytics ONNX export run by :func:`dronevision.infer.runtime.open_session`, with our letterbox and NMS.

    A dynamic-shape export takes batches and ultralytics' rectangular (minimal padding) letterbox, as its ``.pt``
    does; a static one takes its own batch and input size. OpenVINO and TensorRT compile one session per input
    shape (batch, height, width), on first use; ONNX Runtime on the CPU or CUDA runs every shape in one session.
    """

    def __init__(
        self,
        model: Path,
        *,
        runtime: str,
        imgsz: int | None,
        conf: float,
        iou: float,
        max_det: int,
        threads: int,
        precision: str | None = None,
    ) -> None:
        self.runtime, self.threads = check_runtime(runtime), threads
        self.info = read_model_info(model)
        self.names = dict(self.info.names) or {}
        _, channels, height, width = self.info.input_shape
        if channels not in (3, None):
            raise DroneVisionError(f"{model.name}: expected 3 input channels, got {channels}")
        self.dynamic_hw = height is None or width is None
        if self.dynamic_hw:
            self.imgsz_hw = (imgsz, imgsz) if imgsz else self.info.imgsz
        else:
            self.imgsz_hw = (int(height), int(width))
            if imgsz and (imgsz, imgsz) != self.imgsz_hw:
                raise DroneVisionError(
                    f"{model.name} has a fixed input of {height}x{width}; imgsz={imgsz} needs a dynamic export"
                )
        self.stride = self.info.stride or 32
        self.max_batch = self.info.input_shape[0]
        self.conf, self.iou, self.max_det, self.precision = conf, iou, max_det, precision
        self._sessions: dict[tuple[int, int, int] | None, Any] = {}
        self._session(self.max_batch or 1, self.imgsz_hw)  # fail here if the runtime cannot open the model

    def _session(self, batch: int, input_hw: tuple[int, int]) -> Any:
        per_shape = self.runtime in ("openvino", "ort-trt")
        key = (batch, *input_hw) if per_shape else None
        if key not in self._sessions:
            info = replace(self.info, imgsz=input_hw)
            self._sessions[key] = open_session(
                self.info.path, self.runtime, threads=self.threads, batch=batch, info=info, precision=self.precision
            )
            log.debug("%s: session for batch %d at %s", self.info.path.name, batch, input_hw)
        return self._sessions[key]

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        plan = letterbox_plan(images_bgr[0].shape[:2], self.imgsz_hw, stride=self.stride, auto=self.dynamic_hw)
        n = len(images_bgr)
        batch = self.max_batch or n
        padded = list(images_bgr) + [images_bgr[-1]] * (batch - n)  # a static batch larger than what is left
        session = self._session(batch, plan.input_hw)
        x = letterbox_batch(padded, plan)
        if x.dtype != session.input_dtype:
            x = x.astype(session.input_dtype)
        raw = np.asarray(session.run(x), dtype=np.float32)
        decoded = decode_yolo(raw[:n], conf=self.conf, iou=self.iou, max_det=self.max_det, end2end=self.info.end2end)
        return [
            Detections(xyxy=scale_boxes(xyxy, plan), class_id=cls, confidence=score) for xyxy, score, cls in decoded
        ]

    def describe(self) -> dict[str, Any]:
        """Runtime, threads, batch, and the first session's provider and precision."""
        first = next(iter(self._sessions.values()))
        return {**super().describe(), "provider": first.provider, "precision": first.precision}


def load_detector(
    weights: Path,
    *,
    runtime: str = "auto",
    imgsz: int | None = None,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    threads: int | None = None,
    device: str | int | None = None,
    precision: str | None = None,
) -> Detector:
    """Open a detector for batched inference on BGR arrays.

    Args:
        weights: an ultralytics ``.pt`` or an ``.onnx`` export (dynamic batch for batches).
        runtime: ``auto`` (``torch`` for .pt; ``ort-cuda`` on a GPU ``device``, else ``openvino``, else ``ort-cpu``
            for .onnx), ``torch``, or one of :data:`dronevision.infer.runtime.RUNTIMES`.
        imgsz: the inference size; None: the checkpoint's training size (.pt) or the export's size (.onnx).
        conf: keep boxes scoring more than this.
        iou: the model's NMS IoU threshold (ultralytics' default 0.7).
        max_det: at most this many boxes per image (per tile in sliced inference).
        threads: CPU threads; None: every core this process may use.
        device: ultralytics' device for ``torch`` (None: its choice); a GPU steers ``auto`` for ONNX.
        precision: OpenVINO's inference precision (``f32``, ``bf16``, ``f16``); None: its default for the CPU.

    Raises:
        DroneVisionError: the file is missing or of the wrong kind for ``runtime``.
        dronevision.infer.runtime.RuntimeUnavailable: the runtime cannot run here.
    """
    weights = ir_xml(Path(weights))
    if not weights.is_file():
        raise DroneVisionError(f"{weights}: model file does not exist")
    auto_onnx = runtime == "auto" and weights.suffix.lower() == ".onnx"
    reasons = {r: available(r) for r in ("ort-cuda", "openvino", "ort-cpu")} if auto_onnx else {}
    chosen = pick_runtime(weights.suffix, runtime, device=device, reasons=reasons)
    threads = threads or default_threads()
    if chosen == "torch":
        detector: Detector = TorchDetector(
            weights, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, threads=threads, device=device
        )
    else:
        detector = OnnxDetector(
            weights,
            runtime=chosen,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            max_det=max_det,
            threads=threads,
            precision=precision,
        )
    log.info("%s: %s detector, %d threads", weights.name, chosen, threads)
    return detector
