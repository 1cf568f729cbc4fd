"""``python -m dronevision.mlflow_run sync out_dir=<dir>``: send what a stage could not send to MLflow.

The ops a run kept in ``<out_dir>/mlflow_pending/`` (see :mod:`dronevision.mlflow_run.spool`) are replayed in
order into the same run (or, when even the run could not be created, into a new one, whose id then replaces the
missing one in the folder's ``mlflow_run.json`` and ``summary.json``). How far it got is recorded after every op,
so an interrupted sync goes on where it stopped and a finished one sends nothing twice.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dronevision.errors import DroneVisionError, first_line
from dronevision.mlflow_run.ref import RUN_FILE, SUMMARY_FILE
from dronevision.mlflow_run.spool import DEFAULT_RETRIES, Spool, apply, http_limits

log = logging.getLogger(__name__)

USAGE = "usage: python -m dronevision.mlflow_run sync out_dir=<run folder> [tracking_uri=<uri>] [timeout_s=<s>]"


def sync(
    out_dir: Path, *, tracking_uri: str | None = None, timeout_s: float = 30.0, retries: int = DEFAULT_RETRIES
) -> dict[str, Any]:
    """Replay the ops kept in ``out_dir`` into their MLflow run.

    Args:
        out_dir: a stage's output folder.
        tracking_uri: send to this store instead of the one the run was logged to (the server moved).
        timeout_s: per HTTP request (longer than a stage's: uploads of weights happen here).
        retries: per HTTP request.

    Returns:
        ``{"out_dir", "tracking_uri", "run_id", "sent", "already_sent", "total"}``.

    Raises:
        DroneVisionError: no such folder, or the store refused an op (what was sent stays sent; run it again).
    """
    from mlflow.tracking import MlflowClient

    out_dir = Path(out_dir).expanduser().resolve()
    if not out_dir.is_dir():
        raise DroneVisionError(f"out_dir {out_dir} is not a folder")
    spool = Spool(out_dir)
    if not spool.ops_file.is_file():
        return {"out_dir": str(out_dir), "tracking_uri": None, "run_id": None, "sent": 0, "already_sent": 0, "total": 0}
    ops, state = spool.read(), spool.state()
    done = int(state["done"])
    uri = tracking_uri or next((op["tracking_uri"] for op in ops if op["op"] == "run"), None)
    if uri is None:
        raise DroneVisionError(f"{spool.ops_file}: names no tracking server (give tracking_uri=)")
    client, results = MlflowClient(tracking_uri=uri), {}
    for number, op in enumerate(ops[done:], done + 1):
        try:
            with http_limits(timeout_s, retries):
                if op["op"] == "run":  # a later session's header names its own run
                    state["run_id"] = op["run_id"] or state.get("run_id")
                elif op["op"] == "register" and op.get("model_id") is None and state.get("model_id") is None:
                    log.warning("%s: op %d registers a model that was never logged; left out", spool.ops_file, number)
                else:
                    if op["op"] == "register" and op.get("model_id") is None:
                        op = {**op, "model_id": state.get("model_id")}
                    result = apply(client, uri, state.get("run_id"), op, base=out_dir)
                    if op["op"] == "start":
                        state["run_id"] = result
                    elif op["op"] == "log_detector":
                        state["model_id"] = result
                    if result is not None:
                        results[op["op"]] = result
        except Exception as e:
            raise DroneVisionError(
                f"sync of {out_dir} stopped at op {number}/{len(ops)} ({op['op']}) sending to {uri}: "
                f"{type(e).__name__}: {first_line(e)}; {number - 1 - done} sent now, run it again to go on"
            ) from None
        state["done"] = number
        spool.save_state(state)
    if len(ops) > done:
        _record(out_dir, uri, state, results)
    return {
        "out_dir": str(out_dir),
        "tracking_uri": uri,
        "run_id": state.get("run_id"),
        "sent": len(ops) - done,
        "already_sent": done,
        "total": len(ops),
    }


def _record(out_dir: Path, uri: str, state: dict[str, Any], results: dict[str, Any]) -> None:
    """Say in the folder's own records that the run is complete in MLflow now (its id, when the sync created it)."""
    from dronevision.cli import write_summary

    run_id = state.get("run_id")
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        record = json.loads(run_file.read_text())
        if not record.get("run_id"):
            record.update(run_id=run_id, tracking_uri=uri)
            tmp = run_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(run_file)
    summary_file = out_dir / SUMMARY_FILE
    if not summary_file.is_file():
        return
    summary = json.loads(summary_file.read_text())
    block = summary.get("mlflow")
    if isinstance(block, dict):
        block.update(run_id=block.get("run_id") or run_id, ok=True, synced=True, pending=None, sync=None)
    if "run_id" in summary and not summary["run_id"]:
        summary["run_id"] = run_id
    if state.get("model_id") and "logged_model" in summary:  # logged by this sync or by an earlier, cut one
        model_id = state["model_id"]
        logged = summary["logged_model"] or {}
        summary["logged_model"] = {**logged, "model_id": model_id, "uri": f"models:/{model_id}"}
    if "register" in results and "registered_model" in summary:
        summary["registered_model"] = results["register"]
    write_summary(out_dir, summary)


def main(argv: Sequence[str] | None = None) -> None:
    """``sync out_dir=<dir> [tracking_uri=<uri>] [timeout_s=<s>] [retries=<n>]``: one line out, exit 2 on error."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args or args[0] != "sync":
            raise DroneVisionError(USAGE)
        options = dict(arg.partition("=")[::2] for arg in args[1:])
        unknown = set(options) - {"out_dir", "tracking_uri", "timeout_s", "retries"}
        if unknown or "out_dir" not in options:
            raise DroneVisionError(f"unknown option {', '.join(sorted(unknown))}; {USAGE}" if unknown else USAGE)
        try:
            timeout_s = float(options.get("timeout_s", 30.0))
            retries = int(options.get("retries", DEFAULT_RETRIES))
        except ValueError as e:
            raise DroneVisionError(f"timeout_s must be a number of seconds, retries a count: {e}") from None
        done = sync(
            Path(options["out_dir"]), tracking_uri=options.get("tracking_uri"), timeout_s=timeout_s, retries=retries
        )
    except DroneVisionError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    if not done["total"]:
        print(f"dronevision mlflow sync: nothing pending in {done['out_dir']}")
    else:
        print(
            f"dronevision mlflow sync: {done['sent']} ops sent to run {done['run_id']} at {done['tracking_uri']} "
            f"({done['already_sent']} of {done['total']} were sent before)"
        )
