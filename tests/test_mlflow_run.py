"""MlflowRun against a real SQLite store and a server that is not there; the summary block; finding a model's
training run."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dronevision.mlflow_run import MlflowRun, RunRef, find_training_run, git_state

from .conftest import REPO


def test_run_logs_params_metrics_tags_and_artifacts_to_sqlite(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    run = MlflowRun(uri, "exp", "r1").start(tags={"k": "v"})
    assert run.active, run.error
    run.log_params({f"p{i}": i for i in range(150)})  # more than one batch of 100
    run.log_metrics({"metrics/mAP50(B)": 0.5}, step=1)
    run.log_metrics({"metrics/mAP50(B)": 0.7}, step=2)
    (tmp_path / "a.txt").write_text("hello")
    run.log_artifact(tmp_path / "a.txt", "files")
    run.end()

    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert len(got.data.params) == 150 and got.data.tags["k"] == "v"
    history = client.get_metric_history(run.run_id, "metrics/mAP50B")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7)]
    assert [f.path for f in client.list_artifacts(run.run_id, "files")] == ["files/a.txt"]
    # artifacts live beside the database, not in the working folder
    assert (tmp_path / "store" / "artifacts").is_dir()


def test_unreachable_server_warns_once_and_disables(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="dronevision.mlflow_run"):
        run = MlflowRun(f"http://127.0.0.1:{port}", "exp").start()
        run.log_params({"a": 1})
        run.log_metrics({"m": 1.0})
        run.end()
    assert not run.active and run.run_id is None
    assert run.error and run.error.startswith("start: ")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()


def test_git_state_reads_the_checkout(tmp_path: Path) -> None:
    state = git_state(REPO)
    if state:  # a source checkout
        assert len(state["git_commit"]) == 40 and state["git_dirty"] in {"true", "false"}
    assert git_state(tmp_path) == {}


# --- the block every stage's summary.json holds ----------------------------------------------------------------


def test_summary_block_names_the_run_and_keeps_a_stages_own_keys(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = MlflowRun(uri, "exp").start()
    block = run.summary(attached_to_model_run=False)
    assert block == {
        "tracking_uri": uri,
        "run_id": run.run_id,
        "experiment": "exp",
        "ok": True,
        "error": None,
        "pending": None,
        "sync": None,
        "attached_to_model_run": False,
    }
    assert RunRef.from_summary({"mlflow": run.summary()}) == run.ref == RunRef(uri, str(run.run_id))
    attached = MlflowRun.attach(uri, str(run.run_id))
    assert attached.summary()["experiment"] == "exp" and attached.ref == run.ref
    assert MlflowRun.untracked("no run", found_in=None) == {
        "tracking_uri": None,
        "run_id": None,
        "experiment": None,
        "ok": False,
        "error": "no run",
        "pending": None,
        "sync": None,
        "found_in": None,
    }


def test_attaching_to_a_missing_store_keeps_the_run_it_was_meant_for(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/nowhere/mlflow.db"
    run = MlflowRun.attach(uri, "abc")
    block = run.summary()
    assert (block["run_id"], block["tracking_uri"], block["ok"]) == ("abc", uri, False)
    assert block["error"].startswith("attach: FileNotFoundError") and not (tmp_path / "nowhere").exists()


# --- which training run a model came from ----------------------------------------------------------------------

URI_A, URI_B = "sqlite:////store/a.db", "http://127.0.0.1:5000"


def _onnx(metadata: dict[str, str]) -> bytes:
    """A one-node ONNX model whose metadata_props are ``metadata``."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g", [x], [y]))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def _run_meta(uri: str, run_id: str) -> dict[str, str]:
    return {"names": "{0: 'car'}", "imgsz": "[8, 8]", "mlflow_run_id": run_id, "mlflow_tracking_uri": uri}


def _ir_meta(uri: str, run_id: str) -> str:
    import yaml

    return yaml.safe_dump({"names": {0: "car"}, "imgsz": [8, 8], "mlflow_run_id": run_id, "mlflow_tracking_uri": uri})


def _training_record(uri: str, run_id: str) -> dict[str, str]:
    return {"run_id": run_id, "tracking_uri": uri, "experiment": "dronevision"}


def _export_summary(uri: str, run_id: str, *paths: str, **extra: object) -> dict[str, object]:
    block = {"tracking_uri": uri, "run_id": run_id, "ok": True, "error": None, **extra}
    return {"variants": {f"v{i}": {"path": p} for i, p in enumerate(paths)}, "mlflow": block}


# Each case: the files to write (relative path -> bytes, str, or a dict written as JSON; "{root}" in a string or
# JSON value becomes tmp_path), the model path to look from, and the (tracking_uri, run_id) expected (or None).
FIND_CASES = {
    "onnx metadata": ({"m.onnx": _onnx(_run_meta(URI_A, "r1"))}, "m.onnx", (URI_A, "r1")),
    "metadata wins over the folders": (
        {"out/m.onnx": _onnx(_run_meta(URI_A, "r1")), "out/mlflow_run.json": _training_record(URI_B, "r2")},
        "out/m.onnx",
        (URI_A, "r1"),
    ),
    "ir folder metadata.yaml": (
        {"ir_openvino_model/model.xml": "<net/>", "ir_openvino_model/metadata.yaml": _ir_meta(URI_B, "r3")},
        "ir_openvino_model",
        (URI_B, "r3"),
    ),
    "ir model.xml": (
        {"ir_openvino_model/model.xml": "<net/>", "ir_openvino_model/metadata.yaml": _ir_meta(URI_B, "r3")},
        "ir_openvino_model/model.xml",
        (URI_B, "r3"),
    ),
    "metadata without the run": (
        {"out/m.onnx": _onnx({"names": "{0: 'car'}"}), "out/mlflow_run.json": _training_record(URI_B, "r2")},
        "out/m.onnx",
        (URI_B, "r2"),
    ),
    "training mlflow_run.json two folders up": (
        {"out/train/weights/last.pt": b"pt", "out/mlflow_run.json": _training_record(URI_A, "r4")},
        "out/train/weights/last.pt",
        (URI_A, "r4"),
    ),
    "training summary.json": (
        {"train/train/weights/best.pt": b"pt", "train/summary.json": {"run_id": "r5", "tracking_uri": URI_A}},
        "train/train/weights/best.pt",
        (URI_A, "r5"),
    ),
    "the nearest record wins": (
        {
            "a/b/c/w.pt": b"pt",
            "a/b/mlflow_run.json": _training_record(URI_A, "near"),
            "a/mlflow_run.json": _training_record(URI_A, "far"),
        },
        "a/b/c/w.pt",
        (URI_A, "near"),
    ),
    "export summary naming the onnx": (
        {
            "exp/model_fp32.onnx": b"not onnx",
            "exp/summary.json": _export_summary(URI_B, "r6", "{root}/exp/model_fp32.onnx"),
        },
        "exp/model_fp32.onnx",
        (URI_B, "r6"),
    ),
    "export summary naming the ir folder": (
        {
            "exp/ir_openvino_model/model.xml": "<net/>",
            "exp/ir_openvino_model/metadata.yaml": "names: {0: car}\n",
            "exp/summary.json": _export_summary(URI_B, "r7", "{root}/exp/ir_openvino_model"),
        },
        "exp/ir_openvino_model/model.xml",
        (URI_B, "r7"),
    ),
    "export summary naming another model": (
        {"exp/m.onnx": b"x", "exp/summary.json": _export_summary(URI_B, "r8", "{root}/exp/other.onnx")},
        "exp/m.onnx",
        None,
    ),
    "an evaluation's own run": (
        {
            "ev/m.onnx": b"x",
            "ev/summary.json": _export_summary(URI_B, "r9", "{root}/ev/m.onnx", attached_to_model_run=False),
        },
        "ev/m.onnx",
        None,
    ),
    "a killed training's summary (no store)": (
        {"out/train/weights/last.pt": b"pt", "out/summary.json": {"status": "killed", "run_id": "r10"}},
        "out/train/weights/last.pt",
        None,
    ),
    "a record three folders up is found": (
        {"a/b/c/d/w.pt": b"pt", "a/mlflow_run.json": _training_record(URI_A, "r11")},
        "a/b/c/d/w.pt",
        (URI_A, "r11"),
    ),
    "a record four folders up is too far": (
        {"a/b/c/d/e/w.pt": b"pt", "a/mlflow_run.json": _training_record(URI_A, "r12")},
        "a/b/c/d/e/w.pt",
        None,
    ),
    "a broken record": (
        {"out/w.pt": b"pt", "out/mlflow_run.json": "{not json", "out/summary.json": "[]"},
        "out/w.pt",
        None,
    ),
    "nothing": ({"w.pt": b"pt"}, "w.pt", None),
}


def _fill(tree: object, root: Path) -> object:
    if isinstance(tree, dict):
        return {k: _fill(v, root) for k, v in tree.items()}
    return tree.replace("{root}", str(root)) if isinstance(tree, str) else tree


@pytest.mark.parametrize(("files", "model", "expected"), list(FIND_CASES.values()), ids=list(FIND_CASES))
def test_find_training_run(
    tmp_path: Path, files: dict[str, object], model: str, expected: tuple[str, str] | None
) -> None:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(_fill(content, tmp_path)))
    found = find_training_run(tmp_path / model)
    assert (None if found is None else (found.tracking_uri, found.run_id)) == expected
    if found is not None:
        assert found.found_in  # where it was read, for logs and the benchmark's summary
