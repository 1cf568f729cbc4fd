"""Loading what the project makes: an ultralytics checkpoint, an ONNX file or an OpenVINO IR with the metadata
ultralytics writes.

:func:`load_checkpoint` is the one check of a ``.pt`` every stage shares: an ultralytics checkpoint of a detector,
else one line. :func:`read_model_info` reads a model's image input and its metadata (class names, image size, stride,
the kind of head); :func:`read_metadata` is the one reader of that metadata (``names``, ``imgsz``, ``stride``,
``end2end``, ...) for ONNX files and IR folders alike. The head kind comes from the metadata, never from the model's
name: ``end2end`` models (YOLO26, YOLOv10) output final detections, the others raw anchors that need NMS.
:func:`training_dataset` finds the dataset a model was trained on.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError, first_line

log = logging.getLogger(__name__)

DETECT = "detect"  # the one ultralytics task dronevision runs
QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"}
)


class RuntimeUnavailable(DroneVisionError):
    """The runtime cannot run this model here (not installed, no device, or the provider fell back)."""


# --- pure core -------------------------------------------------------------------------------------------------


def parse_metadata(props: Mapping[str, str]) -> dict[str, Any]:
    """Decode the metadata ultralytics writes into an ONNX model (Python literals stored as strings).

    Returns ``names`` ({id: name}), ``imgsz`` ([h, w]), ``stride``, ``end2end`` and ``task`` where present.

    Examples:
        >>> meta = parse_metadata({"names": "{0: 'car'}", "imgsz": "[64, 64]", "stride": "32", "end2end": "False"})
        >>> meta["names"], meta["imgsz"], meta["stride"], meta["end2end"]
        ({0: 'car'}, [64, 64], 32, False)
        >>> parse_metadata({"imgsz": "640"})["imgsz"]
        [640, 640]
        >>> parse_metadata({})
        {}
    """
    out: dict[str, Any] = {}
    for key in ("names", "imgsz", "stride", "end2end", "batch"):
        if key not in props:
            continue
        try:
            value = ast.literal_eval(props[key])
        except (ValueError, SyntaxError):
            log.warning("ONNX metadata %s=%r is not a Python literal; ignored", key, props[key])
            continue
        if key == "imgsz" and isinstance(value, int):
            value = [value, value]
        out[key] = value
    if "task" in props:
        out["task"] = props["task"]
    return out


def check_task(task: str | None, *, model: Path | str) -> None:
    """Refuse a model of an ultralytics task other than ``detect`` (``None``: not recorded, taken as a detector).

    Examples:
        >>> check_task("detect", model="best.pt"); check_task(None, model="old.onnx")
        >>> check_task("classify", model="cls.pt")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: weights cls.pt: a classify model; dronevision needs a detect model
    """
    if task is not None and task != DETECT:
        raise DroneVisionError(f"weights {model}: a {task} model; dronevision needs a {DETECT} model")


# --- I/O adapters --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """An ONNX detector's image input and ultralytics metadata.

    ``input_shape`` holds ``None`` for dynamic dimensions; ``imgsz`` is ``(h, w)`` from the metadata, else from a
    static input shape.
    """

    path: Path
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    imgsz: tuple[int, int]
    stride: int | None
    names: dict[int, str]
    end2end: bool
    quantized: bool = False  # INT8 operators (QDQ or integer ops) in the graph
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic_batch(self) -> bool:
        """Whether the batch dimension is dynamic."""
        return self.input_shape[0] is None

    def shape_for(self, batch: int) -> tuple[int, int, int, int]:
        """The concrete input shape for ``batch`` images; a static batch other than ``batch`` is refused."""
        fixed = self.input_shape[0]
        if fixed is not None and fixed != batch:
            raise RuntimeUnavailable(
                f"{self.path.name} has a static batch of {fixed}; batch {batch} needs a dynamic-batch export"
            )
        channels = self.input_shape[1] or 3
        return (batch, int(channels), *self.imgsz)


def ir_xml(path: Path) -> Path:
    """``path/model.xml`` for an OpenVINO IR folder (ultralytics' layout, as the export writes it), else ``path``."""
    return path / "model.xml" if path.is_dir() and (path / "model.xml").is_file() else path


def read_model_info(model: Path) -> ModelInfo:
    """Read an ONNX model's (or an OpenVINO IR's) first input and its metadata (ultralytics' keys).

    Raises:
        DroneVisionError: the file is missing, not ONNX, or has no (N, C, H, W) image input.
    """
    import onnx
    from onnx import helper

    model = ir_xml(Path(model).expanduser().resolve())
    if model.is_dir():
        raise DroneVisionError(f"model {model} is a folder without model.xml (not an OpenVINO IR export)")
    if not model.is_file():
        raise DroneVisionError(f"model {model} does not exist")
    if model.suffix.lower() == ".xml":
        return _read_ir_info(model)
    if model.suffix.lower() != ".onnx":
        raise DroneVisionError(f"model {model} is not an .onnx file (nor an OpenVINO .xml)")
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise DroneVisionError(f"model {model} cannot be read as ONNX ({type(e).__name__})") from None
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not inputs or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise DroneVisionError(f"model {model} has no (N, C, H, W) image input")
    first = inputs[0]
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)).name
    props = {p.key: p.value for p in proto.metadata_props}
    quantized = any(node.op_type in QUANTIZED_OPS for node in proto.graph.node)
    return _model_info(model, first.name, dims, dtype, props, quantized=quantized)


def _read_ir_info(model: Path) -> ModelInfo:
    """:func:`read_model_info` for an OpenVINO IR: the input from the .xml, metadata from ``metadata.yaml`` beside it
    (ultralytics' layout for OpenVINO exports)."""
    import xml.etree.ElementTree as ET

    import openvino as ov

    try:  # checked first: OpenVINO's own error for a file that is not IR is long and says little
        root_tag = ET.parse(model).getroot().tag
    except ET.ParseError as e:
        raise DroneVisionError(f"model {model} is not an OpenVINO IR (not XML: {e})") from None
    if root_tag != "net":
        raise DroneVisionError(f"model {model} is not an OpenVINO IR (its root element is <{root_tag}>, not <net>)")
    try:
        ir = ov.Core().read_model(str(model))
    except Exception as e:
        first = first_line(e, limit=200)
        raise DroneVisionError(f"model {model} cannot be read as OpenVINO IR ({first})") from None
    shape = ir.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise DroneVisionError(f"model {model} has no (N, C, H, W) image input")
    dims = tuple(None if d.is_dynamic else d.get_length() for d in shape)
    props = read_metadata_props(model)
    dtype = ir.inputs[0].get_element_type().to_dtype().name
    quantized = any(op.get_type_name() == "FakeQuantize" for op in ir.get_ops())
    return _model_info(model, ir.inputs[0].get_any_name(), dims, dtype, props, quantized=quantized)


def _model_info(
    model: Path, input_name: str, dims: tuple[int | None, ...], dtype: str, props: dict[str, str], *, quantized: bool
) -> ModelInfo:
    meta = parse_metadata(props)
    check_task(meta.get("task"), model=model)
    if "imgsz" in meta:
        imgsz = (int(meta["imgsz"][0]), int(meta["imgsz"][1]))
    elif dims[2] and dims[3]:
        imgsz = (int(dims[2]), int(dims[3]))
    else:
        raise DroneVisionError(f"model {model}: no imgsz in its metadata and a dynamic input shape {dims}")
    names = {int(k): str(v) for k, v in dict(meta.get("names") or {}).items()}
    return ModelInfo(
        path=model,
        input_name=input_name,
        input_shape=dims,
        input_dtype=dtype,
        imgsz=imgsz,
        stride=int(meta["stride"]) if "stride" in meta else None,
        names=names,
        end2end=bool(meta.get("end2end", False)),
        quantized=quantized,
        metadata=props,
    )


def load_checkpoint(weights: Path) -> Any:
    """An ultralytics checkpoint of a detector, loaded as ``ultralytics.YOLO``: the one check of a ``.pt`` that the
    stages share (evaluate and export call it before writing anything).

    Raises:
        DroneVisionError: one line: the file is not an ultralytics checkpoint (text, random bytes, a torch file
            holding a tensor or a dict without a model), or holds a model of another task (classify, segment, ...).
    """
    from ultralytics import YOLO

    try:
        model = YOLO(str(weights))
    except Exception as e:  # ultralytics wraps the cause (e.g. an UnpicklingError) in a long message
        cause = e.__cause__ or e
        reason = first_line(cause, limit=200, default="")
        raise DroneVisionError(
            f"weights {weights}: not an ultralytics checkpoint ({type(cause).__name__}: {reason})"
        ) from None
    check_task(model.task, model=weights)
    return model


def training_dataset(weights: Path) -> tuple[Path, str] | None:
    """The dataset ``weights`` were trained on, if it still exists, and where that was read.

    First the training's records (:func:`dronevision.mlflow_run.ref.find_training_dataset`: its summary.json or
    config.yaml near the model, or near the ``.pt`` an export came from), then a ``.pt``'s own training arguments
    (ultralytics' ``train_args.data``). None when neither names a path that exists.

    Raises:
        DroneVisionError: a ``.pt`` that is not a detector's checkpoint (see :func:`load_checkpoint`).
    """
    from dronevision.mlflow_run.ref import find_training_dataset

    weights = Path(weights).expanduser().resolve()
    found = find_training_dataset(weights)
    if found is not None and Path(found[0]).expanduser().exists():
        return Path(found[0]).expanduser().resolve(), found[1]
    if found is not None:
        log.info("%s names the training dataset %s, which no longer exists", found[1], found[0])
    if weights.suffix.lower() == ".pt":
        data = ((load_checkpoint(weights).ckpt or {}).get("train_args") or {}).get("data")
        if data and Path(str(data)).expanduser().exists():
            return Path(str(data)).expanduser().resolve(), f"the training arguments in {weights.name}"
    return None


def read_metadata_props(model: Path) -> dict[str, str]:
    """A model's metadata as stored (strings): an ONNX file's ``metadata_props``, or the ``metadata.yaml`` beside
    an OpenVINO IR (ultralytics' layout)."""
    import yaml

    model = ir_xml(Path(model))
    if model.suffix.lower() == ".xml":
        sidecar = model.parent / "metadata.yaml"
        props = yaml.safe_load(sidecar.read_text()) if sidecar.is_file() else {}
        return {str(k): str(v) for k, v in (props or {}).items()}
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(model: Path) -> dict[str, Any]:
    """The decoded metadata of an ONNX file or OpenVINO IR (see :func:`parse_metadata`)."""
    return parse_metadata(read_metadata_props(model))


def nms_free(model: Any) -> bool:
    """Whether an ultralytics ``DetectionModel`` (a ``.pt``'s) has an end-to-end, NMS-free head (YOLO26, YOLOv10).

    A ``.pt``'s head kind, as ``end2end`` is an export's: read off the model, never off its name.
    """
    try:
        head = model.model[-1]  # DetectionModel.model: the layers, the head last
    except (AttributeError, TypeError, IndexError, KeyError):
        return False
    return getattr(head, "one2one_cv2", None) is not None


def end2end_args(model: Any) -> dict[str, Any]:
    """ultralytics arguments that run an ultralytics ``DetectionModel``'s end-to-end head where it has one.

    ultralytics runs the one-to-many head of a YOLO26 ``.pt`` with NMS unless its ``predict``, ``val`` and
    ``export`` get ``nms=False``; dronevision always runs the end-to-end head, so that a ``.pt``, its ONNX export
    (``end2end`` in the metadata, output ``(B, max_det, 6)``) and their metrics are of the same head.
    """
    return {"nms": False} if nms_free(model) else {}


def training_object_size(weights: Path) -> dict[str, str]:
    """The training set's median object size (``train_median_box_px``) and ground sample distance (``train_gsd_m``,
    when the dataset stage was told it), from the manifest of the dataset the weights were trained on; what a
    detector needs to see new footage at its training scale (``slicing.gsd``). Empty when unknown."""
    found = training_dataset(weights)
    if found is None:
        return {}
    folder = found[0] if found[0].is_dir() else found[0].parent
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):  # not built by the dataset stage: no manifest
        return {}
    size = (manifest.get("object_size") or {}).get("train") or {}
    values = {"train_median_box_px": size.get("median_side_px"), "train_gsd_m": manifest.get("gsd_m")}
    return {k: str(v) for k, v in values.items() if v is not None}
