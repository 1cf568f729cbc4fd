"""One interface over inference sessions: ONNX Runtime (CPU, CUDA, TensorRT) and OpenVINO, for ONNX detectors.

:func:`available` says whether a runtime can run here (``None``) or why not (one line); :func:`open_session` opens a
:class:`Session` and checks the provider it really got: a CUDA or TensorRT request that ONNX Runtime quietly moved to
the CPU raises :class:`RuntimeUnavailable` instead of being timed as if it were a GPU.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError, first_line
from dronevision.infer.model import ModelInfo, RuntimeUnavailable, read_model_info

log = logging.getLogger(__name__)

RUNTIMES = ("ort-cpu", "openvino", "ort-cuda", "ort-trt")
ORT_PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
REQUEST_TIMEOUT_S = 120  # one OpenVINO request; far beyond any detector's latency


# --- pure core -------------------------------------------------------------------------------------------------


def check_runtime(runtime: str) -> str:
    """Return ``runtime`` if it is one of :data:`RUNTIMES`, else raise a one-line error listing them.

    Examples:
        >>> check_runtime("openvino")
        'openvino'
        >>> check_runtime("tensorrt")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: unknown runtime 'tensorrt'; valid: ort-cpu, openvino, ort-cuda, ort-trt
    """
    if runtime not in RUNTIMES:
        raise DroneVisionError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    return runtime


def ort_provider_options(runtime: str, *, input_name: str, shape: tuple[int, ...], cache_dir: Path | None) -> list[Any]:
    """The ``providers`` list for an ONNX Runtime session (the CPU provider last, for nodes a GPU cannot run).

    TensorRT gets FP16 and one optimisation profile fixed to ``shape``, so a dynamic-batch model is built once.

    Examples:
        >>> ort_provider_options("ort-cpu", input_name="images", shape=(1, 3, 64, 64), cache_dir=None)
        ['CPUExecutionProvider']
        >>> trt = ort_provider_options("ort-trt", input_name="images", shape=(8, 3, 64, 64), cache_dir=None)
        >>> trt[0][0], trt[0][1]["trt_fp16_enable"], trt[0][1]["trt_profile_opt_shapes"], trt[1:]
        ('TensorrtExecutionProvider', True, 'images:8x3x64x64', ['CUDAExecutionProvider', 'CPUExecutionProvider'])
    """
    check_runtime(runtime)
    if runtime == "ort-cpu":
        return ["CPUExecutionProvider"]
    if runtime == "ort-cuda":
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    if runtime != "ort-trt":
        raise DroneVisionError(f"{runtime} is not an ONNX Runtime runtime")
    profile = f"{input_name}:{'x'.join(str(d) for d in shape)}"
    trt: dict[str, Any] = {
        "device_id": 0,
        "trt_fp16_enable": True,
        "trt_profile_min_shapes": profile,
        "trt_profile_opt_shapes": profile,
        "trt_profile_max_shapes": profile,
    }
    if cache_dir is not None:
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
    return [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]


# --- availability ----------------------------------------------------------------------------------------------


def cuda_device_count() -> tuple[int, str | None]:
    """CUDA devices seen by the driver (``libcuda``, independent of torch); ``(0, reason)`` when there are none."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no CUDA driver (libcuda.so.1 not found)"
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0:
        return 0, "the CUDA driver found no usable device (cuInit failed)"
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "no CUDA device"
    return count.value, None


def available(runtime: str) -> str | None:
    """``None`` if ``runtime`` can run here, else a one-line reason (not installed, no device, provider missing)."""
    check_runtime(runtime)
    if runtime == "openvino":
        try:
            import openvino as ov
        except ImportError:
            return "openvino is not installed (pip install openvino)"
        devices = ov.Core().available_devices
        return None if "CPU" in devices else f"OpenVINO sees no CPU device (devices: {devices})"
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    provider = ORT_PROVIDERS[runtime]
    providers = ort.get_available_providers()
    if provider not in providers:
        hint = " (install onnxruntime-gpu)" if runtime != "ort-cpu" else ""
        return f"onnxruntime {ort.__version__} has no {provider}{hint}; it has {', '.join(providers)}"
    if runtime != "ort-cpu":
        count, reason = cuda_device_count()
        if not count:
            return reason
    return None


# --- sessions --------------------------------------------------------------------------------------------------


class Session:
    """An open inference session for one runtime, batch size and thread count.

    Attributes:
        runtime: the runtime name (one of :data:`RUNTIMES`).
        provider: what really runs it: ONNX Runtime's first session provider, or OpenVINO's execution device.
        precision: the compute precision: ``f32``; OpenVINO may pick ``bf16``; TensorRT ``f16``; ``int8+...`` for a
            quantized model (its float parts in the second precision).
        threads: CPU threads given to the runtime.
        input_shape: the shape ``run`` expects: (batch, C, H, W), or (batch, H, W, 3) for a uint8 input.
    """

    runtime: str
    provider: str
    precision: str
    threads: int
    input_shape: tuple[int, int, int, int]
    input_dtype: np.dtype
    streams: int = 1

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the model on an array of :attr:`input_shape`; returns its first output."""
        raise NotImplementedError

    def run_many(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on several inputs; runtimes with parallel requests (OpenVINO streams) overlap them."""
        return [self.run(x) for x in xs]

    def close(self) -> None:
        """Release the runtime's objects now (the session cannot run afterwards)."""

    def describe(self) -> dict[str, Any]:
        """The facts a benchmark reports with every number."""
        return {
            "runtime": self.runtime,
            "provider": self.provider,
            "precision": self.precision,
            "threads": self.threads,
            "streams": self.streams,
            "input_shape": list(self.input_shape),
        }


class OrtSession(Session):
    """ONNX Runtime with the CPU, CUDA or TensorRT execution provider."""

    def __init__(
        self, info: ModelInfo, runtime: str, *, threads: int, batch: int, cache_dir: Path | None = None
    ) -> None:
        import onnxruntime as ort

        self.runtime, self.threads = runtime, threads
        self.input_shape = info.shape_for(batch)
        self.input_dtype = np.dtype(info.input_dtype)
        self._name = info.input_name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # a fallback is reported by us, below, as one line
        providers = ort_provider_options(
            runtime, input_name=info.input_name, shape=self.input_shape, cache_dir=cache_dir
        )
        try:
            self._session = ort.InferenceSession(str(info.path), options, providers=providers)
        except Exception as e:
            first = first_line(e)
            raise RuntimeUnavailable(f"onnxruntime could not open {info.path.name} with {runtime}: {first}") from None
        used, wanted = self._session.get_providers()[0], ORT_PROVIDERS[runtime]
        if used != wanted:
            raise RuntimeUnavailable(f"asked for {wanted} but onnxruntime fell back to {used}")
        self.provider = used
        self.precision = "f16" if runtime == "ort-trt" else _dtype_precision(self.input_dtype)
        if info.quantized:
            self.precision = f"int8+{self.precision}"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run on ``x``; returns the first output."""
        return self._session.run(None, {self._name: x})[0]


class OpenVinoSession(Session):
    """OpenVINO on the CPU: the ONNX read directly, reshaped to a static batch, compiled with a fixed thread count.

    With ``streams=1`` the hint is LATENCY: one request in flight uses every thread (with one request the
    THROUGHPUT hint splits the threads into streams of which only one works: about half the speed, measured). With
    ``streams=N`` the threads are split into N streams and :meth:`run_many` keeps N requests in flight (YOLOv8n INT8
    at 640 on 2 cores: 2 streams of 1 thread ran 10-20% more frames/s than 1 stream of 2).
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        threads: int,
        batch: int,
        precision: str | None = None,
        streams: int = 1,
        u8_input: bool = False,
    ) -> None:
        import openvino as ov

        self.runtime, self.threads, self.streams = "openvino", threads, streams
        self.input_shape = info.shape_for(batch)
        self.input_dtype = np.dtype(info.input_dtype)
        core = ov.Core()
        model = core.read_model(str(info.path))
        model.reshape({info.input_name: list(self.input_shape)})
        if u8_input:
            model = _u8_bgr_input(model)
            b, c, h, w = self.input_shape
            self.input_shape, self.input_dtype = (b, h, w, c), np.dtype(np.uint8)
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
        if precision is not None:
            if precision not in OPENVINO_PRECISIONS:
                raise DroneVisionError(f"unknown OpenVINO precision '{precision}'; valid: {OPENVINO_PRECISIONS}")
            config["INFERENCE_PRECISION_HINT"] = precision
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            first = first_line(e)
            raise RuntimeUnavailable(f"OpenVINO could not compile {info.path.name} for CPU: {first}") from None
        self.provider = ",".join(self._compiled.get_property("EXECUTION_DEVICES"))
        self.precision = _ov_precision(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        if info.quantized:
            self.precision = f"int8+{self.precision}"
        self._request = self._compiled.create_infer_request()
        self._requests = [self._request] + [self._compiled.create_infer_request() for _ in range(streams - 1)]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run on ``x``; returns a copy of the first output (the request reuses its buffer)."""
        self._request.infer({0: x}, share_inputs=True)  # no copy of the input (it outlives the call)
        return self._request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        """Free the compiled model and its requests now (cycles included), not at some later garbage collection:
        a benchmark grid opens one compiled model after another."""
        import gc

        self._requests, self._request, self._compiled = [], None, None
        gc.collect()

    def run_many(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on every input, ``streams`` requests in flight (in waves); outputs in input order.

        Plain infer requests with a bounded wait, not ``AsyncInferQueue``: its ``wait_all`` has hung on AMD EPYC
        runners (ultralytics#25923); a request that does not finish in :data:`REQUEST_TIMEOUT_S` raises.
        """
        if len(self._requests) == 1:
            return super().run_many(xs)
        outputs = []
        for start in range(0, len(xs), len(self._requests)):
            wave = list(zip(self._requests, xs[start : start + len(self._requests)]))
            for request, x in wave:
                request.start_async({0: x}, share_inputs=True)  # ``xs`` outlives the wait: no copies
            for request, _ in wave:
                if not request.wait_for(REQUEST_TIMEOUT_S * 1000):
                    raise RuntimeError(f"an OpenVINO request did not finish within {REQUEST_TIMEOUT_S} s")
                outputs.append(request.get_output_tensor(0).data.copy())
        return outputs


def _u8_bgr_input(model: Any) -> Any:
    """The model with OpenVINO doing the preprocessing: it takes (N,H,W,3) BGR uint8 letterboxed frames (what
    OpenCV gives) and converts, swaps channels and scales to the (N,3,H,W) RGB 0..1 input inside the compiled
    graph (YOLOv8n INT8 at 640: 0.5 ms less per image than a float32 input prepared in numpy)."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    tensor = ppp.input().tensor()
    tensor.set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


def _dtype_precision(dtype: np.dtype) -> str:
    return {"float32": "f32", "float16": "f16"}.get(dtype.name, dtype.name)


def _ov_precision(element_type: Any) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``) as a short name."""
    name = str(getattr(element_type, "get_type_name", lambda: element_type)())
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16", "bf16": "bf16"}.get(name, name)


def open_session(
    model: Path,
    runtime: str,
    *,
    threads: int,
    batch: int,
    info: ModelInfo | None = None,
    precision: str | None = None,
    cache_dir: Path | None = None,
    streams: int = 1,
    u8_input: bool = False,
) -> Session:
    """Open ``model`` on ``runtime`` for ``batch`` images with ``threads`` CPU threads.

    Args:
        model: an ONNX file.
        runtime: one of :data:`RUNTIMES`.
        threads: intra-op threads (ONNX Runtime) or ``INFERENCE_NUM_THREADS`` (OpenVINO).
        batch: the batch the session will be run with (OpenVINO and TensorRT are built for it).
        info: the model's :class:`ModelInfo`, if already read.
        precision: OpenVINO's inference precision (``f32``, ``bf16``, ``f16``); None: OpenVINO's default for the
            device (``bf16`` on CPUs with native bf16). Ignored by ONNX Runtime.
        cache_dir: where TensorRT keeps its built engines (None: no cache).
        streams: OpenVINO's parallel streams (requests in flight in :meth:`Session.run_many`); others run 1.
        u8_input: OpenVINO only: take (N,H,W,3) BGR uint8 frames and preprocess inside the graph; ONNX Runtime
            sessions keep the float (N,3,H,W) input.

    Raises:
        RuntimeUnavailable: the runtime is not usable here, or the session fell back to another provider.
    """
    check_runtime(runtime)
    if threads < 1 or batch < 1:
        raise DroneVisionError(f"threads and batch must be at least 1, got threads={threads} batch={batch}")
    reason = available(runtime)
    if reason is not None:
        raise RuntimeUnavailable(reason)
    info = info or read_model_info(Path(model))
    if info.path.suffix.lower() == ".xml" and runtime != "openvino":
        raise RuntimeUnavailable(f"{info.path.name} is an OpenVINO IR: it runs on openvino only, not {runtime}")
    if runtime == "openvino":
        session: Session = OpenVinoSession(
            info, threads=threads, batch=batch, precision=precision, streams=streams, u8_input=u8_input
        )
    else:
        session = OrtSession(info, runtime, threads=threads, batch=batch, cache_dir=cache_dir)
    log.debug("opened %s", session.describe())
    return session
