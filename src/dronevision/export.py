"""Export a checkpoint to ONNX and check ONNX Runtime against PyTorch on the same input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)


def letterbox(image_bgr: np.ndarray, *, imgsz: int) -> np.ndarray:
    """Resize keeping aspect ratio, pad to ``imgsz`` squared (grey 114) as YOLO does; returns (1,3,H,W) RGB 0..1.

    Examples:
        >>> letterbox(np.zeros((50, 100, 3), np.uint8), imgsz=64).shape
        (1, 3, 64, 64)
    """
    import cv2

    h, w = image_bgr.shape[:2]
    scale = min(imgsz / h, imgsz / w)
    nh, nw = round(h * scale), round(w * scale)
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((imgsz, imgsz, 3), 114, dtype=np.uint8)
    top, left = (imgsz - nh) // 2, (imgsz - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    return np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def export_onnx(weights: Path, *, imgsz: int, opset: int, dynamic: bool, simplify: bool) -> Path:
    """Export with ultralytics (class names, stride and image size go into the ONNX metadata)."""
    from ultralytics import YOLO

    if not weights.is_file():
        raise DroneVisionError(f"weights file {weights} does not exist")
    out = YOLO(str(weights)).export(
        format="onnx", imgsz=imgsz, opset=opset, dynamic=dynamic, simplify=simplify, device="cpu", verbose=False
    )
    return Path(out)


def onnx_max_abs_diff(weights: Path, onnx_path: Path, image: Path, *, imgsz: int, threads: int) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's raw outputs on one letterboxed image."""
    import cv2
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    frame = cv2.imread(str(image))
    if frame is None:
        raise DroneVisionError(f"{image}: cannot be read as an image")
    x = letterbox(frame, imgsz=imgsz)
    model = YOLO(str(weights)).model.float().eval().fuse(verbose=False)
    with torch.inference_mode():
        y = model(torch.from_numpy(x))
    y_torch = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    y_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
    if y_onnx.shape != y_torch.shape:
        raise RuntimeError(f"ONNX output shape {y_onnx.shape} differs from PyTorch's {y_torch.shape}")
    return float(np.abs(y_onnx - y_torch).max())
