"""Faults around tracking (issue 15, item 1): a real `mlflow server` on 127.0.0.1 that dies mid-training.

Nothing tracked is lost: what the server did not take is kept in the run's out_dir, and
``python -m dronevision.mlflow_run sync out_dir=<dir>`` replays it into the same run, once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from dronevision.mlflow_run import PENDING_DIR, MlflowRun, Spool, sync
from dronevision.train import run
from tests.conftest import start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.faults


def _kill_after_first_epoch(results_csv: Path, server: subprocess.Popen, stop: threading.Event) -> None:
    """SIGKILL the server (and its workers) as soon as ultralytics has written the first epoch's row."""
    while not stop.is_set():
        if results_csv.is_file() and len(results_csv.read_text().splitlines()) >= 2:
            stop_mlflow_server(server, signal.SIGKILL)
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_server_killed_mid_training_loses_nothing_once_synced(
    compose_train: Callable[..., DictConfig], tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "server"
    root.mkdir()
    server, uri = start_mlflow_server(root)
    stop = threading.Event()
    out = tmp_path / "out"
    killer = threading.Thread(target=_kill_after_first_epoch, args=(out / "train" / "results.csv", server, stop))
    killer.start()
    try:
        with caplog.at_level(logging.WARNING):
            summary = run(
                compose_train(
                    f"dataset.path={tiny_dataset}",
                    f"mlflow.tracking_uri={uri}",
                    "mlflow.experiment=dies",
                    "train.epochs=3",
                    "train.fraction=1.0",
                )
            )
    finally:
        stop.set()
        killer.join()
        stop_mlflow_server(server, signal.SIGKILL)
    run_id, epochs = summary["run_id"], 3

    # the training finished; tracking says once that it stopped, and where the rest is
    assert summary["metrics"]["map50"] is not None and (out / "train" / "weights" / "best.pt").is_file()
    assert not summary["mlflow"]["ok"] and summary["mlflow"]["pending"] == str(out / PENDING_DIR)
    assert summary["mlflow"]["sync"] == f"python -m dronevision.mlflow_run sync out_dir={out}"
    tracking_warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "mlflow" in r.name.lower()]
    assert len(tracking_warnings) == 1, [r.getMessage() for r in tracking_warnings]
    assert "sync out_dir=" in tracking_warnings[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("urllib3")]
    kept = [op["op"] for op in Spool(out).read()]
    assert kept[0] == "run" and kept[-1] == "end" and {"log_artifact", "log_detector", "register"} <= set(kept)

    # the same server back (same store, same port): the run is still RUNNING, without the later epochs
    server, uri2 = start_mlflow_server(root, urlparse(uri).port)
    try:
        assert uri2 == uri
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "RUNNING"
        assert len(client.get_metric_history(run_id, "metrics/mAP50B")) < epochs

        done = subprocess.run(
            [sys.executable, "-m", "dronevision.mlflow_run", "sync", f"out_dir={out}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"sent to run {run_id}" in done.stdout

        got = client.get_run(run_id)
        assert got.info.status == "FINISHED"
        assert got.data.params["train.epochs"] == "3"
        with (out / "train" / "results.csv").open() as f:
            rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
        history = sorted(client.get_metric_history(run_id, "metrics/mAP50B"), key=lambda m: m.step)
        # per epoch (steps 1..3, as in results.csv), then the best weights' validation at step epochs + 1
        assert [m.step for m in history] == [int(r["epoch"]) for r in rows] + [epochs + 1] == list(range(1, 5))
        assert [round(m.value, 4) for m in history[:epochs]] == [round(float(r["metrics/mAP50(B)"]), 4) for r in rows]
        assert "final/map50" in got.data.metrics
        assert {"weights/best.pt", "weights/best.onnx"} <= {f.path for f in client.list_artifacts(run_id, "weights")}
        assert "summary.json" in {f.path for f in client.list_artifacts(run_id)}
        versions = client.search_model_versions("name='dronevision-detector'")
        assert [v.run_id for v in versions] == [run_id]
        synced = json.loads((out / "summary.json").read_text())
        assert synced["mlflow"]["ok"] and synced["mlflow"]["synced"] and synced["mlflow"]["pending"] is None
        assert synced["registered_model"]["version"] == int(versions[0].version)

        # idempotent: a second sync sends nothing, the history stays as it is
        again = sync(out)
        assert again["sent"] == 0 and again["already_sent"] == len(kept)
        assert len(client.get_metric_history(run_id, "metrics/mAP50B")) == epochs + 1
        assert len(client.search_model_versions("name='dronevision-detector'")) == 1
    finally:
        stop_mlflow_server(server)


def test_a_server_that_never_answers_keeps_the_whole_run_and_sync_creates_it(tmp_path: Path) -> None:
    """Down from the start: the run is created by the sync, and its id written back into the folder's records."""
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    out = tmp_path / "stage"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    tracker = MlflowRun(dead, "later", out_dir=out, timeout_s=1, retries=0).start(tags={"k": "v"})
    tracker.log_params({"a": 1})
    for step in (1, 2, 3):
        tracker.log_metrics({"m": step / 10}, step=step)
    tracker.log_artifact(out / "metrics.json", "evaluate")
    tracker.end("FINISHED")
    assert tracker.run_id is None and tracker.pending == out / PENDING_DIR
    (out / "summary.json").write_text(json.dumps({"run_id": None, "mlflow": tracker.summary()}))

    uri = f"sqlite:///{tmp_path}/later.db"  # where the runs go later (the killed test replays into a server)
    done = sync(out, tracking_uri=uri)
    client = MlflowClient(uri)
    got = client.get_run(done["run_id"])
    assert got.info.status == "FINISHED" and got.data.tags["k"] == "v" and got.data.params["a"] == "1"
    assert client.get_experiment(got.info.experiment_id).name == "later"
    assert [m.value for m in sorted(client.get_metric_history(got.info.run_id, "m"), key=lambda m: m.step)] == [
        0.1,
        0.2,
        0.3,
    ]
    assert [f.path for f in client.list_artifacts(got.info.run_id, "evaluate")] == ["evaluate/metrics.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == done["run_id"] == summary["mlflow"]["run_id"]
    assert sync(out, tracking_uri=uri)["sent"] == 0
    assert len(client.search_runs([got.info.experiment_id])) == 1


def test_sync_of_a_torn_or_unreachable_spool_says_so_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    tracker = MlflowRun("http://127.0.0.1:9", "x", out_dir=out, timeout_s=1, retries=0).start()
    tracker.log_metrics({"m": 1.0}, step=1)
    with Spool(out).ops_file.open("a") as f:
        f.write('{"op": "log_ba')  # the process died writing this record
    done = subprocess.run(
        [sys.executable, "-m", "dronevision.mlflow_run", "sync", f"out_dir={out}"], capture_output=True, text=True
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: sync of {out} stopped at op 2/3 (start) sending to http://127.0.0.1:9")
    assert "torn last record" in done.stderr
    assert Spool(out).state()["done"] == 1  # the header only: nothing was sent

    bad = subprocess.run(
        [sys.executable, "-m", "dronevision.mlflow_run", "sync", "outdir=x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown option outdir")


def test_every_call_is_bounded_by_the_configured_timeout(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: each stage call gives up after timeout_s, once."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        tracker = MlflowRun(uri, "hung", out_dir=tmp_path, timeout_s=1, retries=0).start()
        assert tracker.error is not None and tracker.error.endswith(
            "ReadTimeoutError (read timeout=1)"
        )  # not MLflow's default of 120 s
        accepted = 0
        hung.setblocking(False)
        for step in range(20):
            tracker.log_metrics({"m": float(step)}, step=step)
            with contextlib.suppress(BlockingIOError):
                while hung.accept():
                    accepted += 1
    assert accepted == 1  # the one try of start (retries=0); after it failed no call went to the server again
    assert len(Spool(tmp_path)) == 1 + 1 + 20  # the header, start, 20 metric batches


def test_a_later_run_in_a_folder_with_unsent_ops_is_kept_after_them(tmp_path: Path) -> None:
    """A training killed while its server was down, resumed once the store answers: the new calls must not overtake
    the kept ones (a sync would otherwise end the run KILLED after it FINISHED)."""
    out, store = tmp_path / "stage", f"sqlite:///{tmp_path}/mlflow.db"
    first = MlflowRun("http://127.0.0.1:9", "exp", out_dir=out, timeout_s=1, retries=0).start()
    first.log_metrics({"m": 1.0}, step=1)
    first.end("KILLED")
    second = MlflowRun(store, "exp", out_dir=out).start()  # the store answers, but the folder is behind
    assert not second.active and second.pending == out / PENDING_DIR and "not sent yet" in str(second.error)
    second.log_metrics({"m": 2.0}, step=2)
    second.end("FINISHED")
    assert [op["op"] for op in Spool(out).read()] == ["run", "start", "log_batch", "end"] * 2

    sync(out, tracking_uri=store)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id], order_by=["attributes.start_time"])
    assert [(r.info.status, r.data.metrics["m"]) for r in runs] == [("KILLED", 1.0), ("FINISHED", 2.0)]
