"""``python -m dronevision.train``: one MLflow run per training, from config to evaluated, exported, registered model.

Tests call :func:`run`; ``main`` is the command. ``train.resume=true`` with the ``out_dir`` of an interrupted run
continues it from ``last.pt`` in the same MLflow run; ``--from-run <run_id>`` re-runs a recorded run's config.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.dataset import YoloDataset, load_yolo_dataset, manifest_lines, manifest_sha256, write_data_yaml
from dronevision.errors import DroneVisionError
from dronevision.fsio import write_error
from dronevision.mlflow_run import RUN_FILE, MlflowRun, RunRef, flatten, git_state, limits
from dronevision.train.args import (
    ModelSpec,
    check_resume_settings,
    resolve_model,
    train_overrides,
    ultralytics_check,
    ultralytics_defaults,
    ultralytics_train_args,
)
from dronevision.train.lineage import config_differences, expand_from_run, recorded_config
from dronevision.train.resume import killed, resume_config

log = logging.getLogger(__name__)

PRUNE_DIR = "prune"  # prune.ratio: the pruned starting checkpoint and prune.json


def _prune(cfg: DictConfig, model: ModelSpec, nc: int, out_dir: Path) -> tuple[ModelSpec, dict[str, Any] | None]:
    """Prune ``model.weights`` into ``out_dir/prune/pruned.pt`` when ``prune.ratio`` is set; the model to train."""
    from dronevision.train.prune import prune_checkpoint

    prune = cfg.get("prune") or {}
    if prune.get("ratio") is None:
        return model, None
    if model.weights is None:
        raise DroneVisionError("prune.ratio needs model.weights: the trained .pt to prune (then fine-tune)")
    if model.family != "yolo":
        raise DroneVisionError(f"prune.ratio: pruning supports YOLO detection models, not model.family {model.family}")
    pruned = out_dir / PRUNE_DIR / "pruned.pt"
    report = prune_checkpoint(
        model.weights,
        pruned,
        ratio=float(prune.ratio),
        round_to=int(prune.round_to),
        keep_first=int(prune.keep_first),
        imgsz=int(cfg.train.imgsz),
        nc=nc,
    )
    info = {**report.as_dict(), "source": str(model.weights), "pruned": str(pruned)}
    (pruned.parent / "prune.json").write_text(json.dumps(info, indent=2))
    return replace(model, weights=pruned, pruned=True), info


def _dataset_lineage(dataset: YoloDataset, sha: str) -> dict[str, str]:
    """Dataset params: our manifest hash, and the dataset stage's own manifest.json when the folder has one."""
    lineage = {"dataset.sha256": sha, "dataset.root": str(dataset.root)}
    manifest = dataset.root / "manifest.json"
    if manifest.is_file():
        from dronevision.dataset.writer import sha256_file

        lineage.update({"dataset.manifest": str(manifest), "dataset.manifest_sha256": sha256_file(manifest)})
    return lineage


def _log_dataset_input(tracker: MlflowRun, dataset: YoloDataset, lineage: dict[str, str]) -> None:
    """The dataset as the run's MLflow dataset input: its data.yaml, with the manifest's hash (``dataset.sha256``) as
    the digest (MLflow keeps 36 characters; the lineage tags keep the whole hash)."""
    tracker.log_dataset(
        name=dataset.root.name,
        source=str(dataset.yaml_path),
        digest=lineage["dataset.sha256"],
        context="train",
        profile={"classes": list(dataset.names.values()), "images": dataset.counts()},
        tags=lineage,
    )


def _log_model(cfg: DictConfig, tracker: MlflowRun, dataset: YoloDataset, summary: dict[str, Any]) -> None:
    """Log the ONNX export (the .pt without one) as the run's MLflow model, loadable with ``mlflow.pyfunc`` (see
    :mod:`dronevision.mlflow_run.pyfunc`), and register it as a new version of ``mlflow.registry.name``."""
    model_file = Path(summary["onnx"] or summary["weights"])
    examples = list(dataset.splits.get("val") or dataset.splits["train"])[:1]
    metadata = {
        "names": dict(dataset.names),
        "imgsz": OmegaConf.to_container(cfg.train.imgsz) if OmegaConf.is_list(cfg.train.imgsz) else cfg.train.imgsz,
        "model_file": model_file.name,
        "training_run_id": tracker.run_id,
        "dataset_sha256": summary["dataset"]["sha256"],
    }
    model_id = tracker.log_detector(model_file, example_images=examples, metadata=metadata)
    summary["logged_model"] = (
        {"model_id": model_id, "uri": f"models:/{model_id}", "file": str(model_file)} if model_id else None
    )
    registry = cfg.mlflow.get("registry") or {}
    name = registry.get("name")
    summary["registered_model"] = tracker.register(name, model_id, registry.get("alias")) if name else None


def _log_results_csv(tracker: MlflowRun, results: Path) -> None:
    """Per-epoch metrics from ultralytics' results.csv (DDP workers cannot log to our run themselves)."""
    if not results.is_file():
        return
    with results.open() as f:
        for row in csv.DictReader(f):
            epoch = int(float(row.pop("epoch")))
            tracker.log_metrics({k.strip(): float(v) for k, v in row.items() if v not in ("", None)}, step=epoch)


def _after_training(
    cfg: DictConfig,
    trainer: Any,
    dataset: YoloDataset,
    data_yaml: Path,
    out_dir: Path,
    threads: int,
    run: RunRef | None,
) -> dict[str, Any]:
    """Evaluate the best weights on the val split and export them to ONNX, checked against PyTorch; the ONNX
    metadata names the MLflow ``run`` when there is one."""
    from dronevision.evaluate.command import evaluate_checkpoint
    from dronevision.export import export_onnx, onnx_max_abs_diff

    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    imgsz, device = int(trainer.args.imgsz), trainer.args.device
    device = str(device).split(",")[0] if device is not None else None  # evaluate on the first of DDP's devices
    evaluation = evaluate_checkpoint(
        best,
        data_yaml,
        split="val",
        imgsz=imgsz,
        batch=cfg.evaluate.batch,
        device=device,
        out_dir=out_dir / "val",
        plots=bool(trainer.args.plots),
        threads=threads,
    )
    epochs_completed = int(trainer.epoch) + 1
    summary: dict[str, Any] = {
        "weights": str(best),
        "metrics": evaluation["ultralytics"],
        "coco": evaluation["coco"],
        "epochs_completed": epochs_completed,
        "stopped_early": epochs_completed < int(trainer.epochs),
    }
    summary["onnx"] = summary["onnx_max_abs_diff"] = None
    if cfg.export.enabled:
        onnx = export_onnx(
            best,
            imgsz=imgsz,
            opset=cfg.export.opset,
            dynamic=cfg.export.dynamic,
            simplify=cfg.export.simplify,
            metadata=run.metadata() if run else None,
        )
        diff = onnx_max_abs_diff(best, onnx, dataset.splits["val"][0], imgsz=imgsz, threads=threads)
        log.info("ONNX %s: max |ONNX Runtime - PyTorch| = %.3g", onnx, diff)
        summary.update(onnx=str(onnx), onnx_max_abs_diff=diff)
    return summary


def _log_results(tracker: MlflowRun, out_dir: Path, summary: dict[str, Any]) -> None:
    """Final metrics and the artifacts: weights, ONNX, plots, summary."""
    tracker.log_metrics({f"final/{k}": v for k, v in summary["metrics"].items()})
    tracker.log_metrics({f"final/coco_{k}": v for k, v in summary["coco"].items() if v is not None})
    if summary["onnx_max_abs_diff"] is not None:
        tracker.log_metrics({"final/onnx_max_abs_diff": summary["onnx_max_abs_diff"]})
    tracker.log_metrics({"augment/negatives_made": summary["augment"]["negatives_made"]})
    if summary["prune"]:
        keys = ("macs_before", "macs_after", "macs_kept", "params_before", "params_after")
        tracker.log_metrics({f"prune/{k}": summary["prune"][k] for k in keys})
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
        f"dronevision train: done in {summary['seconds']:.0f} s ({summary['epochs_completed']} epochs"
        f"{', stopped early' if summary['stopped_early'] else ''})",
        f"  metrics  mAP50 {m['map50']:.3f}  mAP50-95 {m['map50_95']:.3f}  P {m['precision']:.3f}  R {m['recall']:.3f}"
        f"  (pycocotools AP50 {c['AP50']:.3f}  AP {c['AP']:.3f})",
        f"  weights  {summary['weights']}",
    ]
    if summary["prune"]:
        p = summary["prune"]
        lines.append(
            f"  pruned   {p['ratio']:g} of the channels of {p['source']}: {p['macs_before'] / 1e9:.2f} -> "
            f"{p['macs_after'] / 1e9:.2f} GMACs at {p['imgsz']}, {p['params_before'] / 1e6:.2f}M -> "
            f"{p['params_after'] / 1e6:.2f}M parameters, then fine-tuned"
        )
    if summary["onnx"]:
        lines.append(f"  onnx     {summary['onnx']}  (max |ORT - PyTorch| {summary['onnx_max_abs_diff']:.2g})")
    if summary["mlflow"]["ok"]:
        lines.append(f"  mlflow   run {summary['run_id']} in experiment '{summary['experiment']}'")
        if summary["logged_model"]:
            lines.append(f"           model {summary['logged_model']['uri']} (mlflow.pyfunc.load_model)")
        if summary["registered_model"]:
            r = summary["registered_model"]
            lines.append(f"           registered as {r['name']} version {r['version']} (@{r['alias']})")
        lines.append(f"           view: mlflow ui --backend-store-uri {summary['tracking_uri']}")
    else:
        lines.append(f"  mlflow   not tracked: {summary['mlflow']['error']}")
        if summary["mlflow"].get("sync"):
            lines.append(f"           kept in {summary['mlflow']['pending']}; send: {summary['mlflow']['sync']}")
    lines.append(f"  summary  {Path(summary['out_dir']) / 'summary.json'}")
    print("\n".join(lines))


def _start_tracking(cfg: DictConfig, out_dir: Path, resumed: dict[str, Any] | None, tags: dict[str, str]) -> MlflowRun:
    """Open the run (or reopen the interrupted one) and remember which run this out_dir belongs to."""
    if resumed is not None:
        tracker = MlflowRun.attach(resumed["tracking_uri"], resumed["run_id"], out_dir=out_dir, **limits(cfg.mlflow))
        tracker.reopen()
        tracker.set_tags({"dronevision.resumed": "true"})
        return tracker
    tracker = MlflowRun.from_config(cfg.mlflow, out_dir).start(tags=tags)
    (out_dir / RUN_FILE).write_text(
        json.dumps(
            {"run_id": tracker.run_id, "tracking_uri": cfg.mlflow.tracking_uri, "experiment": tracker.experiment}
        )
    )
    return tracker


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate the best weights with pycocotools, export ONNX, register the model; returns summary.json."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from dronevision.augment import load_policy, negatives_made, preview_grid
    from dronevision.cli import interruptible
    from dronevision.train.trainer import fit

    started = time.perf_counter()
    out_dir = resolve_out_dir(cfg)
    check_resume_settings(cfg.train)
    resumed, last = None, None
    if cfg.train.resume:
        cfg, resumed, last = resume_config(cfg, out_dir)
    # Check everything the user gave before writing anything.
    args = ultralytics_train_args(OmegaConf.to_container(cfg.train, resolve=True), DEFAULT_CFG_DICT)
    args.pop("resume", None)
    model = resolve_model(cfg.model)
    policy_cfg = OmegaConf.to_container(cfg.augment, resolve=True)
    policy = load_policy(policy_cfg, imgsz=int(cfg.train.imgsz))
    dataset = load_yolo_dataset(cfg.dataset.path)
    manifest = manifest_lines(dataset)  # also parses every label file
    dataset_sha = manifest_sha256(manifest)
    from_run = cfg.get("from_run")
    recorded = recorded_config(cfg.mlflow.tracking_uri, from_run) if from_run and not resumed else None

    if last is None:
        model, pruning = _prune(cfg, model, len(dataset.names), out_dir)
    else:  # a resumed run continues from its last.pt, pruned already if the run prunes
        recorded_prune = out_dir / PRUNE_DIR / "prune.json"
        pruning = json.loads(recorded_prune.read_text()) if recorded_prune.is_file() else None

    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if recorded is not None:
        changed = config_differences(recorded, resolved)
        log.info("re-run of %s; config changes: %s", from_run, "; ".join(changed) if changed else "none")
    (out_dir / "dataset_manifest.tsv").write_text("".join(f"{line}\n" for line in manifest))
    data_yaml = write_data_yaml(dataset, out_dir / "data" / "data.yaml")
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    (out_dir / "augment").mkdir(exist_ok=True)
    (out_dir / "augment" / "policy.yaml").write_text(OmegaConf.to_yaml(policy_cfg))
    preview = preview_grid(policy, dataset, out_dir / "augment" / "preview.png", seed=int(cfg.train.seed or 0))
    threads = int(cfg.threads or os.cpu_count() or 1)
    lineage = _dataset_lineage(dataset, dataset_sha)
    tags = {**git_state(Path(__file__).parent), "dronevision.stage": "train", **lineage, "augment.policy": policy.name}
    if from_run:
        tags["dronevision.from_run"] = str(from_run)

    tracker = _start_tracking(cfg, out_dir, resumed, tags)
    if resumed is None:
        tracker.log_params({**flatten(resolved), **lineage})
        tracker.log_artifact(out_dir / "config.yaml")
        tracker.log_artifact(out_dir / ".hydra", "hydra")
        tracker.log_artifact(out_dir / "dataset_manifest.tsv")
        tracker.log_artifact(out_dir / "augment", "augment")
        _log_dataset_input(tracker, dataset, lineage)
    status, ddp = "FAILED", "," in str(args.get("device"))
    with interruptible() as signals:
        try:
            trainer = fit(
                model,
                data_yaml,
                out_dir,
                {**args, "augmentations": policy.transforms},
                policy_cfg=policy_cfg,
                on_epoch=lambda epoch, metrics: tracker.log_metrics(metrics, step=epoch),
                threads=threads,
                resume_from=last,
            )
            if ddp:
                _log_results_csv(tracker, out_dir / "train" / "results.csv")
            summary = _after_training(cfg, trainer, dataset, data_yaml, out_dir, threads, tracker.ref)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            killed(out_dir, tracker, signals.received)
            raise
        except OSError as e:  # a full disk or a folder gone read-only: say what is left and how to go on
            error = write_error(e, out_dir)
            if error is None:
                raise
            last = out_dir / "train" / "weights" / "last.pt"
            kept = f"{last} holds the last finished epoch" if last.is_file() else "no epoch had finished"
            raise DroneVisionError(
                f"{error}; {kept}; make room, then: python -m dronevision.train out_dir={out_dir} train.resume=true"
            ) from None
        finally:
            if status == "FAILED":
                tracker.end("FAILED")
    counts = dataset.counts()
    augment_dataset = getattr(trainer, "augment_dataset", None)
    summary.update(
        run_id=tracker.run_id,
        tracking_uri=tracker.tracking_uri,
        experiment=tracker.experiment,
        resumed=resumed is not None,
        from_run=from_run,
        prune=pruning,
        dataset={
            "path": str(dataset.yaml_path),
            "classes": list(dataset.names.values()),
            "n_train": counts["train"],
            "n_val": counts["val"],
            "sha256": dataset_sha,
            **{k.removeprefix("dataset."): v for k, v in lineage.items() if k != "dataset.sha256"},
        },
        augment={
            "policy": policy.name,
            "preview": str(preview),
            "negatives_made": negatives_made(augment_dataset) if augment_dataset is not None else 0,
        },
        out_dir=str(out_dir),
        seconds=round(time.perf_counter() - started, 2),
    )
    _log_results(tracker, out_dir, summary)
    _log_model(cfg, tracker, dataset, summary)
    summary["mlflow"] = tracker.summary()
    tracker.log_artifact(write_summary(out_dir, summary))
    tracker.end("FINISHED")
    if summary["mlflow"]["ok"] != tracker.active:  # an upload failed after the summary was written
        summary["mlflow"] = tracker.summary()
        write_summary(out_dir, summary)
    _print_summary(summary)
    return summary


def _rewrite(overrides: list[str]) -> list[str]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return train_overrides(expand_from_run(overrides), DEFAULT_CFG_DICT)


main = hydra_main(
    "train",
    run,
    _rewrite,
    extra_defaults=ultralytics_defaults,
    validators=lambda: {"train.": ultralytics_check},
)
