"""YOLO26 in the zoo: an end-to-end (NMS-free) head, trained, exported, quantized, benchmarked and pruned.

The head kind comes from the model, never from its name: a ``.pt`` whose head has a one-to-one branch runs it
(:func:`dronevision.infer.model.end2end_args`), and its ONNX export says ``end2end`` in the metadata and outputs
final detections ``(B, min(max_det, anchors), 6)``. At ``imgsz=64`` a YOLO26 has 8x8 + 4x4 + 2x2 = 84 anchors, so
its output holds every anchor: no top-k cut that floating-point noise could move.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dronevision.export.core import comparable_outputs, end2end_pairs, score_part
from dronevision.infer import decode, letterbox_plan, load_detector, nms, read_bgr, read_model_info
from dronevision.infer.model import end2end_args, nms_free
from dronevision.train import resolve_model

from .conftest import compose_config, make_yolo_dataset

IMGSZ = 64
ANCHORS_AT_64 = 8 * 8 + 4 * 4 + 2 * 2
YOLO26 = ("yolo26n", "yolo26s", "yolo26n_p2")


# --- the head kind, from the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "nms_free_head"),
    [("yolo26n", True), ("yolo26s", True), ("yolo26n_p2", True), ("yolov8n", False), ("yolo11n", False)],
)
def test_the_head_kind_is_read_off_the_model(name: str, nms_free_head: bool) -> None:
    from ultralytics import YOLO

    model = YOLO(resolve_model(compose_config("train", f"model={name}").model).arch).model
    assert nms_free(model) is nms_free_head
    assert end2end_args(model) == ({"nms": False} if nms_free_head else {})


def test_not_off_its_name(tmp_path: Path) -> None:
    from ultralytics import YOLO

    misnamed = tmp_path / "yolov8n.pt"  # a YOLO26 checkpoint under another model's name
    torch.save({"model": YOLO("yolo26n.yaml").model, "train_args": {"imgsz": IMGSZ, "task": "detect"}}, misnamed)
    assert nms_free(YOLO(str(misnamed)).model)


def test_a_model_fused_without_its_one_to_one_branch_is_nms_based() -> None:
    from ultralytics import YOLO

    model = YOLO("yolo26n.yaml").model.eval()
    assert nms_free(model.fuse(verbose=False)) is False  # ultralytics' default fuse keeps the one-to-many head
    model = YOLO("yolo26n.yaml").model.eval()
    model.end2end = True
    assert nms_free(model.fuse(verbose=False)) is True
    assert nms_free(object()) is False and end2end_args(None) == {}


def test_end_to_end_rows_are_filtered_not_suppressed() -> None:
    rows = np.array(
        [[[10, 10, 30, 30, 0.9, 0], [11, 11, 31, 31, 0.8, 0], [12, 12, 32, 32, 0.7, 2], [0, 0, 5, 5, 0.1, 0]]],
        np.float32,
    )
    plan = letterbox_plan((64, 64), (64, 64), stride=32, auto=False)
    [det] = decode(rows, plan, conf=0.25, iou=0.7, max_det=300, end2end=True)
    assert det.xyxy.tolist() == rows[0, :3, :4].tolist()  # overlapping boxes of one class: all kept
    assert det.class_id.tolist() == [0, 0, 2] and np.allclose(det.confidence, [0.9, 0.8, 0.7])
    [top] = decode(rows, plan, conf=0.25, iou=0.7, max_det=2, end2end=True)
    assert len(top) == 2
    [empty] = decode(rows, plan, conf=0.95, iou=0.7, max_det=300, end2end=True)
    assert len(empty) == 0


# --- parity of end-to-end outputs (pure) ------------------------------------------------------------------------

_REF = np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.6, 1], [1, 1, 2, 2, 0.02, 0], [3, 3, 4, 4, 0.02, 0]])


@pytest.mark.parametrize(
    ("output", "min_score", "expected_pairs", "expected_diff"),
    [
        (_REF[[1, 0, 3, 2]], 0.25, 2, 0.0),  # reordered: the same detections
        (_REF[[3, 2, 1, 0]], 0.0, 4, 0.0),  # every row, reordered
        (_REF + [0, 0, 0.5, 0, -0.05, 0], 0.25, 2, 0.5),  # a box edge 0.5 px off, scores 0.05 lower
        (_REF[[0, 2, 3, 3]], 0.25, 2, 26.0),  # the class-1 detection is missing: its nearest row, 26 px away
        (_REF, 0.95, 0, 0.0),  # nothing confident to compare
    ],
)
def test_end2end_pairs_compare_detections_whatever_their_order(
    output: np.ndarray, min_score: float, expected_pairs: int, expected_diff: float
) -> None:
    a, b = end2end_pairs(_REF[None], output[None], min_score=min_score)
    assert a.shape == b.shape == (expected_pairs, 6)
    assert float(np.abs(a - b).max(initial=0.0)) == pytest.approx(expected_diff)


def test_comparable_outputs_keep_nms_outputs_and_score_part_finds_the_scores() -> None:
    anchors = [np.arange(10.0).reshape(1, 5, 2)]
    assert comparable_outputs(anchors, anchors, end2end=False)[0][0] is anchors[0]
    assert score_part(anchors[0], end2end=False).shape == (1, 1, 2)
    ref, out = comparable_outputs([_REF[None]], [_REF[None, ::-1]], end2end=True)
    assert ref[0].shape == (1, 2, 6) and np.array_equal(ref[0], out[0])
    assert score_part(ref[0], end2end=True)[..., 0].tolist() == [[0.9, 0.6]]
    with pytest.raises(ValueError, match=r"expected \(\.\.\., N, 6\)"):
        end2end_pairs(_REF, _REF[:, :5])


# --- pruning ----------------------------------------------------------------------------------------------------


def test_pruning_yolo26_keeps_both_heads_outputs_and_its_attention_layers() -> None:
    from ultralytics import YOLO

    from dronevision.train.prune import _whole, prune_detector

    torch.manual_seed(0)
    model = YOLO("yolo26n.yaml").model.eval()

    def outputs(layer: torch.nn.Module) -> list[int]:
        return [m.out_channels for m in layer.modules() if isinstance(m, torch.nn.Conv2d)]

    whole = {i: outputs(layer) for i, layer in enumerate(model.model) if _whole(layer)}
    assert set(whole) >= {10, 22}  # C2PSA, and the last C3k2 that holds a PSABlock
    report = prune_detector(model, ratio=0.25, round_to=8, keep_first=3, imgsz=IMGSZ)
    assert report.macs_after < 0.85 * report.macs_before
    head = model.model[-1]
    for branch in (*head.cv2, *head.one2one_cv2):
        assert branch[-1].out_channels == 4 * head.reg_max
    for branch in (*head.cv3, *head.one2one_cv3):
        assert branch[-1].out_channels == head.nc
    assert {i: outputs(model.model[i]) for i in whole} == whole  # their inputs may shrink, their outputs stay
    model.end2end = True
    with torch.no_grad():
        assert model(torch.rand(1, 3, IMGSZ, IMGSZ))[0].shape == (1, ANCHORS_AT_64, 6)


# --- trained, exported, benchmarked, pruned (slow) --------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 4 validation images at 64x64, one class."""
    return make_yolo_dataset(tmp_path_factory.mktemp("yolo26-data") / "ds").parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, Any]:
    """yolo26n trained one epoch at 64 px by ``dronevision.train``: its summary (weights, ONNX export)."""
    from dronevision.train import run

    root = tmp_path_factory.mktemp("yolo26-train")
    cfg = compose_config(
        "train",
        "debug=fast",
        "model=yolo26n",
        f"dataset.path={data}",
        "train.fraction=1.0",
        f"train.imgsz={IMGSZ}",
        f"out_dir={root / 'out'}",
        f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
    )
    return run(cfg)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, Any], data: Path) -> dict[str, Any]:
    """FP32, FP16, INT8 and OpenVINO INT8 of the trained yolo26n, with a dynamic batch."""
    from dronevision.export import run

    cfg = compose_config(
        "export",
        f"weights={trained['weights']}",
        f"out_dir={tmp_path_factory.mktemp('yolo26-export') / 'out'}",
        "threads=2",
        "export.dynamic=true",
        "export.half=true",
        "export.int8=true",
        "export.openvino_int8=true",
        f"export.calibration={data}",
        "export.calibration_images=8",
        "export.force=true",
    )
    return run(cfg)


@pytest.mark.slow
def test_yolo26n_trains_and_exports_its_end_to_end_head(trained: dict[str, Any]) -> None:
    import onnxruntime as ort

    assert trained["epochs_completed"] == 1 and Path(trained["weights"]).is_file()
    info = read_model_info(Path(trained["onnx"]))
    assert info.end2end and info.metadata["end2end"] == "True" and info.imgsz == (IMGSZ, IMGSZ)
    session = ort.InferenceSession(trained["onnx"], providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)})[0]
    assert out.shape == (1, ANCHORS_AT_64, 6)  # x1, y1, x2, y2, score, class for min(max_det, anchors) rows
    assert trained["onnx_max_abs_diff"] < 1e-2


@pytest.mark.slow
def test_pt_and_onnx_give_the_same_detections_without_nms(trained: dict[str, Any], data: Path) -> None:
    images = [read_bgr(p) for p in sorted((data / "val" / "images").iterdir())]
    settings: dict[str, Any] = {"conf": 0.001, "iou": 0.7, "max_det": 300, "threads": 2}
    from_pt = load_detector(Path(trained["weights"]), **settings).predict(images)
    onnx = load_detector(Path(trained["onnx"]), runtime="ort-cpu", **settings)
    assert onnx.info.end2end
    from_onnx = onnx.predict(images)
    suppressed = 0
    for pt, ox in zip(from_pt, from_onnx):
        assert len(pt) == len(ox) > 0
        rows = [np.c_[d.xyxy, d.confidence, d.class_id] for d in (pt, ox)]
        a, b = end2end_pairs(rows[0], rows[1], min_score=0.0)
        assert len(a) == len(pt) and float(np.abs(a - b).max()) < 1e-2
        kept = nms(ox.xyxy, ox.confidence, class_id=ox.class_id, match="iou", threshold=0.7)
        suppressed += len(ox) - len(kept)
    assert suppressed > 0, "NMS would have removed overlapping detections the end-to-end head kept"


@pytest.mark.slow
def test_export_variants_keep_the_end_to_end_head_with_parity_entries(exported: dict[str, Any]) -> None:
    import onnx

    assert exported["metadata"]["end2end"] is True
    out_dir = Path(exported["out_dir"])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(summary["variants"]) == {"fp32", "fp16", "int8", "int8_openvino"}
    for name, variant in summary["variants"].items():
        assert Path(variant["path"]).exists() and variant["accepted"]
        assert variant["max_abs_diff"] is not None and variant["max_score_diff"] is not None
        assert variant["map50"] is not None and variant["map50_drop"] is not None
        assert read_model_info(Path(variant["path"])).end2end, name
    assert summary["variants"]["fp32"]["max_abs_diff"] < 1e-2
    assert summary["int8"]["float_nodes"] > 0 and summary["int8"]["openvino"]["float_nodes"] > 0

    graph = onnx.load(summary["variants"]["int8"]["path"]).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    picking = [n for n in graph.node if n.op_type in ("TopK", "GatherElements", "Mod")]
    assert picking, "the end-to-end head's top-k is in the graph"
    assert all(producer.get(i) != "DequantizeLinear" for n in picking for i in n.input)  # it runs on float

    images = [read_bgr(p) for p in sorted(Path(summary["parity"]["images"][0]).parent.iterdir())]
    for name in ("fp16", "int8", "int8_openvino"):
        detector = load_detector(Path(summary["variants"][name]["path"]), conf=0.001, threads=2)
        assert all(0 < len(d) <= ANCHORS_AT_64 for d in detector.predict(images, batch=2)), name


@pytest.mark.slow
def test_the_benchmark_runs_on_the_yolo26_onnx(exported: dict[str, Any], data: Path, tmp_path: Path) -> None:
    from dronevision.benchmark import run

    fp32 = exported["variants"]["fp32"]["path"]
    cfg = compose_config(
        "benchmark",
        f"onnx={fp32}",
        f"out_dir={tmp_path / 'bench'}",
        f"images={data}",
        "runtime=[ort-cpu]",  # OpenVINO on a dynamic model in this process made the next training die with SIGSEGV
        "batch=[1,2]",
        "threads=2",
        "min_time_s=0.2",
        "warmup=2",
    )
    summary = run(cfg)
    result = json.loads((Path(summary["out_dir"]) / "benchmark.json").read_text())
    for runtime in ("ort-cpu",):  # OpenVINO runs YOLO26's IR in the export parity test
        for batch in ("1", "2"):
            res = result["runtimes"][runtime]["batches"][batch]
            assert res["input_shape"][0] == int(batch) and res["e2e"]["p50_ms"] > 0
    assert summary["target"]["objects_per_frame"] is not None


@pytest.mark.slow
def test_a_trained_yolo26n_is_pruned_then_fine_tuned(trained: dict[str, Any], data: Path, tmp_path: Path) -> None:
    """Run as the command, in a process of its own: in the same process as the whole suite (OpenVINO sessions and
    trainings before it), this training died with SIGSEGV in CI, never when run alone."""
    import subprocess
    import sys

    overrides = [
        "debug=fast",
        "model=yolo26n",
        f"model.weights={trained['weights']}",
        "prune.ratio=0.2",
        "prune.round_to=8",
        f"dataset.path={data}",
        "train.fraction=1.0",
        f"train.imgsz={IMGSZ}",
        f"out_dir={tmp_path / 'out'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    done = subprocess.run([sys.executable, "-m", "dronevision.train", *overrides], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    prune = summary["prune"]
    assert prune["macs_after"] < prune["macs_before"] and prune["params_after"] < prune["params_before"]
    assert (tmp_path / "out" / "prune" / "pruned.pt").is_file()
    assert read_model_info(Path(summary["onnx"])).end2end and summary["onnx_max_abs_diff"] < 1e-2
