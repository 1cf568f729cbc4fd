"""Pure core of the export stage: which images calibrate, which nodes stay float, how outputs compare, whether INT8
is kept."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError

MAX_OPSET = 18
# End-to-end outputs are compared on the detections a prediction keeps (ultralytics' and load_detector's conf=0.25)
E2E_PARITY_MIN_SCORE = 0.25
_MODULE = re.compile(r"^/model\.(\d+)/")
_HEAD_CONVS = re.compile(r"^(one2one_)?cv\d")


def spread_indices(n_available: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``n_available`` items (all of them when there are fewer).

    Deterministic, and it covers the whole sorted split rather than its first flight.

    Examples:
        >>> spread_indices(10, 4)
        [0, 3, 6, 9]
        >>> spread_indices(3, 8), spread_indices(0, 8), spread_indices(5, 1)
        ([0, 1, 2], [], [0])
    """
    if n_available <= n:
        return list(range(n_available))
    if n <= 1:
        return [0] if n == 1 else []
    return [round(i * (n_available - 1) / (n - 1)) for i in range(n)]


def head_nodes_to_exclude(node_names: Sequence[str]) -> list[str]:
    """Nodes of the detection head's decoding that INT8 quantization must leave in float.

    The last ``/model.N/`` module of an ultralytics export is the head. Its ``cv2``/``cv3`` branches are
    convolutions and quantize well; the rest (DFL softmax, box decoding, sigmoid, the final concat) turns them into
    boxes in pixels and scores in 0..1 in one output tensor, which a single 8-bit scale cannot hold: every score
    would round to 0 (measured: mAP50 0.43 -> 0.00 on the aerial-cars model). An end-to-end head (YOLO26) has
    ``one2one_cv2``/``one2one_cv3`` convolutions, quantized likewise, and picks its final detections with
    ``TopK``/``GatherElements``/``Mod`` on those float scores and boxes, which stay float with the rest.

    Examples:
        >>> head_nodes_to_exclude([
        ...     "/model.0/conv/Conv", "/model.22/cv2.0/cv2.0.2/Conv", "/model.22/dfl/Softmax", "/model.22/Concat_3"])
        ['/model.22/dfl/Softmax', '/model.22/Concat_3']
        >>> head_nodes_to_exclude([
        ...     "/model.22/Add", "/model.23/one2one_cv3.0/one2one_cv3.0.2/Conv", "/model.23/Sigmoid",
        ...     "/model.23/TopK", "/model.23/GatherElements_2", "/model.23/Concat_4"])
        ['/model.23/Sigmoid', '/model.23/TopK', '/model.23/GatherElements_2', '/model.23/Concat_4']
        >>> head_nodes_to_exclude(["Conv_0", "Relu_1"])
        []
    """
    modules = [int(m.group(1)) for name in node_names if (m := _MODULE.match(name))]
    if not modules:
        return []
    prefix = f"/model.{max(modules)}/"
    return [n for n in node_names if n.startswith(prefix) and not _HEAD_CONVS.match(n[len(prefix) :])]


def end2end_pairs(
    reference: np.ndarray, output: np.ndarray, *, min_score: float = E2E_PARITY_MIN_SCORE
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of two end-to-end outputs that are the same detections, paired whatever their order.

    An end-to-end head returns its top ``max_det`` detections sorted by score. Where scores are nearly equal (all of
    them, in an untrained model) floating-point noise reorders the rows and changes which make the cut, so rows are
    compared as detections: each reference row scoring above ``min_score`` is paired with the nearest unpaired row of
    ``output`` (largest absolute difference over ``x1, y1, x2, y2, score, class``), closest pairs first.

    Args:
        reference: ``(B, N, 6)`` or ``(N, 6)`` rows ``x1, y1, x2, y2, score, class`` (PyTorch's).
        output: the same from a runtime.
        min_score: reference rows scoring at most this are left out.

    Returns:
        ``(P, 6)`` reference rows and their ``(P, 6)`` partners in ``output``; ``P`` is 0 when no reference row
        scores above ``min_score``.

    Examples:
        >>> ref = np.array([[0, 0, 10, 10, 0.9, 0], [5, 5, 8, 8, 0.5, 1], [1, 1, 2, 2, 0.01, 0]])
        >>> out = np.array([[5, 5, 8, 8, 0.5, 1], [3, 3, 4, 4, 0.01, 0], [0, 0, 10.5, 10, 0.88, 0]])
        >>> a, b = end2end_pairs(ref, out)
        >>> b.tolist(), float(np.abs(a - b).max())
        ([[0.0, 0.0, 10.5, 10.0, 0.88, 0.0], [5.0, 5.0, 8.0, 8.0, 0.5, 1.0]], 0.5)
        >>> end2end_pairs(ref[None], out[None], min_score=0.95)[0].shape
        (0, 6)
    """
    reference, output = np.asarray(reference, np.float64), np.asarray(output, np.float64)
    if reference.shape != output.shape or reference.shape[-1] != 6:
        raise ValueError(f"end-to-end outputs of shapes {reference.shape} and {output.shape}: expected (..., N, 6)")
    pairs_ref, pairs_out = [np.zeros((0, 6))], [np.zeros((0, 6))]
    for ref_rows, out_rows in zip(reference.reshape(-1, *reference.shape[-2:]), output.reshape(-1, *output.shape[-2:])):
        ref_rows = ref_rows[ref_rows[:, 4] > min_score]
        distance = np.abs(ref_rows[:, None, :] - out_rows[None, :, :]).max(axis=-1)  # (P, N)
        partner = np.full(len(ref_rows), -1)
        taken = np.zeros(len(out_rows), bool)
        for flat in np.argsort(distance, axis=None, kind="stable"):
            i, j = divmod(int(flat), len(out_rows))
            if partner[i] < 0 and not taken[j]:
                partner[i], taken[j] = j, True
                if (partner >= 0).all():
                    break
        pairs_ref.append(ref_rows)
        pairs_out.append(out_rows[partner])
    return np.concatenate(pairs_ref), np.concatenate(pairs_out)


def comparable_outputs(
    reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], *, end2end: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Raw outputs of PyTorch and a runtime, one pair per input, as arrays that compare element by element.

    NMS-based heads' ``(B, 4 + nc, A)`` anchors come back as they are; an end-to-end head's detections as the pairs
    of :func:`end2end_pairs` (as ``(1, P, 6)``: class scores stay in column 4, see :func:`score_part`).

    Examples:
        >>> ref, out = [np.zeros((1, 5, 8))], [np.ones((1, 5, 8))]
        >>> comparable_outputs(ref, out, end2end=False) == (ref, out)
        True
        >>> a, b = comparable_outputs([np.array([[[0, 0, 4, 4, 0.9, 0]]])], [np.array([[[0, 0, 4, 5, 0.8, 0]]])],
        ...                           end2end=True)
        >>> a[0].shape, float(np.abs(a[0] - b[0]).max())
        ((1, 1, 6), 1.0)
    """
    if not end2end:
        return list(reference), list(outputs)
    paired = [end2end_pairs(r, y) for r, y in zip(reference, outputs)]
    return [r[None] for r, _ in paired], [y[None] for _, y in paired]


def score_part(output: np.ndarray, *, end2end: bool) -> np.ndarray:
    """The class scores (0..1) in a raw output: rows 4.. of ``(B, 4 + nc, A)``, column 4 of end-to-end rows.

    Examples:
        >>> score_part(np.arange(10.0).reshape(1, 5, 2), end2end=False).tolist()
        [[[8.0, 9.0]]]
        >>> score_part(np.arange(12.0).reshape(1, 2, 6), end2end=True).tolist()
        [[[4.0], [10.0]]]
    """
    return output[..., 4:5] if end2end else output[:, 4:]


def map50_drop_points(reference: float | None, variant: float | None) -> float | None:
    """How many points (x100) mAP50 fell from ``reference`` to ``variant``; None when either is unknown.

    Examples:
        >>> map50_drop_points(0.4323, 0.4279)
        0.44
        >>> map50_drop_points(0.40, 0.41), map50_drop_points(None, 0.4)
        (-1.0, None)
    """
    if reference is None or variant is None:
        return None
    return round((reference - variant) * 100, 4)


def int8_accepted(drop_points: float | None, *, max_drop: float, force: bool) -> bool:
    """Whether the INT8 model is kept: its mAP50 drop is within ``max_drop`` points, unknown, or ``force`` is set.

    Examples:
        >>> int8_accepted(0.5, max_drop=1.0, force=False), int8_accepted(1.5, max_drop=1.0, force=False)
        (True, False)
        >>> int8_accepted(0.0, max_drop=-1.0, force=True), int8_accepted(None, max_drop=1.0, force=False)
        (True, True)
    """
    return force or drop_points is None or drop_points <= max_drop


def check_export_settings(export: Mapping[str, Any]) -> None:
    """Refuse settings that cannot work, before anything is loaded or written.

    Examples:
        >>> check_export_settings({"opset": 17, "int8": True, "calibration": "data/", "calibration_images": 8})
        >>> check_export_settings({"opset": 19})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: export.opset 19 is not supported: at most 18 (onnxruntime's quantizer ...
        >>> check_export_settings({"opset": 17, "int8": True, "calibration": None})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: export.int8=true needs export.calibration=<dataset dir or data.yaml> ...
    """
    opset = export.get("opset")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset > MAX_OPSET:
        raise DroneVisionError(
            f"export.opset {opset} is not supported: at most {MAX_OPSET} (onnxruntime's quantizer and the FP16"
            " converter are checked up to there)"
        )
    if opset < 13 and export.get("int8"):
        raise DroneVisionError(f"export.int8=true needs export.opset >= 13 (per-channel QDQ), not {opset}")
    imgsz = export.get("imgsz")
    if imgsz is not None and (not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz <= 0):
        raise DroneVisionError(f"export.imgsz {imgsz!r} must be a positive integer, or null for the training imgsz")
    for key in ("int8", "openvino_int8"):
        if export.get(key) and not export.get("calibration"):
            raise DroneVisionError(
                f"export.{key}=true needs export.calibration=<dataset dir or data.yaml> (images to calibrate on)"
            )
    if export.get("int8") or export.get("openvino_int8"):
        n = export.get("calibration_images")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DroneVisionError(f"export.calibration_images {n!r} must be a positive integer")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The command's final lines for humans: one per variant, then where things are.

    ``max diff``: the largest |runtime - PyTorch| (ONNX Runtime; OpenVINO for its IR) over the raw outputs (boxes
    in pixels), and over the class scores alone; ``drop``: mAP50 points (x100) below the .pt's on the same square
    inputs.

    Examples:
        >>> print(format_summary({
        ...     "seconds": 9.6, "imgsz": 64, "opset": 17, "dynamic": False,
        ...     "pt_metrics": {"map50": 0.5, "map50_95": 0.2}, "weights": "w.pt",
        ...     "variants": {"int8": {"path": None, "size_mb": 3.4, "max_abs_diff": 1.5, "max_score_diff": 0.02,
        ...                           "map50": 0.4,
        ...                           "map50_95": 0.1, "map50_drop": 10.0, "accepted": False}},
        ...     "mlflow": {"ok": False, "error": "no training run"}, "out_dir": "out"}))
        dronevision export: done in 10 s (imgsz 64, opset 17, static shape)
          pt      mAP50 0.500  mAP50-95 0.200  w.pt
          int8    3.40 MB  max diff 1.5 (scores 0.02)  mAP50 0.400 (drop 10.00 pts)  mAP50-95 0.100  REFUSED, removed
          mlflow  not tracked: no training run
          summary out/summary.json
    """
    shape = "dynamic batch and size" if summary["dynamic"] else "static shape"
    lines = [
        f"dronevision export: done in {summary['seconds']:.0f} s "
        f"(imgsz {summary['imgsz']}, opset {summary['opset']}, {shape})"
    ]
    pt = summary.get("pt_metrics")
    if pt:
        lines.append(f"  pt      mAP50 {pt['map50']:.3f}  mAP50-95 {pt['map50_95']:.3f}  {summary['weights']}")
    for name, v in summary["variants"].items():
        where = v["path"] if v["accepted"] else "REFUSED, removed"
        lines.append(
            f"  {name:<6}  {v['size_mb']:.2f} MB  max diff {v['max_abs_diff']:.2g}"
            f" (scores {_fmt(v.get('max_score_diff'), '.2g')})"
            f"  mAP50 {_fmt(v['map50'], '.3f')} (drop {_fmt(v['map50_drop'], '.2f')} pts)"
            f"  mAP50-95 {_fmt(v['map50_95'], '.3f')}  {where}"
        )
    mlflow = summary["mlflow"]
    if mlflow["ok"]:
        lines.append(f"  mlflow  added to run {mlflow['run_id']} at {mlflow['tracking_uri']}")
    else:
        lines.append(f"  mlflow  not tracked: {mlflow['error']}")
    lines.append(f"  summary {summary['out_dir']}/summary.json")
    return "\n".join(lines)
