"""Train a YOLO-family detector with ultralytics, tracked in one MLflow run; then evaluate and export it.

Run ``python -m dronevision.train key=value ...`` (or ``dronevision-train``); tests call :func:`run`.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.dataset import YoloDataset, load_yolo_dataset, manifest_lines, manifest_sha256, write_data_yaml
from dronevision.errors import DroneVisionError
from dronevision.tracking import MlflowRun, flatten, git_state

log = logging.getLogger(__name__)

# ultralytics train() arguments that dronevision sets itself, from dataset/model/out_dir.
OWNED_ARGS = frozenset({"data", "model", "project", "name", "exist_ok", "pretrained", "mode", "task"})


# --- pure core -------------------------------------------------------------------------------------------------


def ultralytics_train_args(train: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """The ``train`` config group as ultralytics ``train()`` arguments, unchanged, after checking each key.

    Args:
        train: the ``train`` group.
        known: ultralytics' default arguments (``ultralytics.cfg.DEFAULT_CFG_DICT``).

    Examples:
        >>> ultralytics_train_args({"epochs": 1, "imgsz": 64}, {"epochs": 100, "imgsz": 640, "data": None})
        {'epochs': 1, 'imgsz': 64}
        >>> ultralytics_train_args({"epoch": 1}, {"epochs": 100})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: train.epoch is not an ultralytics train argument (did you mean ...
    """
    args = dict(train)
    for key in args:
        if key in OWNED_ARGS:
            raise DroneVisionError(f"train.{key} is set by dronevision: use dataset.path, model or out_dir instead")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean train.{close[0]}?)" if close else ""
            raise DroneVisionError(f"train.{key} is not an ultralytics train argument{hint}")
    return args


def train_overrides(overrides: list[str], known: Mapping[str, Any]) -> list[str]:
    """Let ``train.<arg>=v`` set any ultralytics train argument, listed in train/default.yaml or not.

    Examples:
        >>> train_overrides(["train.mixup=0.1", "model=yolo11n", "+train.epochs=2"], {"mixup": 0.0, "epochs": 100})
        ['++train.mixup=0.1', 'model=yolo11n', '+train.epochs=2']
    """
    rewritten = []
    for override in overrides:
        key, sep, _ = override.partition("=")
        if sep and key.startswith("train.") and key.count(".") == 1:
            ultralytics_train_args({key.removeprefix("train."): None}, known)  # one-line error for a typo
            override = f"++{override}"
        rewritten.append(override)
    return rewritten


# --- I/O adapters ----------------------------------------------------------------------------------------------


def resolve_model(model: DictConfig) -> tuple[str, Path | None]:
    """The architecture YAML and the optional local weights to start from; never a download."""
    from ultralytics.nn.tasks import yaml_model_load

    weights = Path(model.weights).expanduser().resolve() if model.get("weights") else None
    if weights is not None and (not weights.is_file() or weights.suffix != ".pt"):
        raise DroneVisionError(f"model.weights {weights} does not exist or is not a .pt file")
    try:
        yaml_model_load(str(model.cfg))  # resolves 'yolov8n.yaml' to yolov8.yaml at scale n, as YOLO() does
    except FileNotFoundError:
        raise DroneVisionError(f"model.cfg {model.cfg}: no such ultralytics model YAML") from None
    return str(model.cfg), weights


_DROPPED_CALLBACKS = ("ultralytics.utils.callbacks.mlflow", "ultralytics.utils.callbacks.raytune")


def _drop_ultralytics_callbacks(trainer: Any) -> None:
    """Remove ultralytics' MLflow callback (dronevision logs the one run itself, see :class:`MlflowRun`) and its
    Ray Tune callback (on whenever ray is installed; dronevision uses Ray for sampling, not tuning)."""
    for event, fns in trainer.callbacks.items():
        trainer.callbacks[event] = [f for f in fns if getattr(f, "__module__", "") not in _DROPPED_CALLBACKS]


def _skip_amp_download() -> None:
    """ultralytics' AMP check downloads yolo26n.pt on CUDA; offline we trust AMP and say so."""
    import ultralytics.engine.trainer as trainer_module

    def check_amp(model: Any) -> bool:
        log.info(
            "AMP check skipped (it needs a downloaded model); training with AMP. Set train.amp=false if losses NaN"
        )
        return True

    trainer_module.check_amp = check_amp


def fit(
    arch: str,
    weights: Path | None,
    data_yaml: Path,
    out_dir: Path,
    args: dict[str, Any],
    *,
    tracker: MlflowRun,
    threads: int,
) -> Any:
    """Run ultralytics training into ``out_dir/train`` with per-epoch metrics going to ``tracker``."""
    import torch
    from ultralytics import YOLO

    model = YOLO(arch, task="detect")
    if weights is not None:
        model.load(str(weights))

    def on_pretrain_routine_start(trainer: Any) -> None:
        _drop_ultralytics_callbacks(trainer)
        if trainer.device.type == "cpu":  # ultralytics leaves one core idle on CPU
            torch.set_num_threads(threads)

    def on_fit_epoch_end(trainer: Any) -> None:
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        tracker.log_metrics({**losses, **trainer.metrics, **trainer.lr}, step=trainer.epoch + 1)

    model.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    _skip_amp_download()
    model.train(data=str(data_yaml), project=str(out_dir), name="train", exist_ok=True, **args)
    return model.trainer


def _after_training(
    cfg: DictConfig, trainer: Any, dataset: YoloDataset, data_yaml: Path, out_dir: Path, threads: int
) -> dict[str, Any]:
    """Evaluate the best weights on the val split and export them to ONNX, checked against PyTorch."""
    from dronevision.evaluate import evaluate_checkpoint
    from dronevision.export import export_onnx, onnx_max_abs_diff

    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    imgsz, device = int(trainer.args.imgsz), trainer.args.device
    evaluation = evaluate_checkpoint(
        best,
        dataset,
        data_yaml,
        split="val",
        imgsz=imgsz,
        batch=cfg.evaluate.batch,
        device=device,
        out_dir=out_dir / "val",
        plots=bool(trainer.args.plots),
    )
    summary: dict[str, Any] = {"weights": str(best), "metrics": evaluation["ultralytics"], "coco": evaluation["coco"]}
    summary["onnx"] = summary["onnx_max_abs_diff"] = None
    if cfg.export.enabled:
        onnx = export_onnx(
            best, imgsz=imgsz, opset=cfg.export.opset, dynamic=cfg.export.dynamic, simplify=cfg.export.simplify
        )
        diff = onnx_max_abs_diff(best, onnx, dataset.splits["val"][0], imgsz=imgsz, threads=threads)
        log.info("ONNX %s: max |ONNX Runtime - PyTorch| = %.3g", onnx, diff)
        summary.update(onnx=str(onnx), onnx_max_abs_diff=diff)
    return summary


def _log_results(tracker: MlflowRun, out_dir: Path, summary: dict[str, Any]) -> None:
    """Final metrics and the artifacts: config, weights, ONNX, plots, manifest, summary."""
    tracker.log_metrics({f"final/{k}": v for k, v in summary["metrics"].items()})
    tracker.log_metrics({f"final/coco_{k}": v for k, v in summary["coco"].items()})
    if summary["onnx_max_abs_diff"] is not None:
        tracker.log_metrics({"final/onnx_max_abs_diff": summary["onnx_max_abs_diff"]})
    tracker.log_artifact(out_dir / "config.yaml")
    tracker.log_artifact(out_dir / ".hydra", "hydra")
    tracker.log_artifact(out_dir / "dataset_manifest.tsv")
    tracker.log_artifact(Path(summary["weights"]), "weights")
    if summary["onnx"]:
        tracker.log_artifact(Path(summary["onnx"]), "weights")
    for folder in ("train", "val"):
        for plot in sorted((out_dir / folder).glob("*")):
            if plot.suffix in {".png", ".jpg", ".csv"}:
                tracker.log_artifact(plot, f"plots/{folder}")


def _print_summary(summary: dict[str, Any]) -> None:
    m, c = summary["metrics"], summary["coco"]
    lines = [
        f"dronevision train: done in {summary['seconds']:.0f} s",
        f"  metrics  mAP50 {m['map50']:.3f}  mAP50-95 {m['map50_95']:.3f}  P {m['precision']:.3f}  R {m['recall']:.3f}"
        f"  (pycocotools AP50 {c['AP50']:.3f}  AP {c['AP']:.3f})",
        f"  weights  {summary['weights']}",
    ]
    if summary["onnx"]:
        lines.append(f"  onnx     {summary['onnx']}  (max |ORT - PyTorch| {summary['onnx_max_abs_diff']:.2g})")
    if summary["mlflow"]["ok"]:
        lines.append(f"  mlflow   run {summary['run_id']} in experiment '{summary['experiment']}'")
        lines.append(f"           view: mlflow ui --backend-store-uri {summary['tracking_uri']}")
    else:
        lines.append(f"  mlflow   not tracked: {summary['mlflow']['error']}")
    lines.append(f"  summary  {Path(summary['out_dir']) / 'summary.json'}")
    print("\n".join(lines))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate the best weights with pycocotools, export ONNX and check it; returns summary.json's content."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    started = time.perf_counter()
    out_dir = resolve_out_dir(cfg)
    # Check everything the user gave before writing anything.
    args = ultralytics_train_args(OmegaConf.to_container(cfg.train, resolve=True), DEFAULT_CFG_DICT)
    arch, weights = resolve_model(cfg.model)
    dataset = load_yolo_dataset(cfg.dataset.path)
    manifest = manifest_lines(dataset)  # also parses every label file
    dataset_sha = manifest_sha256(manifest)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dataset_manifest.tsv").write_text("".join(f"{line}\n" for line in manifest))
    data_yaml = write_data_yaml(dataset, out_dir / "data" / "data.yaml")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    threads = int(cfg.threads or os.cpu_count() or 1)

    tracker = MlflowRun(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.get("run_name")).start(
        tags={**git_state(Path(__file__).parent), "dronevision.stage": "train", "dataset.sha256": dataset_sha}
    )
    tracker.log_params({**flatten(resolved), "dataset.sha256": dataset_sha})
    status = "FAILED"
    try:
        trainer = fit(arch, weights, data_yaml, out_dir, args, tracker=tracker, threads=threads)
        summary = _after_training(cfg, trainer, dataset, data_yaml, out_dir, threads)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED":
            tracker.end(status)
    counts = dataset.counts()
    summary.update(
        run_id=tracker.run_id,
        tracking_uri=cfg.mlflow.tracking_uri,
        experiment=cfg.mlflow.experiment,
        dataset={
            "path": str(dataset.yaml_path),
            "classes": list(dataset.names.values()),
            "n_train": counts["train"],
            "n_val": counts["val"],
            "sha256": dataset_sha,
        },
        out_dir=str(out_dir),
        seconds=round(time.perf_counter() - started, 2),
    )
    summary["mlflow"] = {"ok": tracker.active, "error": tracker.error}
    _log_results(tracker, out_dir, summary)
    tracker.log_artifact(write_summary(out_dir, summary))
    tracker.end("FINISHED")
    if summary["mlflow"]["ok"] != tracker.active:  # an upload failed after the summary was written
        summary["mlflow"] = {"ok": tracker.active, "error": tracker.error}
        write_summary(out_dir, summary)
    _print_summary(summary)
    return summary


def _rewrite(overrides: list[str]) -> list[str]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return train_overrides(overrides, DEFAULT_CFG_DICT)


main = hydra_main("train", run, _rewrite)

if __name__ == "__main__":
    main()
