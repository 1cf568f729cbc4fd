"""The export stage: a checkpoint to FP32 / FP16 / INT8 ONNX, each checked against PyTorch and on mAP50.

``python -m dronevision.export weights=<.pt>`` (see :mod:`dronevision.export.command`); ``train`` uses
:func:`export_onnx` and :func:`onnx_max_abs_diff` after every training.
"""

from dronevision.export.command import main, run
from dronevision.export.convert import export_onnx, onnx_max_abs_diff, to_fp16, to_int8

__all__ = ["export_onnx", "main", "onnx_max_abs_diff", "run", "to_fp16", "to_int8"]
