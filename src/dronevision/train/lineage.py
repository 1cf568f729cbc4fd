"""Re-run a recorded training: ``python -m dronevision.train --from-run <run_id> [overrides]``.

The recorded run's command-line overrides (its ``hydra/overrides.yaml`` artifact) are replayed under the new
ones, so the same config groups and values are composed again; the run's recorded ``config.yaml`` is then
compared with the new config and every difference is logged, so a config file edited since cannot go unnoticed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

# Recorded overrides that describe where and how the old run ran, not what it trained.
_NOT_REPLAYED = ("out_dir", "from_run", "train.resume", "mlflow.run_name", "hydra.")
# Keys that differ between any two runs by design.
_IGNORED_IN_DIFF = ("out_dir", "from_run", "train.resume", "mlflow.run_name", "paths.")


def override_key(override: str) -> str:
    """The config key an override sets.

    Examples:
        >>> override_key("++train.lr0=0.01"), override_key("model=yolov8s"), override_key("~debug")
        ('train.lr0', 'model', 'debug')
    """
    return override.lstrip("+~").partition("=")[0]


def split_from_run(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Take ``--from-run ID``, ``--from-run=ID`` or ``from_run=ID`` out of a command line.

    Examples:
        >>> split_from_run(["--from-run", "abc", "train.epochs=2"])
        ('abc', ['train.epochs=2'])
        >>> split_from_run(["from_run=abc"])
        ('abc', [])
        >>> split_from_run(["train.epochs=2"])
        (None, ['train.epochs=2'])
    """
    run_id, rest, args = None, [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--from-run":
            if not args:
                raise DroneVisionError("--from-run needs a run id: --from-run <run_id>")
            run_id = args.pop(0)
        elif arg.startswith("--from-run=") or arg.startswith("from_run="):
            run_id = arg.partition("=")[2]
        else:
            rest.append(arg)
    if run_id is not None and not run_id.strip():
        raise DroneVisionError("--from-run needs a run id: --from-run <run_id>")
    return run_id, rest


def replay(recorded: Sequence[str], current: Sequence[str]) -> list[str]:
    """The recorded overrides a re-run keeps, followed by the current ones (which win on the same key).

    Examples:
        >>> replay(["model=yolov8s", "++train.lr0=0.01", "out_dir=/old"], ["train.lr0=0.02"])
        ['model=yolov8s', 'train.lr0=0.02']
    """
    current_keys = {override_key(o) for o in current if not o.startswith("-")}
    kept = [
        o for o in recorded if not override_key(o).startswith(_NOT_REPLAYED) and override_key(o) not in current_keys
    ]
    return kept + list(current)


def config_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Flattened keys whose values differ between a recorded and a new resolved config.

    Examples:
        >>> config_differences({"train": {"lr0": 0.01}, "out_dir": "a"}, {"train": {"lr0": 0.02}, "out_dir": "b"})
        ['train.lr0: 0.01 -> 0.02']
    """
    from dronevision.mlflow_run import flatten

    old, new = flatten(recorded), flatten(current)
    keys = sorted(k for k in old.keys() | new.keys() if not k.startswith(_IGNORED_IN_DIFF))
    return [f"{k}: {old.get(k, '<absent>')} -> {new.get(k, '<absent>')}" for k in keys if old.get(k) != new.get(k)]


def _tracking_uri(overrides: Sequence[str]) -> str:
    """The MLflow store the command line points at (composing the config as the command will)."""
    from hydra import compose, initialize_config_dir

    from dronevision.cli import CONFIG_DIR

    plain = [o for o in overrides if not o.startswith("-") and not override_key(o).startswith("hydra.")]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return str(compose("train", overrides=plain).mlflow.tracking_uri)


def recorded_overrides(tracking_uri: str, run_id: str) -> list[str]:
    """The command-line overrides a recorded training was started with."""
    from dronevision.mlflow_run import fetch_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = fetch_artifact(tracking_uri, run_id, "hydra/overrides.yaml", Path(tmp))
        overrides = yaml.safe_load(path.read_text()) or []
    if not isinstance(overrides, list):
        raise DroneVisionError(f"run {run_id}: hydra/overrides.yaml is not a list of overrides")
    return [str(o) for o in overrides]


def recorded_config(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The resolved config a recorded training ran with (its ``config.yaml`` artifact)."""
    from dronevision.mlflow_run import fetch_artifact

    with tempfile.TemporaryDirectory() as tmp:
        return yaml.safe_load(fetch_artifact(tracking_uri, run_id, "config.yaml", Path(tmp)).read_text())


def expand_from_run(argv: list[str]) -> list[str]:
    """Rewrite a command line holding ``--from-run ID`` into the recorded run's overrides plus the new ones."""
    run_id, rest = split_from_run(argv)
    if run_id is None:
        return argv
    recorded = recorded_overrides(_tracking_uri(rest), run_id)
    replayed = replay(recorded, rest)
    log.info("re-running MLflow run %s with overrides: %s", run_id, " ".join(replayed))
    return [*replayed, f"++from_run={run_id}"]
