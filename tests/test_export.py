"""Export stage: FP32 / FP16 / INT8 ONNX of a real tiny model, parity with PyTorch, the INT8 refusal, MLflow, and
bad input through the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from omegaconf import DictConfig

from dronevision.errors import DroneVisionError
from dronevision.export import run
from dronevision.export.command import FILES
from dronevision.export.core import check_export_settings
from dronevision.mlflow_run import MlflowRun

from .conftest import REPO, compose_config, make_yolo_dataset

IMGSZ = 64
SUMMARY_KEYS = {"weights", "out_dir", "variants", "pt_metrics", "opset", "dynamic", "imgsz", "metadata", "seconds"}
VARIANT_KEYS = {"path", "size_mb", "max_abs_diff", "map50", "map50_95", "map50_drop", "accepted"}


def compose_export(*overrides: str) -> DictConfig:
    return compose_config("export", *overrides)


def session(path: str | Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training images (calibration) and 4 validation images (parity) at 64x64; relative paths in data.yaml."""
    return make_yolo_dataset(tmp_path_factory.mktemp("export-data") / "ds").parent


@pytest.fixture(scope="module")
def full_export(
    tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, calibration: Path
) -> tuple[dict[str, Any], Path, str]:
    """FP32 + FP16 + INT8 (ONNX QDQ and OpenVINO IR) of the tiny model, laid out as a training run whose MLflow
    run the export adds to.

    ``max_map_drop=-1`` refuses any INT8 model and ``force=true`` keeps it anyway.
    """
    root = tmp_path_factory.mktemp("export")
    weights = root / "train" / "train" / "weights" / "best.pt"
    weights.parent.mkdir(parents=True)
    shutil.copy2(tiny_weights, weights)
    uri = f"sqlite:///{root}/mlflow.db"
    training = MlflowRun(uri, "export-test").start()
    training.end()
    (root / "train" / "summary.json").write_text(json.dumps({"run_id": training.run_id, "tracking_uri": uri}))
    cfg = compose_export(
        f"weights={weights}",
        f"out_dir={root / 'out'}",
        "threads=2",
        f"export.imgsz={IMGSZ}",
        "export.half=true",
        "export.int8=true",
        "export.openvino_int8=true",
        f"export.calibration={calibration}",
        "export.calibration_images=8",
        "export.max_map_drop=-1",
        "export.force=true",
    )
    summary = run(cfg)
    assert not (weights.parent / "best.onnx").exists(), "the export must not write beside the weights"
    return summary, root / "out", str(training.run_id)


@pytest.mark.slow
def test_every_variant_runs_on_the_same_input_with_the_metadata(full_export: tuple[dict, Path, str]) -> None:
    summary, out_dir, run_id = full_export
    training = {"mlflow_run_id": run_id, "mlflow_tracking_uri": summary["mlflow"]["tracking_uri"]}
    assert set(summary["variants"]) == {"fp32", "fp16", "int8", "int8_openvino"}
    meta = {k: summary["metadata"].get(k) for k in ("names", "imgsz", "stride", "end2end")}
    assert meta == {"names": {0: "vehicle"}, "imgsz": [IMGSZ, IMGSZ], "stride": 32, "end2end": False}
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    shapes = set()
    for name, variant in summary["variants"].items():
        assert Path(variant["path"]) == out_dir / FILES[name]
        if name == "int8_openvino":  # an OpenVINO IR folder: test_openvino_int8_is_an_ir_with_silu_fused
            ir_meta = yaml.safe_load((Path(variant["path"]) / "metadata.yaml").read_text())
            assert {k: ir_meta[k] for k in training} == training  # the IR names the training run too
            continue
        assert Path(variant["path"]).is_file()
        s = session(variant["path"])
        (inp,) = s.get_inputs()
        assert (inp.shape, inp.type) == ([1, 3, IMGSZ, IMGSZ], "tensor(float)"), name
        assert s.get_outputs()[0].type == "tensor(float)", name
        shapes.add(s.run(None, {inp.name: x})[0].shape)
        meta = s.get_modelmeta().custom_metadata_map
        assert (meta["names"], meta["imgsz"], meta["stride"]) == ("{0: 'vehicle'}", f"[{IMGSZ}, {IMGSZ}]", "32"), name
        assert {k: meta[k] for k in training} == training, name  # the training's MLflow run, for later stages
    assert shapes == {(1, 5, 84)}  # 4 box coordinates + 1 class, over (8*8 + 4*4 + 2*2) anchors


@pytest.mark.slow
def test_parity_with_pytorch_and_int8_is_qdq(full_export: tuple[dict, Path, str]) -> None:
    import onnx

    summary, out_dir, _ = full_export
    v, scale = summary["variants"], summary["parity"]["output_abs_max"]
    assert scale > 1.0  # box coordinates in pixels
    assert v["fp32"]["max_abs_diff"] < 1e-4 * scale
    assert v["fp16"]["max_abs_diff"] < 1e-2 * scale, (v["fp16"]["max_abs_diff"], scale)
    assert v["int8"]["max_abs_diff"] > v["fp32"]["max_abs_diff"]
    assert v["int8"]["size_mb"] < v["fp16"]["size_mb"] < v["fp32"]["size_mb"]
    ops = [n.op_type for n in onnx.load(str(out_dir / FILES["int8"])).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert "Softmax" in ops, "the DFL head stays in float"
    assert summary["int8"]["images"] == 8 and summary["int8"]["format"] == "QDQ"


@pytest.mark.slow
def test_openvino_int8_is_an_ir_with_silu_fused(full_export: tuple[dict, Path, str]) -> None:
    import openvino as ov

    from dronevision.infer import open_session, read_model_info

    summary, out_dir, _ = full_export
    folder = out_dir / FILES["int8_openvino"]
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "model.bin", "model.xml"]
    ops = [op.get_type_name() for op in ov.Core().read_model(str(folder / "model.xml")).get_ordered_ops()]
    settings = summary["int8"]["openvino"]
    # yolov8n: one SiLU per Conv module outside the head's last 1x1 convs: all of them became Swish
    assert settings["silu_fused"] == ops.count("Swish") > 10
    assert ops.count("FakeQuantize") > 10 and "Softmax" in ops, "quantized, with the DFL head in float"
    assert settings["images"] == 8 and settings["float_nodes"] > 0
    info = read_model_info(folder)
    assert (info.names, info.imgsz, info.stride, info.quantized) == ({0: "vehicle"}, (IMGSZ, IMGSZ), 32, True)
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = open_session(folder / "model.xml", "openvino", threads=1, batch=1, info=info).run(x)
    assert out.shape == (1, 5, 84)
    v = summary["variants"]["int8_openvino"]
    assert (
        v["max_abs_diff"] > summary["variants"]["fp32"]["max_abs_diff"]
        and v["size_mb"] < 0.5 * (summary["variants"]["fp32"]["size_mb"])
    )


@pytest.mark.slow
def test_the_benchmark_takes_the_ir_folder_and_finds_the_training_run(full_export: tuple[dict, Path, str]) -> None:
    from dronevision.benchmark import run as benchmark

    summary, out_dir, run_id = full_export
    cfg = compose_config(
        "benchmark",
        f"onnx={out_dir / FILES['int8_openvino']}",
        f"out_dir={out_dir.parent / 'bench-ir'}",
        "runtime=[openvino,ort-cpu]",
        "batch=[1]",
        "min_time_s=0.2",
        "warmup=2",
        "frame_wh=[160,120]",
        "openvino.u8_input=true",
    )
    result = benchmark(cfg)
    assert result["runtimes"]["ort-cpu"]["skipped"].endswith("is an OpenVINO IR: it runs on openvino only, not ort-cpu")
    assert result["runtimes"]["openvino"]["precision"].startswith("int8+")
    # the IR's metadata.yaml names the training's run
    assert result["mlflow"]["ok"] and result["run_id"] == run_id == summary["mlflow"]["run_id"]
    assert result["mlflow"]["found_in"].endswith("metadata")


@pytest.mark.slow
def test_summary_records_map_of_every_variant(full_export: tuple[dict, Path, str]) -> None:
    summary, out_dir, _ = full_export
    assert set(summary) >= SUMMARY_KEYS | {"mlflow"}
    assert json.loads((out_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (summary["opset"], summary["dynamic"], summary["imgsz"]) == (17, False, IMGSZ)
    assert summary["seconds"] > 0
    pt = summary["pt_metrics"]
    assert {"map50", "map50_95"} <= set(pt) and all(0.0 <= x <= 1.0 for x in pt.values())
    for name, variant in summary["variants"].items():
        assert set(variant) >= VARIANT_KEYS, name
        assert 0.0 <= variant["map50"] <= 1.0 and 0.0 <= variant["map50_95"] <= 1.0, name
        assert variant["map50_drop"] == pytest.approx((pt["map50"] - variant["map50"]) * 100, abs=1e-3)
        assert variant["accepted"] is True, name  # INT8: refused by max_map_drop=-1, kept by force=true
    assert summary["variants"]["fp32"]["map50_drop"] == pytest.approx(0.0, abs=1e-3)
    assert Path(summary["parity"]["dataset"]).name == "data.yaml" and summary["parity"]["split"] == "val"


@pytest.mark.slow
def test_export_adds_files_and_metrics_to_the_training_run(full_export: tuple[dict, Path, str]) -> None:
    from mlflow.tracking import MlflowClient

    summary, _, run_id = full_export
    assert summary["mlflow"]["ok"] is True and summary["mlflow"]["run_id"] == run_id
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics["export/fp16/max_abs_diff"] == summary["variants"]["fp16"]["max_abs_diff"]
    assert got.data.metrics["export/int8/map50"] == summary["variants"]["int8"]["map50"]
    files = {Path(f.path).name for f in client.list_artifacts(run_id, "export/out")}
    assert files == {*FILES.values(), "summary.json"}
    assert len(client.search_runs([got.info.experiment_id])) == 1, "no new run"


@pytest.mark.slow
def test_int8_refused_when_map50_drops_too_far(tmp_path: Path, tiny_weights: Path, calibration: Path) -> None:
    out = tmp_path / "out"
    cfg = compose_export(
        f"weights={tiny_weights}",
        f"out_dir={out}",
        f"export.imgsz={IMGSZ}",
        "export.int8=true",
        "export.openvino_int8=true",
        f"export.calibration={calibration / 'data.yaml'}",
        "export.calibration_images=4",
        "export.max_map_drop=-1",
    )
    with pytest.raises(DroneVisionError, match=r"^int8 mAP50 drops by -?\d+\.\d\d points") as e:
        run(cfg)
    assert "; int8_openvino mAP50 drops by" in str(e.value)
    assert "export.force=true" in str(e.value) and "\n" not in str(e.value)
    assert not (out / FILES["int8"]).exists() and not (out / FILES["int8_openvino"]).exists()
    assert (out / FILES["fp32"]).is_file()
    summary = json.loads((out / "summary.json").read_text())
    for name in ("int8", "int8_openvino"):
        assert summary["variants"][name]["accepted"] is False and summary["variants"][name]["path"] is None
        assert summary["variants"][name]["map50"] is not None


@pytest.mark.slow
def test_dynamic_batch_accepts_batch_2(tmp_path: Path, tiny_weights: Path, calibration: Path) -> None:
    cfg = compose_export(
        f"weights={tiny_weights}",
        f"out_dir={tmp_path}",
        f"export.imgsz={IMGSZ}",
        "export.dynamic=true",
        "export.half=true",
        "export.int8=true",
        f"export.calibration={calibration}",
        "export.calibration_images=4",
        "export.force=true",
    )
    summary = run(cfg)
    assert summary["dynamic"] is True
    x = np.random.default_rng(1).random((2, 3, IMGSZ, IMGSZ), dtype=np.float32)
    for name in ("fp32", "fp16", "int8"):
        s = session(summary["variants"][name]["path"])
        assert s.get_inputs()[0].shape[0] == "batch", name
        assert s.run(None, {s.get_inputs()[0].name: x})[0].shape == (2, 5, 84), name


@pytest.mark.slow
def test_without_a_dataset_only_raw_outputs_are_compared(tmp_path: Path, tiny_weights: Path) -> None:
    summary = run(compose_export(f"weights={tiny_weights}", f"out_dir={tmp_path}"))
    assert summary["imgsz"] == 32 and summary["metadata"]["imgsz"] == [32, 32]  # the checkpoint's training imgsz
    assert summary["pt_metrics"] is None and summary["parity"]["images"] == ["fixed noise (seed 0)"]
    fp32 = summary["variants"]["fp32"]
    assert fp32["max_abs_diff"] < 1e-4 * summary["parity"]["output_abs_max"]
    assert fp32["map50"] is None and fp32["map50_drop"] is None and fp32["accepted"] is True
    assert summary["mlflow"]["ok"] is False and summary["mlflow"]["error"].startswith("no training run found")
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [FILES["fp32"]]


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ({"opset": 17}, None),
        ({"opset": 18, "int8": True, "calibration": "d", "calibration_images": 1}, None),
        ({"opset": 19}, "export.opset 19 is not supported"),
        ({"opset": "17"}, "export.opset 17 is not supported"),
        ({"opset": 12, "int8": True, "calibration": "d", "calibration_images": 8}, "needs export.opset >= 13"),
        ({"opset": 17, "imgsz": 0}, "export.imgsz 0 must be a positive integer"),
        ({"opset": 17, "int8": True, "calibration": None}, "export.int8=true needs export.calibration"),
        ({"opset": 17, "int8": True, "calibration": "d", "calibration_images": 0}, "calibration_images 0 must"),
    ],
)
def test_check_export_settings(export: dict[str, Any], message: str | None) -> None:
    if message is None:
        check_export_settings(export)
    else:
        with pytest.raises(DroneVisionError, match=message):
            check_export_settings(export)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("", "error: weights=<checkpoint .pt> is required"),
        ("weights={tmp}/nope.pt", "error: weights {tmp}/nope.pt does not exist"),
        ("weights={tmp}/model.onnx", "error: weights {tmp}/model.onnx is not a .pt checkpoint"),
        ("weights={tmp}/broken.pt", "error: weights {tmp}/broken.pt: not an ultralytics checkpoint"),
        ("weights={w} export.opset=19", "error: export.opset 19 is not supported: at most 18"),
        ("weights={u} export.int8=true", "error: export.int8=true needs export.calibration="),
        ("weights={u} export.openvino_int8=true", "error: export.openvino_int8=true needs export.calibration="),
        (
            "weights={w} export.int8=true export.calibration={tmp}/missing",
            "error: export.calibration {tmp}/missing does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tiny_weights: Path, overrides: str, message: str) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    if "{u}" in overrides:  # a detector naming no training dataset: INT8 cannot default its calibration data
        from ultralytics import YOLO

        YOLO("yolov8n.yaml").save(tmp_path / "untrained.pt")
    out = tmp_path / "out"
    args = overrides.format(tmp=tmp_path, w=tiny_weights, u=tmp_path / "untrained.pt").split()
    cmd = [sys.executable, "-m", "dronevision.export", f"out_dir={out}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message.format(tmp=tmp_path)), result.stderr
    assert not out.exists(), "bad input must not leave an output folder"
