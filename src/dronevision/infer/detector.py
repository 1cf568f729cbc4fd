"""Detectors that run a list of BGR images in batches: ultralytics (.pt) or our ONNX path (OpenVINO, ONNX Runtime).

:func:`dronevision.infer.backends.load_detector` picks the backend (:func:`pick_runtime`). ``runtime="auto"``
means: ``torch`` for a ``.pt``; for an ``.onnx``, ``ort-cuda`` when ``device`` names a GPU and ONNX Runtime can use
it, else ``openvino`` (the fastest CPU runtime measured here), else ``ort-cpu``. A ``.pt`` runs only on ``torch``
and an ``.onnx`` only on an ONNX runtime: export first (``dronevision.export``, or
:func:`dronevision.export.convert.export_onnx` with ``dynamic=True`` for batches).

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
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.model import training_object_size
from dronevision.infer.session import RUNTIMES
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
