"""The detector backends: ultralytics for a ``.pt`` (:class:`TorchDetector`), our ONNX path on OpenVINO or ONNX
Runtime for an ``.onnx`` or an OpenVINO IR (:class:`OnnxDetector`), and :func:`load_detector`, which picks one
(:func:`dronevision.infer.detector.pick_runtime`). The batching, timing and shared behaviour are
:class:`dronevision.infer.detector.Detector`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.detector import Detector, add_time, default_threads, pick_runtime
from dronevision.infer.model import end2end_args, ir_xml, load_checkpoint, read_model_info
from dronevision.infer.session import available, check_runtime, open_session
from dronevision.infer.yolo import Letterbox, decode, letterbox_batch, letterbox_plan
from dronevision.schema import Detections

log = logging.getLogger(__name__)


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
