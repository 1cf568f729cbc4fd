"""``python -m dronevision.evaluate``: score a detector (or detections made elsewhere) on a dataset.

Protocols ``coco`` and ``visdrone`` (see :mod:`dronevision.evaluate.protocols`), plain or sliced inference through
one detector interface for .pt and .onnx (:mod:`dronevision.infer`), ``metrics.json``, PNGs, an MLflow entry.
Tests call :func:`run`; ``main`` is the command.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.errors import DroneVisionError
from dronevision.evaluate.altitude import altitude_mlflow_metrics, check_scales, evaluate_altitude
from dronevision.evaluate.ground_truth import (
    GroundTruth,
    check_protocols,
    check_same_classes,
    load_ground_truth,
    scored_names,
)
from dronevision.evaluate.protocols import PROTOCOLS, UNSCORED
from dronevision.fsio import write_text
from dronevision.infer.sliced import SliceSettings
from dronevision.schema import Detections

log = logging.getLogger(__name__)


# --- predictions -----------------------------------------------------------------------------------------------


def check_weights(weights: Path, imgsz: int | None) -> Path:
    """A .pt, .onnx or OpenVINO .xml (or IR folder) that exists and holds a detector; a static input size other than
    ``imgsz`` is refused."""
    from dronevision.infer import ir_xml
    from dronevision.infer.model import load_checkpoint

    weights = ir_xml(Path(weights).expanduser().resolve())
    if not weights.is_file():
        raise DroneVisionError(f"weights {weights} does not exist")
    if weights.suffix not in (".pt", ".onnx", ".xml"):
        raise DroneVisionError(f"weights {weights} is neither a .pt, an .onnx nor an OpenVINO .xml file")
    if weights.suffix == ".pt":
        load_checkpoint(weights)  # one line for a file that is no detector's checkpoint, before anything is written
    if weights.suffix in (".onnx", ".xml"):
        from dronevision.infer import read_model_info

        info = read_model_info(weights)
        static = info.input_shape[2:] if all(info.input_shape[2:]) else None
        if imgsz is not None and static is not None and tuple(static) != (imgsz, imgsz):
            raise DroneVisionError(
                f"weights {weights} take {static[1]}x{static[0]} images (a static ONNX input) but model.imgsz={imgsz} "
                "was asked for: export with export.dynamic=true or leave model.imgsz unset"
            )
    return weights


def dataset_path(given: Any, weights: Path | None) -> tuple[Path, str]:
    """The dataset to score on and where it came from: ``dataset.path`` when given, else the dataset ``weights``
    were trained on (:func:`dronevision.infer.model.training_dataset`), said in one log line.

    Raises:
        DroneVisionError: no ``dataset.path`` and no training dataset that still exists (or no weights to ask).
    """
    from dronevision.infer.model import training_dataset

    if given not in (None, ""):
        return Path(str(given)), "dataset.path"
    if weights is None:
        raise DroneVisionError("dataset.path is required with predictions=: give dataset.path=<folder or data.yaml>")
    found = training_dataset(weights)
    if found is None:
        raise DroneVisionError(
            f"dataset.path is required: {weights} names no training dataset that still exists;"
            " give dataset.path=<folder>"
        )
    path, source = found
    log.info("dataset.path not given: using %s, the dataset %s was trained on (from %s)", path, weights.name, source)
    return path, source


def load_evaluation_detector(weights: Path, model: Mapping[str, Any], *, threads: int | None, **overrides: Any) -> Any:
    """A detector with an evaluation's ``model`` settings (``configs/evaluate.yaml``: runtime, imgsz, conf, iou,
    max_det, device, precision); ``overrides`` take precedence."""
    from dronevision.infer import load_detector

    settings = {
        "runtime": str(model["runtime"]),
        "imgsz": int(model["imgsz"]) if model.get("imgsz") else None,
        "conf": float(model["conf"]),
        "iou": float(model["iou"]),
        "max_det": int(model["max_det"]),
        "device": model.get("device"),
        "precision": model.get("precision"),
        **overrides,
    }
    return load_detector(weights, threads=threads, **settings)


def predict(
    detector: Any, truth: GroundTruth, *, settings: SliceSettings, batch: int, progress: bool = True
) -> tuple[list[Detections], float]:
    """Detections per image of ``truth`` (plain or sliced inference, :func:`dronevision.infer.predict_images`) with
    the dataset's class ids; returns them and the seconds spent per image."""
    from dronevision.infer import predict_images

    started = time.perf_counter()
    raw = list(predict_images(detector, truth.images, settings=settings, batch=batch, progress=progress))
    seconds = (time.perf_counter() - started) / max(len(truth.images), 1)
    return [to_dataset_ids(d, detector.names, truth.names) for d in raw], seconds


def default_model_settings() -> dict[str, Any]:
    """``configs/evaluate.yaml``'s ``model`` block: the detector settings every evaluation uses unless told
    otherwise (the evaluation after training and ``compare`` too, so that their numbers are the command's)."""
    from dronevision.cli import CONFIG_DIR

    return dict(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "evaluate.yaml").model, resolve=True))


def evaluate_checkpoint(
    weights: Path,
    data_yaml: Path,
    *,
    split: str,
    imgsz: int,
    batch: int,
    device: str | None,
    out_dir: Path,
    plots: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """ultralytics' metrics and the COCO protocol's of one checkpoint on one split of a built dataset: the same
    detector settings, predictions and scoring as ``python -m dronevision.evaluate protocol=coco``."""
    from dronevision.evaluate.core import ultralytics_metrics

    ours = ultralytics_metrics(
        weights, data_yaml, split=split, imgsz=imgsz, batch=batch, device=device, out_dir=out_dir, plots=plots
    )
    truth = load_ground_truth(data_yaml, split)
    model = default_model_settings()
    detector = load_evaluation_detector(weights, model, threads=threads, runtime="torch", imgsz=imgsz, device=device)
    predictions, _ = predict(detector, truth, settings=SliceSettings(), batch=batch, progress=False)
    coco = compute_metrics("coco", truth, predictions)["overall"]
    log.info(
        "COCO AP %s AP50 %s | ultralytics mAP50-95 %.4f mAP50 %.4f",
        coco["AP"],
        coco["AP50"],
        ours["map50_95"],
        ours["map50"],
    )
    return {"split": split, "n_images": len(truth.images), "ultralytics": ours, "coco": coco}


def model_imgsz(detector: Any) -> int:
    """The square size a detector runs at: an ONNX file's input, a checkpoint's training size."""
    if hasattr(detector, "imgsz_hw"):
        return int(detector.imgsz_hw[0])
    imgsz = detector._kwargs.get("imgsz") or detector.model.overrides.get("imgsz", 640)
    return int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)


def to_dataset_ids(det: Detections, model_names: Mapping[int, str], truth_names: Mapping[int, str]) -> Detections:
    """Model class ids renumbered to the dataset's, by class name; classes the dataset lacks are dropped."""
    by_name = {n: i for i, n in truth_names.items()}
    mapping = {m: by_name.get(n, -1) for m, n in model_names.items()}
    ids = np.array([mapping.get(int(c), -1) for c in det.class_id], dtype=np.int64)
    kept = det[ids >= 0]
    return Detections(kept.xyxy, ids[ids >= 0], kept.confidence)


# --- metrics ---------------------------------------------------------------------------------------------------


def compute_metrics(protocol: str, truth: GroundTruth, predictions: Sequence[Detections]) -> dict[str, Any]:
    """One protocol's ``{"overall", "per_class", "pr"}`` for these predictions."""
    from dronevision.evaluate.core import coco_detections, coco_ground_truth
    from dronevision.evaluate.protocols import VisDroneImage, coco_protocol, visdrone_protocol

    scored = {i: n for i, n in truth.names.items() if n not in UNSCORED}
    if protocol == "coco":
        keep = [b.filter(classes=scored) for b in truth.boxes]
        gt = coco_ground_truth([(p.name, wh, b) for p, wh, b in zip(truth.images, truth.sizes, keep)], scored)
        return coco_protocol(gt, coco_detections(predictions))
    images = [
        VisDroneImage(wh=wh, gt=gt, ignore_regions=ign, det=det)
        for wh, gt, ign, det in zip(truth.sizes, truth.boxes, truth.ignored, predictions)
    ]
    return visdrone_protocol(images, truth.names)


# --- MLflow ----------------------------------------------------------------------------------------------------


def _track(cfg: DictConfig, weights: Path | None, out_dir: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Log the evaluation to the model's MLflow training run when known, else to a new run; returns summary.json's
    ``mlflow`` block."""
    from dronevision.mlflow_run import MlflowRun, find_training_run, flatten, limits

    found = find_training_run(weights) if weights is not None else None
    if found is not None:
        tracker, own = MlflowRun.attach(found.tracking_uri, found.run_id, out_dir=out_dir, **limits(cfg.mlflow)), False
    else:
        tracker = MlflowRun.from_config(cfg.mlflow, out_dir)
        tracker.start(tags={"dronevision.stage": "evaluate"})
        own = True
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
    prefix = "eval" if own else f"eval/{cfg.dataset.split}"
    for protocol in PROTOCOLS:
        if protocol in metrics:
            overall = {k: v for k, v in metrics[protocol]["overall"].items() if v is not None}
            tracker.log_metrics({f"{prefix}/{protocol}/{k}": v for k, v in overall.items()})
    tracker.log_metrics(altitude_mlflow_metrics(metrics.get("altitude"), prefix))
    for path in sorted(out_dir.glob("*.png")) + [out_dir / "metrics.json"]:
        tracker.log_artifact(path, "evaluate")
    if own:
        tracker.end("FINISHED")
    return tracker.summary(attached_to_model_run=not own)


# --- command ---------------------------------------------------------------------------------------------------


def _pictures(cfg: DictConfig, truth: GroundTruth, predictions: Sequence[Detections], metrics: dict, out: Path) -> list:
    from dronevision.evaluate import pictures as pic

    names = [truth.names[i] for i in sorted(truth.names)]
    written = []
    for protocol in PROTOCOLS:
        if protocol in metrics:
            written.append(
                pic.plot_pr_curves(
                    metrics[protocol]["pr"],
                    out / f"pr_{protocol}.png",
                    title=f"precision-recall at IoU 0.5 ({protocol} protocol)",
                )
            )
    pairs = list(zip(truth.boxes, predictions))
    conf, iou = float(cfg.pictures.conf), float(cfg.pictures.iou)
    matrix = pic.confusion_matrix(pairs, len(names), conf=conf, iou=iou)
    written.append(pic.plot_confusion_matrix(matrix, names, out / "confusion_matrix.png", conf=conf, iou=iou))
    header = ["class", "boxes"] + [f"{p} {k}" for p in PROTOCOLS if p in metrics for k in ("AP", "AP50", "AP75")]
    counts = {i: int(sum((b.class_id == i).sum() for b in truth.boxes)) for i in truth.names}
    rows = []
    for i, name in sorted(truth.names.items()):
        row: list[Any] = [name, counts[i]]
        for p in PROTOCOLS:
            if p in metrics:
                per = metrics[p]["per_class"].get(name) or {}
                row += [per.get(k) if per.get(k) is not None else "-" for k in ("AP", "AP50", "AP75")]
        rows.append(row)
    written.append(pic.plot_class_table(rows, header, out / "per_class.png", title="per-class AP"))
    worst = pic.worst_images(pairs, k=int(cfg.pictures.worst), conf=conf, iou=iou)
    items = [
        (truth.images[i], truth.boxes[i], predictions[i], f"{truth.images[i].name}: {fp} FP, {fn} missed")
        for i, fp, fn in worst
    ]
    written.append(pic.draw_gallery(items, out / "worst_images.png", conf=conf, iou=iou))
    return [str(p) for p in written]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate; returns summary.json's content."""
    from dronevision.evaluate.results_io import read_predictions, write_coco_results, write_visdrone_results

    started = time.perf_counter()
    out_dir = resolve_out_dir(cfg)
    protocols = check_protocols(
        OmegaConf.to_container(cfg.protocol) if not isinstance(cfg.protocol, str) else cfg.protocol
    )
    if isinstance(cfg.predictions, str):  # `predictions=<path>` composed without the command's rewrite
        cfg.predictions = {"path": cfg.predictions, "format": None}
    weights, pred_path = cfg.weights, cfg.predictions.path
    if (weights is None) == (pred_path is None):
        raise DroneVisionError("give exactly one of weights=<.pt|.onnx> or predictions=<folder|results .json>")
    if cfg.predictions.format not in (None, "visdrone", "coco"):
        raise DroneVisionError(f"predictions.format '{cfg.predictions.format}' is not one of visdrone, coco")
    slicing = SliceSettings.from_config(cfg.slicing)
    if slicing.merge == "nmm" and (slicing.enabled or slicing.scaling) and float(cfg.model.conf) < 0.1:
        log.warning(
            "slicing.merge=nmm at model.conf %s: NMM unites each box with the weak boxes around it and mAP collapses"
            " (docs/evaluate.md, 'Sliced inference'); the default is slicing.merge=nms slicing.match=iou",
            cfg.model.conf,
        )
    scales = check_scales(cfg.get("scales"), with_weights=weights is not None)
    known_gsd = cfg.get("scales_known_gsd", False)
    if not isinstance(known_gsd, bool):
        raise DroneVisionError(f"scales_known_gsd must be true or false, got {known_gsd!r}")
    if weights is not None:
        weights = check_weights(Path(weights), int(cfg.model.imgsz) if cfg.model.imgsz else None)
    given = None if OmegaConf.is_missing(cfg.dataset, "path") else cfg.dataset.path
    data_path, data_source = dataset_path(given, weights)
    cfg.dataset.path = str(data_path)  # the rest of the run (and its MLflow params) reads the path actually used
    truth = load_ground_truth(data_path, cfg.dataset.split)
    threads = int(cfg.threads or os.cpu_count() or 1)
    detector, seconds_per_image = None, None
    if weights is not None:
        detector = load_evaluation_detector(weights, cfg.model, threads=threads)
        check_same_classes(detector.names, weights, truth)
        predictions, seconds_per_image = predict(detector, truth, settings=slicing, batch=int(cfg.model.batch))
    else:
        predictions = read_predictions(Path(pred_path), truth.images, truth.names)

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {p: compute_metrics(p, truth, predictions) for p in protocols}
    if weights is not None and cfg.ultralytics.enabled and truth.data_yaml is not None:
        from dronevision.dataset import load_yolo_dataset, write_data_yaml
        from dronevision.evaluate.core import ultralytics_metrics

        data_yaml = write_data_yaml(load_yolo_dataset(truth.data_yaml), out_dir / "data" / "data.yaml")
        ours = ultralytics_metrics(
            weights.parent if weights.suffix == ".xml" else weights,  # ultralytics opens an IR by its folder
            data_yaml,
            split=cfg.dataset.split,
            imgsz=model_imgsz(detector),
            batch=int(cfg.model.batch),
            device=cfg.model.device,
            out_dir=out_dir / "ultralytics",
            plots=False,
            rect=False if weights.suffix in (".onnx", ".xml") else None,
        )
        reference = metrics.get("coco", metrics[protocols[0]])["overall"]
        metrics["ultralytics"] = {
            **ours,
            "minus_ours": {
                "map50": ours["map50"] - (reference["AP50"] or 0.0),
                "map50_95": ours["map50_95"] - (reference["AP"] or 0.0),
            },
        }
    if scales:  # the altitude shift: the same model on zoomed variants of the split
        kw = {"detector": detector, "settings": slicing, "batch": int(cfg.model.batch), "coco": metrics.get("coco")}
        metrics["altitude"] = evaluate_altitude(scales, truth, predictions, out_dir=out_dir, known_gsd=known_gsd, **kw)
    metrics["n_images"] = len(truth.images)
    metrics["seconds_per_image"] = seconds_per_image
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n")
    written_predictions = None
    if cfg.predictions.format == "visdrone":
        written_predictions = str(
            write_visdrone_results(out_dir / "predictions", truth.images, predictions, truth.names)
        )
    elif cfg.predictions.format == "coco":
        written_predictions = str(
            write_coco_results(out_dir / "predictions.json", truth.images, predictions, truth.names)
        )
    pictures = _pictures(cfg, truth, predictions, metrics, out_dir) if cfg.pictures.enabled else []
    mlflow = _track(cfg, weights, out_dir, metrics)
    summary = {
        "weights": str(weights) if weights is not None else None,
        "predictions": str(pred_path) if pred_path is not None else None,
        "dataset": {
            "path": str(truth.source),
            "path_from": data_source,
            "kind": truth.kind,
            "split": cfg.dataset.split,
            "n_images": len(truth.images),
            "classes": scored_names(truth.names),
        },
        "protocols": protocols,
        "slicing": bool(cfg.slicing.enabled) and weights is not None,
        "metrics": {p: metrics[p]["overall"] for p in protocols},
        "ultralytics": metrics.get("ultralytics"),
        "altitude": metrics.get("altitude"),
        "seconds_per_image": seconds_per_image,
        "metrics_json": str(out_dir / "metrics.json"),
        "pictures": pictures,
        "predictions_written": written_predictions,
        "mlflow": mlflow,
        "out_dir": str(out_dir),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_summary(out_dir, summary)
    _print_summary(summary)
    return summary


def _print_summary(summary: Mapping[str, Any]) -> None:
    lines = [f"dronevision evaluate: {summary['dataset']['n_images']} images in {summary['seconds']:.0f} s"]
    for protocol, m in summary["metrics"].items():
        parts = "  ".join(
            f"{k} {v:.3f}"
            for k, v in m.items()
            if v is not None and k in ("AP", "AP50", "AP75", "AP_small", "AR_500", "AR_100")
        )
        lines.append(f"  {protocol:<9}{parts}")
    if summary["ultralytics"]:
        u = summary["ultralytics"]
        lines.append(
            f"  ultralytics mAP50 {u['map50']:.3f}  mAP50-95 {u['map50_95']:.3f}  "
            f"(minus ours: {u['minus_ours']['map50']:+.3f} / {u['minus_ours']['map50_95']:+.3f})"
        )
    for z, m in ((summary.get("altitude") or {}).get("per_scale") or {}).items():
        lines.append(f"  altitude {z}x: mAP50 {m['map50'] or 0:.3f}  mAP50-95 {m['map50_95'] or 0:.3f}")
    lines.append(f"  metrics  {summary['metrics_json']}")
    if summary["mlflow"]["ok"]:
        lines.append(f"  mlflow   run {summary['mlflow']['run_id']}")
    print("\n".join(lines))


def _rewrite(overrides: list[str]) -> list[str]:
    """``predictions=<path>`` is the path of ``predictions``; its other keys stay reachable as ``predictions.*``."""
    return [f"predictions.path={o.partition('=')[2]}" if o.startswith("predictions=") else o for o in overrides]


main = hydra_main("evaluate", run, _rewrite, may_be_missing=("dataset.path",))  # run finds it from the weights
