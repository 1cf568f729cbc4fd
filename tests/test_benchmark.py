"""The benchmark stage: capacity maths, latency statistics, runtimes, a real benchmark of a tiny ONNX, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import DictConfig

from dronevision.benchmark import capacity, check_target, latency_stats, run, sigma_clip, time_calls
from dronevision.errors import DroneVisionError
from dronevision.infer import OrtSession, RuntimeUnavailable, available, open_session, read_model_info

from .conftest import compose_config, make_yolo_dataset

NO_CUDA = available("ort-cuda")  # the reason, or None where CUDA really is usable

# --- capacity ---------------------------------------------------------------------------------------------------

TARGET = {"footage_hours_per_week": 10000, "sample_fps": 1.0, "tiles_per_frame": 1, "hours_per_week_per_machine": 168}


@pytest.mark.parametrize(
    ("fps", "overrides", "hours", "machines"),
    [
        (30.0, {}, 5040.0, 2),  # 30 frames/s x 168 h = 5040 footage hours at 1 frame per footage second
        (100.0, {}, 16800.0, 1),
        (10000 / 168, {}, 10000.0, 1),  # exactly enough: one machine, not two
        (30.0, {"tiles_per_frame": 4}, 1260.0, 8),  # four model inputs per frame: a quarter of the footage
        (30.0, {"sample_fps": 0.2}, 25200.0, 1),  # a frame every 5 s of footage
        (30.0, {"hours_per_week_per_machine": 40}, 1200.0, 9),  # office hours only
        (30.0, {"footage_hours_per_week": 0}, 5040.0, 0),  # no footage, no machines
        (1.0, {"sample_fps": 30.0, "footage_hours_per_week": 1}, 5.6, 1),  # every frame of 30 fps video
    ],
)
def test_capacity_table(fps: float, overrides: dict, hours: float, machines: int) -> None:
    got = capacity(fps, **{**TARGET, **overrides})
    assert got["footage_hours_per_week_per_machine"] == pytest.approx(hours, abs=1e-3)
    assert got["machines_needed"] == machines
    assert got["passes"] is (machines <= 1)
    assert got["detections_per_week"] is None and got["detections_vs_target"] is None


@pytest.mark.parametrize(
    ("objects", "footage", "detections", "ratio"),
    [
        (0.5, 10000, 0.5 * 5040 * 3600, 0.5 * 5040 * 3600 / 12000),  # one machine covers 5040 of 10000 h
        (0.5, 100, 0.5 * 100 * 3600, 15.0),  # capped at the footage there is
        (0.0, 10000, 0.0, 0.0),
    ],
)
def test_capacity_detections_against_target_sightings(
    objects: float, footage: float, detections: float, ratio: float
) -> None:
    got = capacity(
        30.0,
        **{**TARGET, "footage_hours_per_week": footage},
        objects_per_frame=objects,
        target_sightings_per_week=12000,
    )
    assert got["detections_per_week"] == pytest.approx(detections)
    assert got["detections_vs_target"] == pytest.approx(ratio, rel=1e-4)
    frames = min(footage, 5040) * 3600
    assert got["objects_per_frame_needed"] == pytest.approx(12000 / frames, rel=1e-6)


def test_capacity_refuses_no_speed() -> None:
    with pytest.raises(ValueError):
        capacity(0.0, **TARGET)


@pytest.mark.parametrize(
    ("key", "value"),
    [("sample_fps", 0), ("tiles_per_frame", 1.5), ("hours_per_week_per_machine", 169), ("objects_per_frame", -1)],
)
def test_check_target_refuses_impossible_values(key: str, value: float) -> None:
    target = {**TARGET, "target_sightings_per_week": 12000, "objects_per_frame": None, key: value}
    with pytest.raises(DroneVisionError, match=f"target.{key}"):
        check_target(target)


# --- latency statistics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "kept"),
    [
        ([1.0] * 20, [1.0] * 20),  # no spread: nothing clipped
        ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]),  # within 2 sigma
        ([10.0] * 19 + [1000.0], [10.0] * 19),  # one stall
        ([10.0] * 10 + [11.0] * 10 + [500.0, 900.0], [10.0] * 10 + [11.0] * 10),  # two, over two passes
    ],
)
def test_sigma_clip(samples: list[float], kept: list[float]) -> None:
    assert sorted(sigma_clip(samples).tolist()) == kept


def test_latency_stats_percentiles_and_fps() -> None:
    seconds = np.arange(1, 11) / 1000  # 1..10 ms
    s = latency_stats(seconds, batch=4)
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == pytest.approx((5.5, 9.1, 9.91))
    assert s["fps"] == pytest.approx(4 / 0.0055, rel=1e-4)
    assert s["iterations"] == s["kept"] == 10
    stalled = latency_stats([0.002] * 50 + [0.5], batch=1)
    assert stalled["p99_ms"] == pytest.approx(2.0) and stalled["kept"] == 50
    assert stalled["max_raw_ms"] == pytest.approx(500.0) and stalled["p99_raw_ms"] > 2.0
    with pytest.raises(ValueError):
        latency_stats([], batch=1)


def test_time_calls_warm_up_and_limits() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=3, min_time_s=0.0, min_iters=5, max_iters=100)
    assert len(times) == 5 and len(calls) == 8  # warm-up calls are not timed
    times = time_calls(lambda: None, warmup=0, min_time_s=10.0, min_iters=1, max_iters=7)
    assert len(times) == 7  # max_iters ends it before min_time_s


# --- runtimes on a real ONNX ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_onnx(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny yolov8n as ONNX at imgsz 64 with a dynamic batch (exported from a copy: the weights are shared)."""
    from ultralytics import YOLO

    weights = shutil.copy(tiny_weights, tmp_path_factory.mktemp("bench-onnx") / "tiny.pt")
    out = YOLO(str(weights)).export(format="onnx", imgsz=64, dynamic=True, simplify=True, device="cpu")
    return Path(out)


@pytest.mark.slow
def test_read_model_info_and_sessions(tiny_onnx: Path) -> None:
    info = read_model_info(tiny_onnx)
    assert info.names == {0: "vehicle"} and info.imgsz == (64, 64) and info.stride == 32
    assert info.dynamic_batch and info.input_dtype == "float32" and not info.end2end and not info.quantized
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    outputs = {}
    for runtime, provider in (("ort-cpu", "CPUExecutionProvider"), ("openvino", "CPU")):
        session = open_session(tiny_onnx, runtime, threads=1, batch=2, info=info, precision="f32")
        assert session.provider == provider and session.input_shape == (2, 3, 64, 64)
        outputs[runtime] = session.run(x)
    assert outputs["ort-cpu"].shape == (2, 5, 84)  # 4 box values + 1 class, 8x8 + 4x4 + 2x2 anchors
    np.testing.assert_allclose(outputs["openvino"], outputs["ort-cpu"], atol=1e-2)


# OpenVINO compiled with several streams in the pytest process made a later subprocess-starting test die with SIGSEGV
# (no Python traceback; only after the augmentation tests had run in the same process; freeing the model first did
# not prevent it). The tests that use streams run in a pytest process of their own, which this variable marks.
ISOLATED = "DRONEVISION_TEST_OPENVINO_ISOLATED"
STREAM_TESTS = ("uint8_input_and_streams", "streams_return_outputs", "benchmark_with_openvino_streams")
in_own_process = pytest.mark.skipif(
    not os.environ.get(ISOLATED), reason="OpenVINO streams: runs in test_openvino_streams_in_their_own_process"
)


@pytest.mark.slow
def test_openvino_streams_in_their_own_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", " or ".join(STREAM_TESTS)],
        capture_output=True,
        text=True,
        env={**os.environ, ISOLATED: "1"},
    )
    passed = f"{len(STREAM_TESTS)} passed"
    assert result.returncode == 0 and passed in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


@in_own_process
@pytest.mark.slow
def test_openvino_uint8_input_and_streams_give_the_float_sessions_outputs(tiny_onnx: Path) -> None:
    from dronevision.benchmark.measure import session_input

    info = read_model_info(tiny_onnx)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(6)]  # BGR, not square
    frames[2:4] = [np.zeros((48, 80, 3), np.uint8), np.full((48, 80, 3), 255, np.uint8)]  # unlike the others
    floats = [session_input(frames[i : i + 2], imgsz=64, dtype=np.dtype(np.float32)) for i in (0, 2, 4)]
    canvases = [session_input(frames[i : i + 2], imgsz=64, dtype=np.dtype(np.uint8)) for i in (0, 2, 4)]
    assert floats[0].shape == (2, 3, 64, 64) and canvases[0].shape == (2, 64, 64, 3)
    plain = open_session(tiny_onnx, "openvino", threads=2, batch=2, info=info, precision="f32")
    expected = [plain.run(x) for x in floats]
    assert plain.run_many(floats)[2] == pytest.approx(expected[2])  # one stream: one request after the other
    u8 = open_session(tiny_onnx, "openvino", threads=2, batch=2, info=info, precision="f32", u8_input=True)
    assert u8.input_shape == (2, 64, 64, 3) and u8.input_dtype == np.uint8
    np.testing.assert_allclose(u8.run(canvases[1]), expected[1], atol=1e-3)
    streamed = open_session(tiny_onnx, "openvino", threads=2, batch=2, info=info, precision="f32", streams=2)
    assert streamed.describe()["streams"] == 2
    for g, e in zip(streamed.run_many(floats), expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-4)
    for session in (plain, u8, streamed):
        session.close()


@in_own_process
def test_streams_return_outputs_in_input_order(tmp_path: Path) -> None:
    """The tiny detector's outputs hardly depend on its input, so order is checked on a model that doubles it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["images", "two"], ["out"])], "double", [x], [y], [two])
    path = tmp_path / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = open_session(path, "openvino", threads=2, batch=1, precision="f32", streams=2)
    inputs = [np.full((1, 3, 8, 8), i, np.float32) for i in range(7)]  # more requests than streams
    assert [float(out.max()) for out in session.run_many(inputs)] == [2.0 * i for i in range(7)]
    session.close()


@pytest.mark.slow
def test_silu_fusion_keeps_the_outputs_and_an_ir_runs_on_openvino_only(tiny_onnx: Path, tmp_path: Path) -> None:
    import openvino as ov

    from dronevision.export.openvino import fuse_silu, write_ir
    from dronevision.infer import read_metadata_props

    model = ov.Core().read_model(str(tiny_onnx))
    sigmoids = [op.get_type_name() for op in model.get_ordered_ops()].count("Sigmoid")
    fused = fuse_silu(model)
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert fused == types.count("Swish") > 0 and types.count("Sigmoid") == sigmoids - fused == 1  # the class scores
    xml = write_ir(model, tmp_path / "tiny_openvino_model", read_metadata_props(tiny_onnx))
    info = read_model_info(xml.parent)  # the folder, as ultralytics names it
    assert (info.path, info.names, info.imgsz, info.dynamic_batch, info.quantized) == (
        xml,
        {0: "vehicle"},
        (64, 64),
        True,
        False,
    )
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    onnx_out = open_session(tiny_onnx, "openvino", threads=1, batch=1, precision="f32").run(x)
    ir_out = open_session(xml, "openvino", threads=1, batch=1, precision="f32").run(x)
    np.testing.assert_allclose(ir_out, onnx_out, atol=1e-3)
    with pytest.raises(RuntimeUnavailable, match="is an OpenVINO IR: it runs on openvino only, not ort-cpu"):
        open_session(xml, "ort-cpu", threads=1, batch=1)


@pytest.mark.slow
@pytest.mark.skipif(NO_CUDA is None, reason="CUDA is usable here: onnxruntime does not fall back")
def test_a_cuda_request_that_falls_back_to_the_cpu_is_refused(tiny_onnx: Path) -> None:
    with pytest.raises(RuntimeUnavailable) as refused:
        open_session(tiny_onnx, "ort-cuda", threads=1, batch=1)
    assert str(refused.value) == NO_CUDA
    # Past the availability check, onnxruntime quietly runs on the CPU; the session must say no.
    with pytest.raises(RuntimeUnavailable, match="fell back to CPUExecutionProvider"):
        OrtSession(read_model_info(tiny_onnx), "ort-cuda", threads=1, batch=1)


@pytest.mark.parametrize("name", ["tensorrt", "cuda", ""])
def test_unknown_runtime_is_refused(name: str) -> None:
    with pytest.raises(DroneVisionError, match="unknown runtime"):
        available(name)


# --- the benchmark ----------------------------------------------------------------------------------------------

QUICK = ["min_time_s=0.2", "warmup=2", "frame_wh=[160,120]"]


@pytest.fixture
def compose_bench(tmp_path: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        return compose_config("benchmark", f"out_dir={tmp_path / 'bench'}", *QUICK, *overrides)

    return _compose


def _training_run(uri: str) -> str:
    from dronevision.mlflow_run import MlflowRun

    train = MlflowRun(uri, "dronevision", "train").start()
    train.end()
    assert train.run_id
    return train.run_id


@pytest.mark.slow
def test_benchmark_times_cpu_runtimes_skips_cuda_and_logs_to_the_models_run(
    tiny_onnx: Path, compose_bench: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    run_id = _training_run(uri)
    cfg = compose_bench(
        f"onnx={tiny_onnx}",
        "runtime=[ort-cpu,openvino,ort-cuda]",
        "batch=[1,2]",
        f"mlflow.run_id={run_id}",
        f"mlflow.tracking_uri={uri}",
    )
    summary = run(cfg)
    out = Path(summary["out_dir"])
    result = json.loads((out / "benchmark.json").read_text())
    assert result["input"]["imgsz"] == [64, 64] and result["threads"] >= 1
    for name, provider in (("ort-cpu", "CPUExecutionProvider"), ("openvino", "CPU")):
        entry = result["runtimes"][name]
        assert entry["provider"] == provider and "skipped" not in entry
        for batch in ("1", "2"):
            res = entry["batches"][batch]
            assert res["provider"] == provider and res["batch"] == int(batch) and res["threads"] == result["threads"]
            assert res["input_shape"] == [int(batch), 3, 64, 64]
            for mode in ("model_only", "e2e"):
                s = res[mode]
                assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["iterations"] >= 5
                assert s["fps"] == pytest.approx(int(batch) * 1000 / s["p50_ms"], rel=1e-3)
            assert res["capacity"]["machines_needed"] >= 1
            assert res["capacity"]["fps"] == res["e2e"]["fps"]
    assert result["runtimes"]["ort-cpu"]["batches"]["1"]["max_abs_diff_vs_ort_cpu"] == 0.0
    cuda = result["runtimes"]["ort-cuda"]
    if NO_CUDA is not None:
        assert cuda == {"skipped": NO_CUDA} and NO_CUDA  # a reason, never numbers
        assert summary["runtimes"]["ort-cuda"] == {"skipped": NO_CUDA}
    else:
        assert cuda["provider"] == "CUDAExecutionProvider"

    assert set(summary) >= {"runtimes", "best", "capacity", "seconds", "target", "run_id", "mlflow"}
    assert summary["best"]["runtime"] in ("ort-cpu", "openvino", "ort-cuda")
    assert summary["capacity"]["runtime"] == summary["best"]["runtime"]
    assert summary["target"]["objects_per_frame"] is None  # random frames carry no labels
    assert json.loads((out / "summary.json").read_text())["best"] == summary["best"]
    report = (out / "report.md").read_text()
    for heading in ("## Model only", "## End to end", "## Capacity against the target", "## Target and assumptions"):
        assert heading in report
    assert "ort-cuda: skipped:" in report or NO_CUDA is None
    assert (out / "fps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert summary["mlflow"]["ok"], summary["mlflow"]
    client = MlflowClient(uri)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"  # the training's run is added to, not reopened or closed
    assert got.data.metrics["benchmark/ort-cpu/b1/e2e_fps"] == pytest.approx(
        result["runtimes"]["ort-cpu"]["batches"]["1"]["e2e"]["fps"]
    )
    assert not any(k.startswith("benchmark/ort-cuda") for k in got.data.metrics) or NO_CUDA is None
    files = {Path(f.path).name for f in client.list_artifacts(run_id, f"benchmark/{out.name}")}
    assert files == {"benchmark.json", "report.md", "fps.png", "summary.json"}
    assert len(client.search_runs([got.info.experiment_id])) == 1  # no second run


@in_own_process
@pytest.mark.slow
def test_benchmark_with_openvino_streams_and_uint8_input(
    tiny_onnx: Path, compose_bench: Callable[..., DictConfig]
) -> None:
    cfg = compose_bench(
        f"onnx={tiny_onnx}",
        "runtime=[ort-cpu,openvino]",
        "batch=[2]",
        "openvino.streams=2",
        "openvino.u8_input=true",
        "openvino.precision=f32",
        "mlflow.tracking_uri=null",
    )
    summary = run(cfg)
    result = json.loads((Path(summary["out_dir"]) / "benchmark.json").read_text())
    ov_entry = result["runtimes"]["openvino"]["batches"]["2"]
    ort_entry = result["runtimes"]["ort-cpu"]["batches"]["2"]
    assert (ov_entry["streams"], ov_entry["requests_per_call"], ov_entry["input_shape"]) == (2, 4, [2, 64, 64, 3])
    assert (ort_entry["streams"], ort_entry["requests_per_call"], ort_entry["input_shape"]) == (1, 1, [2, 3, 64, 64])
    for mode in ("model_only", "e2e"):  # 2 images x 4 requests per timed call
        assert ov_entry[mode]["fps"] == pytest.approx(8 * 1000 / ov_entry[mode]["p50_ms"], rel=1e-3)
    assert ov_entry["max_abs_diff_vs_ort_cpu"] < 1e-2  # the uint8 path computes what the float one does


@pytest.mark.slow
def test_rect_gives_wide_frames_a_wide_input_on_a_dynamic_model(
    tiny_onnx: Path, compose_bench: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from dronevision.benchmark.measure import input_hw

    shapes = {}
    for rect in ("true", "false"):
        cfg = compose_bench(
            f"onnx={tiny_onnx}", "runtime=[ort-cpu]", "batch=[1]", "frame_wh=[256,96]", f"rect={rect}",
            f"out_dir={tmp_path / rect}", "mlflow.tracking_uri=null",
        )  # fmt: skip
        result = json.loads((Path(run(cfg)["out_dir"]) / "benchmark.json").read_text())
        shapes[rect] = result["runtimes"]["ort-cpu"]["batches"]["1"]["input_shape"]
    # 256x96 at 64: 64x24, padded to the stride 32 -> 32x64 (ultralytics' rectangular letterbox)
    assert shapes == {"true": [1, 3, 32, 64], "false": [1, 3, 64, 64]}
    static = replace(read_model_info(tiny_onnx), input_shape=(1, 3, 64, 64))
    wide = cv2.imencode(".jpg", np.zeros((96, 256, 3), np.uint8))[1].tobytes()
    assert input_hw(static, wide, rect=True) == (64, 64)  # a fixed-size model keeps its size


@pytest.mark.slow
def test_cli_finds_the_training_run_and_measures_objects_per_frame(tiny_onnx: Path, tmp_path: Path) -> None:
    """A model inside a training's out_dir: its summary.json names the run; images= a dataset gives the objects."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    run_id = _training_run(uri)
    train_dir = tmp_path / "train-run"
    model = train_dir / "train" / "weights" / "best.onnx"
    model.parent.mkdir(parents=True)
    shutil.copy(tiny_onnx, model)
    (train_dir / "summary.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": uri, "onnx": str(model)}))
    data = make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=3)
    labels = sorted((tmp_path / "ds" / "val" / "labels").glob("*.txt"))
    mean_boxes = np.mean([len(p.read_text().split("\n")) - 1 for p in labels])
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "dronevision.benchmark", f"model={model}", f"out_dir={out}", f"images={data}"]
    cmd += ["runtime=[ort-cpu]", "batch=[1]", "min_time_s=0", "warmup=1", "min_iters=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dronevision benchmark: done" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == run_id and summary["mlflow"]["ok"], summary["mlflow"]
    assert summary["target"]["objects_per_frame"] == pytest.approx(mean_boxes, abs=1e-4)
    assert summary["capacity"]["detections_per_week"] is not None
    assert summary["runtimes"]["ort-cpu"]["batches"]["1"]["e2e_fps"] > 0


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_bad_input_is_one_line_exit_2_and_no_out_dir(tiny_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "garbage.onnx").write_text("not a protobuf")
    (tmp_path / "model.txt").write_text("x")
    (tmp_path / "empty_openvino_model").mkdir()
    (tmp_path / "not_an_ir").mkdir()
    (tmp_path / "not_an_ir" / "model.xml").write_text("<net>not an IR")  # not even well-formed XML
    cases = {
        "empty_dir": ([f"model={tmp_path / 'empty_openvino_model'}"], "is a folder without model.xml"),
        "broken_ir": ([f"model={tmp_path / 'not_an_ir'}"], "not_an_ir/model.xml is not an OpenVINO IR (not XML: "),
        "missing": ([f"model={tmp_path / 'nope.onnx'}"], "does not exist"),
        "not_onnx": ([f"model={tmp_path / 'model.txt'}"], "is not an .onnx file"),
        "garbage": ([f"model={tmp_path / 'garbage.onnx'}"], "cannot be read as ONNX"),
        "runtime": ([f"model={tiny_onnx}", "runtime=[ort-cpu,tensorrt]"], "unknown runtime 'tensorrt'"),
        "no_model": ([], "model=<an .onnx file or an OpenVINO IR folder> is required"),
    }
    if NO_CUDA is not None:
        cases["none_available"] = ([f"model={tiny_onnx}", "runtime=[ort-cuda]"], "no runtime available: ort-cuda: ")
    procs = {}
    for name, (args, _) in cases.items():  # in parallel: each is mostly interpreter start-up
        cmd = [sys.executable, "-m", "dronevision.benchmark", f"out_dir={tmp_path / name}", *args]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, stderr[-2000:])
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and cases[name][1] in lines[0], (name, stderr)
        assert not (tmp_path / name).exists(), name


# --- GPU ----------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.slow
def test_benchmark_times_cuda_and_tensorrt_for_real(tiny_onnx: Path, compose_bench: Callable[..., DictConfig]) -> None:
    if NO_CUDA is not None:
        pytest.skip(f"ort-cuda is not usable here: {NO_CUDA}")
    summary = run(compose_bench(f"onnx={tiny_onnx}", "runtime=[ort-cuda,ort-trt]", "batch=[1,2]"))
    result = json.loads((Path(summary["out_dir"]) / "benchmark.json").read_text())
    cuda = result["runtimes"]["ort-cuda"]
    assert cuda["provider"] == "CUDAExecutionProvider"
    assert all(r["e2e"]["fps"] > 0 for r in cuda["batches"].values())
    trt = result["runtimes"]["ort-trt"]
    if "skipped" in trt:  # onnxruntime-gpu without the TensorRT libraries: a reason, never numbers
        assert trt["skipped"] and "batches" not in trt
    else:
        assert trt["provider"] == "TensorrtExecutionProvider" and trt["precision"] == "f16"


def test_capacity_on_the_real_job_comes_from_a_track_summary(
    tiny_onnx: Path, compose_bench: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Footage-hours per machine-hour and sightings per footage-hour come from the track run; the weekly footage and
    machine hours stay assumed, and the report says which is which."""
    track = tmp_path / "track"
    track.mkdir()
    measured = {"footage_s": 7200.0, "tracking_seconds": 1800.0, "sightings": 50, "frames_processed": 7200}
    (track / "summary.json").write_text(json.dumps({**measured, "every_s": 1.0, "runtime": "openvino"}))
    overrides = (f"onnx={tiny_onnx}", "runtime=[ort-cpu]", "batch=[1]", "mlflow.tracking_uri=null")
    summary = run(compose_bench(*overrides, f"track_summary={track}", "target.footage_hours_per_week=1000"))
    tracked = summary["target"]["track"]
    assert tracked["measured"]["footage_hours_per_machine_hour"] == 4.0
    assert tracked["measured"]["sightings_per_footage_hour"] == 25.0
    assert tracked["footage_hours_per_week_per_machine"] == 4.0 * 168 and tracked["machines_needed"] == 2
    assert tracked["sightings_per_week"] == 25.0 * 1000
    report = (Path(summary["out_dir"]) / "report.md").read_text()
    assert "Capacity measured on the real job" in report and "| 4.00 | measured |" in report
    assert "| 1000 | assumed (target) |" in report
    (track / "summary.json").write_text(json.dumps({"videos": 1}))
    with pytest.raises(DroneVisionError, match="not a track summary.json"):
        run(compose_bench(*overrides, f"track_summary={track}"))
