"""ONNX files: export a checkpoint, convert it to FP16 or INT8, and compare ONNX Runtime with PyTorch."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.export.core import comparable_outputs, head_nodes_to_exclude
from dronevision.fsio import save_atomic
from dronevision.infer.model import end2end_args, nms_free, read_metadata
from dronevision.infer.yolo import read_letterboxed

log = logging.getLogger(__name__)


def export_onnx(
    weights: Path,
    *,
    imgsz: int,
    opset: int,
    dynamic: bool,
    simplify: bool,
    out: Path | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export with ultralytics (class names, stride and image size go into the ONNX metadata).

    Without ``out`` the ONNX file lands beside the weights, as ultralytics does. It is exported from a temporary copy
    of the weights and renamed into place whole, so a full disk never leaves a torn ONNX file, and with ``out`` a file
    already beside the weights (the training's own export) is never overwritten. ``metadata`` is added to
    ultralytics' (e.g. the MLflow training run, :meth:`dronevision.mlflow_run.RunRef.metadata`).
    """
    from ultralytics import YOLO

    if not weights.is_file():
        raise DroneVisionError(f"weights file {weights} does not exist")
    kwargs = {"imgsz": imgsz, "opset": opset, "dynamic": dynamic, "simplify": simplify, "device": "cpu"}
    kwargs.update(end2end_args(YOLO(str(weights)).model))  # an NMS-free head exports end to end: final detections
    out = out or weights.with_suffix(".onnx")
    with tempfile.TemporaryDirectory(prefix="dronevision-export-") as tmp:
        copy = Path(tmp) / weights.name
        shutil.copy2(weights, copy)
        exported = YOLO(str(copy)).export(format="onnx", verbose=False, **kwargs)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(out, lambda part: shutil.move(exported, part))
    if metadata:
        add_metadata(out, metadata)
    return out


def add_metadata(onnx_path: Path, metadata: Mapping[str, str]) -> None:
    """Set ``metadata`` keys in an ONNX file's metadata_props (replacing those keys, keeping the others)."""
    import onnx

    model = onnx.load(str(onnx_path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *((str(k), str(v)) for k, v in metadata.items())]:
        model.metadata_props.add(key=key, value=value)
    save_atomic(onnx_path, lambda part: onnx.save(model, str(part)))


def torch_outputs(weights: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """PyTorch's raw outputs (the tensor the ONNX graph returns) for each (1,3,H,W) input."""
    import torch
    from ultralytics import YOLO

    model = YOLO(str(weights)).model.float().eval()
    if nms_free(model):
        model.end2end = True  # the head the ONNX export runs (see end2end_args)
    model = model.fuse(verbose=False)
    outputs = []
    with torch.inference_mode():
        for x in inputs:
            y = model(torch.from_numpy(x))
            outputs.append((y[0] if isinstance(y, (list, tuple)) else y).numpy())
    return outputs


def onnx_outputs(onnx_path: Path, inputs: Sequence[np.ndarray], *, threads: int) -> list[np.ndarray]:
    """ONNX Runtime's (CPU) first output for each (1,3,H,W) input."""
    from dronevision.infer.session import open_session

    session = open_session(onnx_path, "ort-cpu", threads=threads, batch=1)
    return [session.run(x) for x in inputs]


def openvino_outputs(model: Path, inputs: Sequence[np.ndarray], *, threads: int) -> list[np.ndarray]:
    """OpenVINO's first output for each (1,3,H,W) input (an IR folder or file), at OpenVINO's default precision."""
    from dronevision.infer.session import open_session

    session = open_session(model, "openvino", threads=threads, batch=1)
    return [session.run(x) for x in inputs]


def file_size(path: Path) -> int:
    """Bytes in a file, or in every file under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def max_abs_diff(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Largest absolute difference over pairs of arrays of equal shapes (0 for empty ones: nothing to compare).

    Examples:
        >>> max_abs_diff([np.zeros((1, 2))], [np.array([[0.5, -2.0]])])
        2.0
    """
    for a, b in zip(reference, outputs):
        if a.shape != b.shape:
            raise RuntimeError(f"ONNX output shape {b.shape} differs from PyTorch's {a.shape}")
    return max(float(np.abs(b.astype(np.float64) - a).max(initial=0.0)) for a, b in zip(reference, outputs))


def onnx_max_abs_diff(weights: Path, onnx_path: Path, image: Path, *, imgsz: int, threads: int) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's raw outputs on one letterboxed image
    (an end-to-end head's: between the same detections, :func:`~dronevision.export.core.comparable_outputs`)."""
    x = [read_letterboxed(image, imgsz=imgsz)]
    end2end = bool(read_metadata(onnx_path).get("end2end", False))
    reference, outputs = torch_outputs(weights, x), onnx_outputs(onnx_path, x, threads=threads)
    return max_abs_diff(*comparable_outputs(reference, outputs, end2end=end2end))


def _copy_metadata(source: Any, target: Any) -> None:
    """Put ``source``'s metadata_props (names, imgsz, stride, ...) on ``target``, replacing what it had."""
    del target.metadata_props[:]
    for prop in source.metadata_props:
        target.metadata_props.add(key=prop.key, value=prop.value)


def to_fp16(fp32: Path, out: Path) -> Path:
    """FP16 weights and activations, float32 inputs and outputs (the same preprocessing works), same metadata.

    This is onnxruntime's maintained copy of onnxconverter-common's ``convert_float_to_float16`` (same arguments).
    onnxconverter-common 1.16's own makes graphs onnxruntime refuses: stale float32 value_info beside the FP16 one
    around the Resize it keeps in float32, and, in dynamic-shape exports (anchors computed in the graph),
    ``Cast(to=float)`` nodes left feeding FP16 ops. onnxruntime's handles both; it appends the input casts at the
    end of the node list, so the graph is sorted again for tools that expect topological order.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(fp32))
    with warnings.catch_warnings(record=True) as caught:  # a warning per weight clipped to FP16's range
        warnings.simplefilter("always")
        half = convert_float_to_float16(model, keep_io_types=True)
    OnnxModel(half).topological_sort()
    if caught:
        log.info("FP16: %d warnings while converting, e.g. %s", len(caught), caught[0].message)
    _copy_metadata(model, half)
    onnx.checker.check_model(half)
    save_atomic(out, lambda part: onnx.save(half, str(part)))
    return out


class _LetterboxReader:
    """Feeds letterboxed images to onnxruntime's calibration, one at a time (an ``onnxruntime.quantization``
    ``CalibrationDataReader``)."""

    def __init__(self, images: Sequence[Path], *, input_name: str, imgsz: int) -> None:
        self.images, self.input_name, self.imgsz = list(images), input_name, imgsz
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.images):
            return None
        image = self.images[self._next]
        self._next += 1
        return {self.input_name: read_letterboxed(image, imgsz=self.imgsz)}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.images)


def to_int8(fp32: Path, out: Path, images: Sequence[Path], *, imgsz: int) -> dict[str, Any]:
    """Static INT8 in QDQ format, calibrated on ``images``; returns the settings used, for summary.json.

    Weights are signed 8-bit per channel, activations unsigned 8-bit (U8S8: on a 2-core AVX-512 VNNI CPU this ran
    at 0.7x FP32's latency where S8S8 ran at 2x, with the same mAP50 within 0.2 points). The head's decoding
    stays in float (see :func:`head_nodes_to_exclude`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="dronevision-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph optimisation, as onnxruntime recommends before quantizing. ONNX's own shape
        # inference covers ultralytics' standard ops; onnxruntime's symbolic one fails on dynamic exports.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        excluded = head_nodes_to_exclude([n.name for n in graph.node])
        if not excluded:
            log.warning("INT8: no ultralytics detection head found in %s; quantizing every node", fp32.name)
        reader = _LetterboxReader(images, input_name=graph.input[0].name, imgsz=imgsz)
        quantized_file = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(prepared),
            str(quantized_file),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
        quantized = onnx.load(str(quantized_file))
    _copy_metadata(onnx.load(str(fp32), load_external_data=False), quantized)
    save_atomic(out, lambda part: onnx.save(quantized, str(part)))
    ops = [n.op_type for n in quantized.graph.node]
    log.info(
        "INT8: %d QuantizeLinear / %d DequantizeLinear nodes; %d head nodes kept in float; calibrated on %d images",
        ops.count("QuantizeLinear"),
        ops.count("DequantizeLinear"),
        len(excluded),
        len(images),
    )
    return {
        "format": "QDQ",
        "weights": "QInt8 per channel",
        "activations": "QUInt8",
        "method": "MinMax",
        "float_nodes": len(excluded),
        "images": len(images),
    }
