"""The ultralytics side of training: our trainer classes and the fit call.

The trainer classes are plain ultralytics trainers plus two things that must also hold in DDP worker processes
(which ultralytics rebuilds from the trainer class alone): the augmentation policy with its min-visibility rule
and counted negatives (:mod:`dronevision.augment`), and checkpoints that a signal cannot cut in half.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ultralytics.models.rtdetr.train import RTDETRTrainer
from ultralytics.models.yolo.detect import DetectionTrainer

from dronevision.cli import Signals
from dronevision.train.args import ModelSpec

log = logging.getLogger(__name__)

POLICY_ENV = "DRONEVISION_AUGMENT"  # the augment config as JSON, read by every trainer process


# --- trainers --------------------------------------------------------------------------------------------------


def _policy() -> Any:
    """The augmentation policy of this training, from the environment (so DDP workers see it too)."""
    raw = os.environ.get(POLICY_ENV)
    if not raw:
        return None
    from dronevision.augment import load_policy

    return load_policy(json.loads(raw))


class _DroneVisionMixin:
    """Applies the augmentation policy to the training set; writes checkpoints atomically with respect to signals."""

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        dataset = super().build_dataset(img_path, mode, batch)  # type: ignore[misc]
        policy = _policy() if mode == "train" else None
        if policy is not None and hasattr(dataset, "transforms"):
            from dronevision.augment import use_policy

            use_policy(dataset, policy)
            self.augment_dataset = dataset
        return dataset

    def save_model(self) -> None:
        """ultralytics' checkpoints, each written to a temporary name, flushed and renamed: a signal, a crash or a
        full disk leaves last.pt and best.pt as the last whole ones, never torn."""
        final = {"last": self.last, "best": self.best}  # type: ignore[attr-defined]
        parts = {k: p.with_name(f".{p.name}.part") for k, p in final.items()}
        self.last, self.best = parts["last"], parts["best"]
        for part in parts.values():  # a part left by a killed process must not pass for this epoch's
            part.unlink(missing_ok=True)
        try:
            with Signals.saving():
                super().save_model()  # type: ignore[misc]
                for key, part in parts.items():
                    if part.exists():
                        _fsync(part)
                        part.replace(final[key])
        except BaseException:
            for part in parts.values():
                part.unlink(missing_ok=True)
            raise
        finally:
            self.last, self.best = final["last"], final["best"]

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
        """The pruned model itself when ``weights`` is one (no YAML describes its channels); else ultralytics'."""
        from dronevision.train.prune import is_pruned

        if is_pruned(weights):
            return weights
        return super().get_model(cfg, weights, verbose)  # type: ignore[misc]


class DroneVisionTrainer(_DroneVisionMixin, DetectionTrainer):
    """ultralytics' DetectionTrainer with dronevision's augmentation policy and signal-safe checkpoints."""


class DroneVisionRTDETRTrainer(_DroneVisionMixin, RTDETRTrainer):
    """ultralytics' RTDETRTrainer with dronevision's augmentation policy and signal-safe checkpoints."""


# --- fit -------------------------------------------------------------------------------------------------------

_DROPPED_CALLBACKS = ("ultralytics.utils.callbacks.mlflow", "ultralytics.utils.callbacks.raytune")


def _drop_ultralytics_callbacks(trainer: Any) -> None:
    """Remove ultralytics' MLflow callback (dronevision logs the one run itself) and its Ray Tune callback (on
    whenever ray is installed; dronevision uses Ray for sampling, not tuning)."""
    for event, fns in trainer.callbacks.items():
        trainer.callbacks[event] = [f for f in fns if getattr(f, "__module__", "") not in _DROPPED_CALLBACKS]


def _fsync(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def _atomic_final_checkpoints() -> None:
    """ultralytics strips the optimizer from last.pt and best.pt in place when training ends (``torch.save`` over
    the file); write the stripped copy to a temporary name and rename it instead, so a full disk cannot tear them.
    ``torch.save`` reports a full disk as a RuntimeError; it is raised as the ``ENOSPC`` it is."""
    import errno
    import shutil

    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils.torch_utils import strip_optimizer

    def atomic_strip_optimizer(f: Any = "best.pt", s: str = "", updates: Any = None) -> Any:
        target = Path(s or f)
        part = target.with_name(f".{target.name}.part")
        part.unlink(missing_ok=True)  # strip_optimizer writes nothing for a file that is no checkpoint
        try:
            out = strip_optimizer(f, str(part), updates=updates)
            if part.exists():
                _fsync(part)
                part.replace(target)
            return out
        except BaseException as e:
            part.unlink(missing_ok=True)
            if isinstance(e, RuntimeError) and shutil.disk_usage(target.parent).free < Path(f).stat().st_size:
                raise OSError(errno.ENOSPC, "No space left on device", str(part)) from e
            raise

    trainer_module.strip_optimizer = atomic_strip_optimizer


def _skip_amp_download() -> None:
    """ultralytics' AMP check downloads a model on CUDA; offline we trust AMP there and say so. On CPU and MPS the
    answer stays ultralytics' own: no AMP (autocast would change the numerics of a CPU training)."""
    import ultralytics.engine.trainer as trainer_module

    def check_amp(model: Any) -> bool:
        if next(model.parameters()).device.type in {"cpu", "mps"}:
            return False  # as ultralytics' check_amp: AMP only on accelerators
        log.info("AMP check skipped (it needs a downloaded model); training with AMP; train.amp=false if losses NaN")
        return True

    trainer_module.check_amp = check_amp


@contextmanager
def _env(key: str, value: str | None) -> Iterator[None]:
    saved = os.environ.get(key)
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def fit(
    model: ModelSpec,
    data_yaml: Path,
    out_dir: Path,
    args: dict[str, Any],
    *,
    policy_cfg: Mapping[str, Any] | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    threads: int,
    resume_from: Path | None = None,
) -> Any:
    """Run ultralytics training into ``out_dir/train``; returns the trainer.

    Args:
        model: architecture and optional starting weights.
        data_yaml: the dataset.
        out_dir: the run's folder; ultralytics writes ``train/`` inside it.
        args: ultralytics train arguments (``augmentations`` included).
        policy_cfg: the augment config group (None: ultralytics' own Albumentations behaviour).
        on_epoch: called with (epoch, metrics) after each epoch (not in DDP workers).
        threads: torch CPU threads.
        resume_from: a ``last.pt`` to continue from (ultralytics restores every argument from it).
    """
    from ultralytics import RTDETR, YOLO

    from dronevision.infer.model import end2end_args
    from dronevision.train.speed import tune_cpu

    cls = RTDETR if model.family == "rtdetr" else YOLO
    if resume_from is not None:
        net = cls(str(resume_from))
        args = {"resume": True, "augmentations": args.get("augmentations")}
    elif model.pruned:
        net = cls(str(model.weights))  # a pruned model: only its checkpoint describes its channels
    else:
        net = cls(model.arch) if model.family == "rtdetr" else cls(model.arch, task="detect")
        if model.weights is not None:
            net.load(str(model.weights))

    def on_pretrain_routine_start(trainer: Any) -> None:
        _drop_ultralytics_callbacks(trainer)
        tune_cpu(trainer, threads=threads)

    def on_fit_epoch_end(trainer: Any) -> None:
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        if on_epoch is not None:
            on_epoch(trainer.epoch + 1, {**losses, **trainer.metrics, **trainer.lr})

    net.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    if "," not in str(args.get("device")):  # DDP workers get their metrics from results.csv afterwards
        net.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    _skip_amp_download()
    _atomic_final_checkpoints()
    with _env(POLICY_ENV, json.dumps(dict(policy_cfg)) if policy_cfg is not None else None):
        net.train(
            trainer=DroneVisionRTDETRTrainer if model.family == "rtdetr" else DroneVisionTrainer,
            data=str(data_yaml),
            **({} if resume_from is not None else {"project": str(out_dir), "name": "train", "exist_ok": True}),
            **{**end2end_args(net.model), **args},  # an NMS-free head is validated (and best.pt picked) as exported
        )
    return net.trainer
