"""Resuming an interrupted training: its recorded config, a checked ``last.pt``, and the record a kill leaves."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.cli import write_summary
from dronevision.errors import DroneVisionError, first_line
from dronevision.mlflow_run import RUN_FILE, MlflowRun
from dronevision.train.lineage import config_differences

log = logging.getLogger(__name__)


def resume_config(cfg: DictConfig, out_dir: Path) -> tuple[DictConfig, dict[str, Any], Path | None]:
    """The interrupted run's own config, its MLflow run, and its ``last.pt`` (None if it never finished an epoch)."""
    saved, run_file = out_dir / "config.yaml", out_dir / RUN_FILE
    if not saved.is_file() or not run_file.is_file():
        raise DroneVisionError(
            f"train.resume=true: {out_dir} holds no interrupted training ({saved.name} or {RUN_FILE} missing); "
            "pass the out_dir of the run to resume"
        )
    recorded = OmegaConf.load(saved)
    ignored = config_differences(OmegaConf.to_container(recorded), OmegaConf.to_container(cfg, resolve=True))
    if ignored:
        log.warning("resume uses the recorded config of %s; ignoring: %s", out_dir, "; ".join(ignored[:10]))
    recorded.train.resume = True
    last = out_dir / "train" / "weights" / "last.pt"
    if last.is_file():
        check_checkpoint(last)
    return recorded, json.loads(run_file.read_text()), last if last.is_file() else None


def _load_epoch(path: Path) -> int:
    """The epoch a training checkpoint holds; raises whatever loading it raises."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "epoch" not in ckpt or ckpt.get("ema", ckpt.get("model")) is None:
        raise ValueError("not an ultralytics training checkpoint")
    return int(ckpt["epoch"])


def check_checkpoint(last: Path) -> None:
    """Refuse to resume from a ``last.pt`` that does not load, naming an earlier checkpoint that does.

    Raises:
        DroneVisionError: ``last`` is torn or not a checkpoint (one line; the others in its folder are tried).
    """
    try:
        _load_epoch(last)
        return
    except Exception as e:
        reason = f"{type(e).__name__}: {first_line(e, limit=120)}"
    usable = []
    candidates = [p for p in last.parent.glob("*.pt") if p != last]
    for other in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            epoch = _load_epoch(other)
        except Exception:
            continue
        if epoch >= 0:  # -1: a finished training's stripped checkpoint, which cannot be resumed
            usable.append((other, epoch + 1))
    hint = (
        f"{usable[0][0]} (epoch {usable[0][1]}) loads: `cp {usable[0][0]} {last}` to resume from it"
        if usable
        else "no other checkpoint in its folder loads: train again without train.resume"
    )
    raise DroneVisionError(f"cannot resume: {last} does not load ({reason}); {hint}")


def killed(out_dir: Path, tracker: MlflowRun, signal_name: str | None) -> None:
    """Mark the run KILLED and leave a summary saying how to resume it."""
    tracker.end("KILLED")
    last = out_dir / "train" / "weights" / "last.pt"
    resume = f"python -m dronevision.train out_dir={out_dir} train.resume=true"
    write_summary(
        out_dir,
        {
            "status": "killed",
            "signal": signal_name or "SIGINT",
            "last_pt": str(last) if last.is_file() else None,
            "resume": resume,
            "run_id": tracker.run_id,
            "out_dir": str(out_dir),
        },
    )
    log.warning(
        "training interrupted by %s; run %s marked KILLED; %s; resume with: %s",
        signal_name or "SIGINT",
        tracker.run_id,
        f"last.pt holds the last finished epoch ({last})" if last.is_file() else "no epoch had finished",
        resume,
    )
