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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

PROTOCOLS = ("coco", "visdrone")
NOT_SCORED = ("others", "ignored regions", "ignored")


# --- ground truth ----------------------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """The images scored, their boxes (class ids are positions in ``names``) and ignored regions."""

    source: Path
    kind: str  # "dataset" (built YOLO dataset) or "visdrone-det" (images/ + annotations/)
    names: dict[int, str]
    images: list[Path]
    sizes: list[tuple[int, int]]
    boxes: list[Detections]
    ignored: list[np.ndarray]
    data_yaml: Path | None = None


def check_protocols(protocol: Any) -> list[str]:
    """``coco``, ``visdrone`` or a list of them.

    Examples:
        >>> check_protocols("coco"), check_protocols(["coco", "visdrone"])
        (['coco'], ['coco', 'visdrone'])
        >>> check_protocols("voc")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: protocol 'voc' is not one of coco, visdrone
    """
    chosen = [protocol] if isinstance(protocol, str) else list(protocol)
    for p in chosen:
        if p not in PROTOCOLS:
            raise DroneVisionError(f"protocol '{p}' is not one of {', '.join(PROTOCOLS)}")
    if not chosen:
        raise DroneVisionError("protocol: name at least one of coco, visdrone")
    return chosen


def scored_names(names: Mapping[int, str]) -> list[str]:
    """Class names in id order, without the ones no protocol scores (``others``, ignored regions).

    Examples:
        >>> scored_names({0: "car", 1: "others", 2: "van"})
        ['car', 'van']
    """
    return [n for _, n in sorted(names.items()) if n not in NOT_SCORED]


def check_same_classes(model_names: Mapping[int, str], model: Path, truth: GroundTruth) -> None:
    """Refuse weights whose classes are not the dataset's, naming both lists."""
    ours, theirs = scored_names(model_names), scored_names(truth.names)
    if ours != theirs:
        raise DroneVisionError(
            f"weights {model} have classes {ours} but dataset {truth.source} has {theirs}: evaluate a model on "
            "data labelled with its own classes"
        )


def load_ground_truth(path: Path, split: str) -> GroundTruth:
    """A built dataset's split, or a raw VisDrone-DET folder, as :class:`GroundTruth`."""
    from dronevision.evaluate.ground_truth import load_dataset_ground_truth, load_visdrone_det_ground_truth

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DroneVisionError(f"dataset path {path} does not exist")
    raw = path.is_dir() and not (path / "data.yaml").is_file()
    if raw and (path / "annotations").is_dir() and (path / "images").is_dir():
        items, names = load_visdrone_det_ground_truth(path)
        kind, data_yaml = "visdrone-det", None
    else:
        items, names, data_yaml = load_dataset_ground_truth(path, split)
        kind = "dataset"
    if not items:
        raise DroneVisionError(f"dataset {path}: the {split if kind == 'dataset' else 'images'} split holds no images")
    return GroundTruth(
        source=path,
        kind=kind,
        names=dict(names),
        images=[Path(i[0]) for i in items],
        sizes=[tuple(i[1]) for i in items],
        boxes=[i[2] for i in items],
        ignored=[np.asarray(i[3], dtype=float).reshape(-1, 4) for i in items],
        data_yaml=data_yaml,
    )


# --- predictions -----------------------------------------------------------------------------------------------


def check_weights(weights: Path, imgsz: int | None) -> Path:
    """A .pt, .onnx or OpenVINO .xml (or IR folder) that exists; a static input size other than ``imgsz`` is
    refused."""
    from dronevision.infer.runtime import ir_xml

    weights = ir_xml(Path(weights).expanduser().resolve())
    if not weights.is_file():
        raise DroneVisionError(f"weights {weights} does not exist")
    if weights.suffix not in (".pt", ".onnx", ".xml"):
        raise DroneVisionError(f"weights {weights} is neither a .pt, an .onnx nor an OpenVINO .xml file")
    if weights.suffix in (".onnx", ".xml"):
        from dronevision.infer.runtime import read_model_info

        info = read_model_info(weights)
        static = info.input_shape[2:] if all(info.input_shape[2:]) else None
        if imgsz is not None and static is not None and tuple(static) != (imgsz, imgsz):
            raise DroneVisionError(
                f"weights {weights} take {static[1]}x{static[0]} images (a static ONNX input) but model.imgsz={imgsz} "
                "was asked for: export with export.dynamic=true or leave model.imgsz unset"
            )
    return weights


def predict_images(detector: Any, images: Sequence[Path], cfg: DictConfig) -> tuple[list[Detections], float]:
    """Detections per image (plain or sliced inference); returns them and the seconds spent per image."""
    import cv2

    from dronevision.infer import sliced_predict

    s = cfg.slicing
    out: list[Detections] = []
    started = time.perf_counter()
    batch = int(cfg.model.batch)
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)] if not s.enabled else [[p] for p in images]
    for chunk in tqdm(chunks, desc="evaluate", unit="batch" if not s.enabled else "image", disable=len(images) < 20):
        frames = []
        for p in chunk:
            frame = cv2.imread(str(p))
            if frame is None:
                raise DroneVisionError(f"{p}: cannot be read as an image")
            frames.append(frame)
        if s.enabled:
            out.append(
                sliced_predict(
                    detector,
                    frames[0],
                    tile=int(s.tile),
                    overlap=float(s.overlap),
                    batch=int(s.batch),
                    full_frame=bool(s.full_frame),
                    merge=str(s.merge),
                    match=str(s.match),
                    match_threshold=float(s.match_threshold),
                    class_agnostic=bool(s.class_agnostic),
                )
            )
        else:
            out.extend(detector.predict(frames, batch=batch))
    return out, (time.perf_counter() - started) / max(len(images), 1)


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
    keep = ids >= 0
    return Detections(det.xyxy[keep], ids[keep], None if det.confidence is None else det.confidence[keep])


# --- metrics ---------------------------------------------------------------------------------------------------


def compute_metrics(protocol: str, truth: GroundTruth, predictions: Sequence[Detections]) -> dict[str, Any]:
    """One protocol's ``{"overall", "per_class", "pr"}`` for these predictions."""
    from dronevision.evaluate.core import coco_detections, coco_ground_truth
    from dronevision.evaluate.protocols import VisDroneImage, coco_protocol, visdrone_protocol

    scored = {i: n for i, n in truth.names.items() if n not in NOT_SCORED}
    if protocol == "coco":
        keep = [
            Detections(b.xyxy[np.isin(b.class_id, list(scored))], b.class_id[np.isin(b.class_id, list(scored))])
            for b in truth.boxes
        ]
        gt = coco_ground_truth([(p.name, wh, b) for p, wh, b in zip(truth.images, truth.sizes, keep)], scored)
        return coco_protocol(gt, coco_detections(predictions))
    images = [
        VisDroneImage(wh=wh, gt=gt, ignore_regions=ign, det=det)
        for wh, gt, ign, det in zip(truth.sizes, truth.boxes, truth.ignored, predictions)
    ]
    return visdrone_protocol(images, truth.names)


# --- MLflow ----------------------------------------------------------------------------------------------------


def model_run(weights: Path | None) -> tuple[str | None, str | None]:
    """The MLflow run a model came from: its ONNX metadata, or the training/export folder it sits in."""
    from dronevision.benchmark.core import mlflow_ref_from_metadata, mlflow_ref_from_summary

    if weights is None:
        return None, None
    if weights.suffix == ".onnx":
        from dronevision.infer.runtime import read_model_info

        run_id, uri = mlflow_ref_from_metadata(read_model_info(weights).metadata)
        if run_id and uri:
            return run_id, uri
    for folder in list(weights.parents)[:4]:
        record = folder / "mlflow_run.json"
        if record.is_file():
            data = json.loads(record.read_text())
            return data.get("run_id"), data.get("tracking_uri")
        summary = folder / "summary.json"
        if summary.is_file():
            try:
                run_id, uri = mlflow_ref_from_summary(json.loads(summary.read_text()))
            except ValueError:
                continue
            if run_id and uri:
                return run_id, uri
    return None, None


def _track(cfg: DictConfig, weights: Path | None, out_dir: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Log the evaluation to the model's MLflow run when known, else to a new run; returns the reference."""
    from dronevision.mlflow_run import MlflowRun, flatten

    run_id, uri = model_run(weights)
    if run_id and uri:
        tracker, own = MlflowRun.attach(uri, run_id), False
    else:
        tracker = MlflowRun(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.get("run_name"))
        tracker.start(tags={"dronevision.stage": "evaluate"})
        own = True
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
    prefix = "eval" if own else f"eval/{cfg.dataset.split}"
    for protocol in PROTOCOLS:
        if protocol in metrics:
            overall = {k: v for k, v in metrics[protocol]["overall"].items() if v is not None}
            tracker.log_metrics({f"{prefix}/{protocol}/{k}": v for k, v in overall.items()})
    for path in sorted(out_dir.glob("*.png")) + [out_dir / "metrics.json"]:
        tracker.log_artifact(path, "evaluate")
    if own:
        tracker.end("FINISHED")
    return {
        "run_id": tracker.run_id,
        "tracking_uri": tracker.tracking_uri,
        "ok": tracker.active,
        "error": tracker.error,
        "attached_to_model_run": not own,
    }


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
    truth = load_ground_truth(Path(cfg.dataset.path), cfg.dataset.split)
    threads = int(cfg.threads or os.cpu_count() or 1)
    detector, seconds_per_image = None, None
    if weights is not None:
        from dronevision.infer import load_detector

        imgsz = int(cfg.model.imgsz) if cfg.model.imgsz else None
        weights = check_weights(Path(weights), imgsz)
        detector = load_detector(
            weights,
            runtime=str(cfg.model.runtime),
            imgsz=imgsz,
            conf=float(cfg.model.conf),
            iou=float(cfg.model.iou),
            max_det=int(cfg.model.max_det),
            threads=threads,
            device=cfg.model.device,
            precision=cfg.model.get("precision"),
        )
        check_same_classes(detector.names, weights, truth)
        raw, seconds_per_image = predict_images(detector, truth.images, cfg)
        predictions = [to_dataset_ids(d, detector.names, truth.names) for d in raw]
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
    metrics["n_images"] = len(truth.images)
    metrics["seconds_per_image"] = seconds_per_image
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
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
            "kind": truth.kind,
            "split": cfg.dataset.split,
            "n_images": len(truth.images),
            "classes": scored_names(truth.names),
        },
        "protocols": protocols,
        "slicing": bool(cfg.slicing.enabled) and weights is not None,
        "metrics": {p: metrics[p]["overall"] for p in protocols},
        "ultralytics": metrics.get("ultralytics"),
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
    lines.append(f"  metrics  {summary['metrics_json']}")
    if summary["mlflow"]["ok"]:
        lines.append(f"  mlflow   run {summary['mlflow']['run_id']}")
    print("\n".join(lines))


def _rewrite(overrides: list[str]) -> list[str]:
    """``predictions=<path>`` is the path of ``predictions``; its other keys stay reachable as ``predictions.*``."""
    return [f"predictions.path={o.partition('=')[2]}" if o.startswith("predictions=") else o for o in overrides]


main = hydra_main("evaluate", run, _rewrite)
