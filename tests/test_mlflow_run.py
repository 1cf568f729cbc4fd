"""MlflowRun against a real SQLite store, and against a server that is not there."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dronevision.mlflow_run import MlflowRun, git_state

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
