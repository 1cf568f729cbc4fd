"""INT8 for OpenVINO: NNCF post-training quantization of the FP32 ONNX into an OpenVINO IR folder.

The folder holds ``model.xml`` / ``model.bin`` and ultralytics' ``metadata.yaml`` (the layout of
``yolo export format=openvino int8=True``), so ultralytics' ``YOLO(folder)``, ``dronevision.evaluate`` and
``dronevision.benchmark`` all run it. Three things make it fast on a CPU and keep it accurate:

- SiLU (``x * sigmoid(x)`` in the ONNX) becomes OpenVINO's ``Swish`` op before quantizing. The CPU plugin fuses
  ``Convolution -> Swish -> FakeQuantize`` into one INT8 convolution; left as ``Sigmoid`` and ``Multiply`` it runs
  each activation as a separate bf16 kernel (YOLOv8n at 640, 2 threads: 12.0 -> 7.7 ms of kernel time).
- NNCF's OpenVINO backend quantizes (MIXED preset: symmetric INT8 weights per channel, asymmetric activations).
  OpenVINO reading an NNCF-quantized QDQ *ONNX* gave wrong boxes (mAP50 0.39 -> 0.26 where ONNX Runtime ran the
  same file at 0.387), so the quantized model is kept as IR.
- The head's decoding stays in float, as for ONNX Runtime's INT8 (:func:`head_nodes_to_exclude`); so does an
  end-to-end head's choice of its final detections (YOLO26: ``TopK``, ``GatherElements``, ``Mod``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dronevision.export.core import head_nodes_to_exclude
from dronevision.fsio import make_temp_dir

log = logging.getLogger(__name__)

IR_NAME = "model.xml"


def fuse_silu(model: Any) -> int:
    """Replace every ``x * sigmoid(x)`` in an ``openvino.Model`` by ``Swish(x)``, in place; returns how many.

    The same function (Swish with beta 1 is x * sigmoid(x)); only the kernels that run it change.
    """
    import openvino.opset13 as ops

    fused = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Multiply":
            continue
        a, b = node.input_value(0), node.input_value(1)
        for x, gate in ((a, b), (b, a)):
            if gate.get_node().get_type_name() == "Sigmoid" and gate.get_node().input_value(0) == x:
                swish = ops.swish(x)
                swish.set_friendly_name(node.get_friendly_name())
                node.output(0).replace(swish.output(0))
                fused += 1
                break
    return fused


def write_ir(model: Any, folder: Path, metadata: Mapping[str, Any]) -> Path:
    """Save ``model`` as ``folder/model.xml`` (+ .bin) with ``metadata.yaml``, via a temporary folder renamed at the
    end (a failure leaves no half-written folder); returns the .xml path."""
    import openvino as ov
    import yaml

    tmp = make_temp_dir(folder.parent, f".{folder.name}-")
    try:
        ov.save_model(model, tmp / IR_NAME, compress_to_fp16=False)
        (tmp / "metadata.yaml").write_text(yaml.safe_dump(dict(metadata), sort_keys=False))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / IR_NAME


def to_openvino_int8(
    fp32: Path, folder: Path, images: Sequence[Path], *, imgsz: int, metadata: Mapping[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Quantize the FP32 ONNX ``fp32`` with NNCF, calibrated on ``images`` (letterboxed to ``imgsz`` one at a time,
    as NNCF asks for them), into ``folder``.

    Returns the .xml path and the settings used, for summary.json.
    """
    from dronevision.infer.yolo import read_letterboxed

    # nncf imports torch.utils.cpp_extension, which logs a warning about CUDA_HOME on machines without CUDA
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    fused = fuse_silu(model)
    names = [node.get_friendly_name() for node in model.get_ordered_ops()]
    floating = head_nodes_to_exclude(names)
    if not floating:
        log.warning("OpenVINO INT8: no ultralytics detection head found in %s; quantizing every node", fp32.name)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(images), lambda image: read_letterboxed(image, imgsz=imgsz)),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(images),
        ignored_scope=nncf.IgnoredScope(names=floating, validate=False),
    )
    xml = write_ir(quantized, folder, metadata)
    log.info(
        "OpenVINO INT8: %d SiLU fused, %d head nodes kept in float, calibrated on %d images -> %s",
        fused,
        len(floating),
        len(images),
        xml,
    )
    return xml, {
        "format": "OpenVINO IR (NNCF)",
        "preset": "MIXED",
        "silu_fused": fused,
        "float_nodes": len(floating),
        "images": len(images),
    }
