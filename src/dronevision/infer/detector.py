"""Detectors that run a list of BGR images in batches: ultralytics (.pt) or our ONNX path (OpenVINO, ONNX Runtime).

:func:`load_detector` picks the backend. ``runtime="auto"`` means: ``torch`` for a ``.pt``; for an ``.onnx``,
``ort-cuda`` when ``device`` names a GPU and ONNX Runtime can use it, else ``openvino`` (the fastest CPU runtime
measured here), else ``ort-cpu``. A ``.pt`` runs only on ``torch`` and an ``.onnx`` only on an ONNX runtime: export
first (``dronevision.export``, or :func:`dronevision.export.convert.export_onnx` with ``dynamic=True`` for batches).

Every detector groups its images by shape and runs each group in chunks of at most ``batch`` (balanced: 12 tiles at
``batch=8`` run as 2 x 6), so the result of an image never depends on the batch it ran in (up to floating-point
noise of batched convolutions). A static-batch ONNX file runs in chunks of its own batch size.

``predict(..., timings=d)`` adds the seconds spent per stage to ``d``: ``tiles`` (letterboxing images into the model
input), ``inference`` (the runtime), ``decode`` (raw outputs to boxes in image pixels); ultralytics does all three
inside ``inference`` for a ``.pt``. :func:`dronevision.infer.sliced.sliced_predict` adds ``merge``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.model import (
    end2end_args,
    ir_xml,
    load_checkpoint,
    read_model_info,
    training_object_size,
)
from dronevision.infer.session import RUNTIMES, available, check_runtime, open_session
from dronevision.infer.yolo import Letterbox, decode, letterbox_batch, letterbox_plan
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
        reasons: runtime -> None if it can run here, else why not (:func:`dronevision.infer.session.available`).

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


def add_time(timings: dict[str, float] | None, key: str, since: float) -> float:
    """Add the seconds from ``since`` (a :func:`time.perf_counter` reading) to now to ``timings[key]``, if
    ``timings`` is given; returns now, where the next stage starts (two clock reads a stage: nothing to switch off).

    Examples:
        >>> timings = {"decode": 1.0}
        >>> _ = add_time(timings, "decode", time.perf_counter()); _ = add_time(None, "decode", 0.0)
        >>> list(timings), 1.0 <= timings["decode"] < 2.0
        (['decode'], True)
    """
    now = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + now - since
    return now


def default_threads() -> int:
    """All CPU cores this process may use (ultralytics alone would leave one idle)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- detectors -------------------------------------------------------------------------------------------------


class Detector(ABC):
    """A detector for lists of BGR ``uint8`` images; subclasses run one batch of same-shaped images.

    Attributes:
        names: class id -> name.
        runtime: ``torch`` or one of :data:`dronevision.infer.session.RUNTIMES`.
        threads: CPU threads it computes with.
        max_batch: the largest batch it takes (a static-batch ONNX file's batch), None for any.
        weights: the model file, when loaded from one.
    """

    names: dict[int, str]
    runtime: str
    threads: int
    max_batch: int | None = None
    weights: Path | None = None

    def predict(
        self, images_bgr: Sequence[np.ndarray], *, batch: int = 8, timings: dict[str, float] | None = None
    ) -> list[Detections]:
        """Detections per image (in image pixels), running images of one shape together in chunks of ``batch``;
        ``timings`` (optional) gets the seconds per stage added (see the module's docstring)."""
        out: list[Detections] = [Detections.empty(with_confidence=True)] * len(images_bgr)
        for chunks in self._chunks(images_bgr, batch):
            for picked in chunks:
                started = time.perf_counter()
                results = self._predict_batch([images_bgr[i] for i in picked])
                add_time(timings, "inference", started)
                for i, det in zip(picked, results):
                    out[i] = det
        return out

    @functools.cached_property
    def train_box_px(self) -> float | None:
        """The training objects' median side in pixels as the model saw them: an export's ``train_median_box_px``
        metadata, or for a checkpoint the manifest of the dataset it was trained on; None when unknown."""
        info = getattr(self, "info", None)
        meta = dict(getattr(info, "metadata", None) or {})
        if "train_median_box_px" not in meta and self.weights is not None and self.weights.suffix == ".pt":
            meta = training_object_size(self.weights)
        try:
            value = float(meta["train_median_box_px"])
        except (KeyError, TypeError, ValueError):
            return None
        return value if value > 0 else None

    @property
    @abstractmethod
    def input_hw(self) -> tuple[int, int]:
        """The model's input ``(height, width)``: every image is letterboxed to fit it."""

    def _chunks(self, images_bgr: Sequence[np.ndarray], batch: int, *, streams: int = 1) -> list[list[list[int]]]:
        """Image indices grouped by shape, each group in balanced chunks of at most ``batch`` (and ``max_batch``),
        and in at least ``streams`` chunks when it has that many images (each stream gets one)."""
        if batch < 1:
            raise DroneVisionError(f"batch must be at least 1, got {batch}")
        cap = min(batch, self.max_batch) if self.max_batch else batch
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images_bgr):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DroneVisionError(f"image {i}: expected (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
            by_shape.setdefault(image.shape, []).append(i)
        return [
            [[group[k] for k in c] for c in balanced_chunks(len(group), min(cap, -(-len(group) // streams)))]
            for group in by_shape.values()
        ]

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
        self.runtime, self.threads, self.weights = "torch", threads, Path(weights)
        self.model = load_checkpoint(weights)  # one line for a file that is no detector's checkpoint
        self.names = {int(k): str(v) for k, v in self.model.names.items()}
        self._kwargs: dict[str, Any] = {"conf": conf, "iou": iou, "max_det": max_det, "verbose": False}
        self._kwargs.update(end2end_args(self.model.model))  # an NMS-free head runs as in the model's ONNX export
        if device is not None:
            self._kwargs["device"] = device
        if imgsz is not None:  # else ultralytics' own default: the checkpoint's training size
            self._kwargs["imgsz"] = imgsz
        self.model.predict(np.zeros((32, 32, 3), np.uint8), **self._kwargs)  # sets the predictor up

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self.model.predictor.imgsz  # ultralytics' check_imgsz: [h, w]
        return int(h), int(w)

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            results = self.model.predict(list(images_bgr), **self._kwargs)
        finally:
            torch.set_num_threads(previous)
        return [Detections.from_ultralytics(result) for result in results]


class OnnxDetector(Detector):
    """An ultralytics ONNX export run by :func:`dronevision.infer.session.open_session`, with our letterbox and NMS.

    A dynamic-shape export takes batches and ultralytics' rectangular (minimal padding) letterbox, as its ``.pt``
    does; a static one takes its own batch and input size. OpenVINO and TensorRT compile one session per input
    shape (batch, height, width), on first use; ONNX Runtime on the CPU or CUDA runs every shape in one session.

    On OpenVINO a float32 model takes the letterboxed BGR ``uint8`` canvases and converts them inside its graph
    (``u8_input``: no float copy made in NumPy). With ``streams > 1`` (OpenVINO) a group of images of one shape is
    cut into at least ``streams`` chunks, and chunks of one size run ``streams`` at a time in parallel, each stream
    on ``threads / streams`` threads (no barrier between threads inside a layer); a chunk left over runs alone on
    every thread.
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
        streams: int = 1,
    ) -> None:
        self.runtime, self.threads, self.weights = check_runtime(runtime), threads, Path(model)
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
        if streams < 1:
            raise DroneVisionError(f"streams must be at least 1, got {streams}")
        self.stride = self.info.stride or 32
        self.max_batch = self.info.input_shape[0]
        self.conf, self.iou, self.max_det, self.precision = conf, iou, max_det, precision
        self.streams = min(streams, threads) if self.runtime == "openvino" else 1
        self.u8_input = self.runtime == "openvino" and np.dtype(self.info.input_dtype) == np.float32
        self._sessions: dict[tuple[int, int, int, int] | None, Any] = {}
        self._session(self.max_batch or 1, self.imgsz_hw)  # fail here if the runtime cannot open the model

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.imgsz_hw

    def _session(self, batch: int, input_hw: tuple[int, int], *, streams: int = 1) -> Any:
        per_shape = self.runtime in ("openvino", "ort-trt")
        key = (batch, *input_hw, streams) if per_shape else None
        if key not in self._sessions:
            info = replace(self.info, imgsz=input_hw)
            self._sessions[key] = open_session(
                self.info.path,
                self.runtime,
                threads=self.threads,
                batch=batch,
                info=info,
                precision=self.precision,
                streams=streams,
                u8_input=self.u8_input,
            )
            log.debug("%s: session for batch %d at %s, %d streams", self.info.path.name, batch, input_hw, streams)
        return self._sessions[key]

    def predict(
        self, images_bgr: Sequence[np.ndarray], *, batch: int = 8, timings: dict[str, float] | None = None
    ) -> list[Detections]:
        """Detections per image (in image pixels), images of one shape together in chunks of ``batch``, ``streams``
        chunks at a time; ``timings`` (optional) gets the seconds of ``tiles``, ``inference`` and ``decode`` added."""
        out: list[Detections] = [Detections.empty(with_confidence=True)] * len(images_bgr)
        for chunks in self._chunks(images_bgr, batch, streams=self.streams):
            plan = letterbox_plan(
                images_bgr[chunks[0][0]].shape[:2], self.imgsz_hw, stride=self.stride, auto=self.dynamic_hw
            )
            for start in range(0, len(chunks), self.streams):
                wave = chunks[start : start + self.streams]
                started = time.perf_counter()
                xs = [self._input([images_bgr[i] for i in picked], plan) for picked in wave]
                started = add_time(timings, "tiles", started)
                if len(wave) > 1 and len({len(x) for x in xs}) == 1:  # chunks of one size: in parallel, one a stream
                    raws = self._session(len(xs[0]), plan.input_hw, streams=self.streams).run_many(xs)
                else:
                    raws = [self._session(len(x), plan.input_hw).run(x) for x in xs]
                started = add_time(timings, "inference", started)
                for picked, raw in zip(wave, raws):
                    decoded = decode(
                        np.asarray(raw, dtype=np.float32)[: len(picked)],
                        plan,
                        conf=self.conf,
                        iou=self.iou,
                        max_det=self.max_det,
                        end2end=self.info.end2end,
                    )
                    for i, det in zip(picked, decoded):
                        out[i] = det
                add_time(timings, "decode", started)
        return out

    def _input(self, images_bgr: list[np.ndarray], plan: Letterbox) -> np.ndarray:
        """The model input for images of one shape: padded to a static batch, letterboxed, in the input's dtype."""
        batch = self.max_batch or len(images_bgr)
        padded = list(images_bgr) + [images_bgr[-1]] * (batch - len(images_bgr))  # a static batch larger than left
        x = letterbox_batch(padded, plan, uint8=self.u8_input)
        dtype = np.dtype(np.uint8 if self.u8_input else self.info.input_dtype)
        return x if x.dtype == dtype else x.astype(dtype)

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        return self.predict(images_bgr, batch=len(images_bgr))

    def describe(self) -> dict[str, Any]:
        """Runtime, threads, streams, batch, and the first session's provider and precision."""
        first = next(iter(self._sessions.values()))
        return {**super().describe(), "streams": self.streams, "provider": first.provider, "precision": first.precision}


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
    streams: int = 1,
) -> Detector:
    """Open a detector for batched inference on BGR arrays.

    Args:
        weights: an ultralytics ``.pt`` or an ``.onnx`` export (dynamic batch for batches).
        runtime: ``auto`` (``torch`` for .pt; ``ort-cuda`` on a GPU ``device``, else ``openvino``, else ``ort-cpu``
            for .onnx), ``torch``, or one of :data:`dronevision.infer.session.RUNTIMES`.
        imgsz: the inference size; None: the checkpoint's training size (.pt) or the export's size (.onnx).
        conf: keep boxes scoring more than this.
        iou: the model's NMS IoU threshold (ultralytics' default 0.7).
        max_det: at most this many boxes per image (per tile in sliced inference).
        threads: CPU threads; None: every core this process may use.
        device: ultralytics' device for ``torch`` (None: its choice); a GPU steers ``auto`` for ONNX.
        precision: OpenVINO's inference precision (``f32``, ``bf16``, ``f16``); None: its default for the CPU.
        streams: OpenVINO only: chunks run this many at a time, in parallel, each on ``threads / streams`` threads.

    Raises:
        DroneVisionError: the file is missing or of the wrong kind for ``runtime``.
        dronevision.infer.session.RuntimeUnavailable: the runtime cannot run here.
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
            streams=streams,
        )
    log.info("%s: %s detector, %d threads", weights.name, chosen, threads)
    return detector
