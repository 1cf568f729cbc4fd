"""``python -m dronevision.export weights=<.pt>``: FP32 / FP16 / INT8 ONNX, checked against PyTorch and on mAP.

Tests call :func:`run`; :func:`main` is the Hydra entry point (``configs/export.yaml``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.dataset import YoloDataset, load_yolo_dataset, write_data_yaml
from dronevision.errors import DroneVisionError
from dronevision.export.convert import (
    export_onnx,
    file_size,
    max_abs_diff,
    onnx_outputs,
    openvino_outputs,
    to_fp16,
    to_int8,
    torch_outputs,
)
from dronevision.export.core import (
    check_export_settings,
    comparable_outputs,
    format_summary,
    int8_accepted,
    map50_drop_points,
    score_part,
    spread_indices,
)
from dronevision.export.openvino import to_openvino_int8
from dronevision.infer.model import (
    load_checkpoint,
    read_metadata,
    read_metadata_props,
    training_dataset,
    training_object_size,
)
from dronevision.infer.yolo import letterbox_image, read_letterboxed
from dronevision.mlflow_run import MlflowRun, RunRef, find_training_run

log = logging.getLogger(__name__)

FILES = {
    "fp32": "model_fp32.onnx",
    "fp16": "model_fp16.onnx",
    "int8": "model_int8.onnx",
    # ultralytics recognises an OpenVINO export by this ending of the folder's name
    "int8_openvino": "model_int8_openvino_model",
}
INT8_VARIANTS = ("int8", "int8_openvino")
PARITY_IMAGES = 4  # images whose raw outputs are compared with PyTorch's
VAL_BATCH = 16  # for the .pt and dynamic-batch ONNX; static ONNX files run at batch 1


@dataclass(frozen=True)
class Plan:
    """Everything checked before anything is written."""

    weights: Path
    imgsz: int
    calibration: YoloDataset | None
    parity: YoloDataset | None
    threads: int
    calibration_from: str | None = None  # export.calibration, or the record naming the training dataset used


# --- checks ----------------------------------------------------------------------------------------------------


def _dataset(path: Any, key: str) -> YoloDataset | None:
    if not path:
        return None
    where = Path(str(path)).expanduser().resolve()
    if not where.exists():
        raise DroneVisionError(f"{key} {where} does not exist")
    return load_yolo_dataset(where)


def _checkpoint_imgsz_stride(weights: Path) -> tuple[int, int]:
    """The checkpoint's training imgsz and its largest stride; a file that is no detector's checkpoint is a user
    error (:func:`dronevision.infer.model.load_checkpoint`)."""
    model = load_checkpoint(weights)
    imgsz = (model.ckpt or {}).get("train_args", {}).get("imgsz", 640)
    return int(imgsz if isinstance(imgsz, int) else max(imgsz)), int(model.model.stride.max())


def _calibration_from(export: dict[str, Any], weights: Path) -> str | None:
    """Where INT8 calibration images come from: ``export.calibration``, else the dataset the weights were trained on
    (said in one log line; it is set as ``export["calibration"]``). None without INT8, or without a training dataset
    that still exists (which :func:`check_export_settings` then refuses)."""
    if export["calibration"]:
        return "export.calibration"
    if not (export.get("int8") or export.get("openvino_int8")):
        return None
    found = training_dataset(weights)
    if found is None:
        return None
    path, source = found
    log.info(
        "export.calibration not given: using %s, the dataset %s was trained on (from %s)", path, weights.name, source
    )
    export["calibration"] = str(path)
    return source


def check_inputs(cfg: DictConfig) -> Plan:
    """Check weights, settings and datasets; raise :class:`DroneVisionError` with one line on the first problem."""
    if not cfg.weights:
        raise DroneVisionError("weights=<checkpoint .pt> is required")
    weights = Path(str(cfg.weights)).expanduser().resolve()
    if not weights.is_file():
        raise DroneVisionError(f"weights {weights} does not exist")
    if weights.suffix != ".pt":
        raise DroneVisionError(f"weights {weights} is not a .pt checkpoint")
    export = OmegaConf.to_container(cfg.export, resolve=True)
    calibration_from = _calibration_from(export, weights)
    check_export_settings(export)
    calibration = _dataset(export["calibration"], "export.calibration")
    parity = _dataset(export["parity_dataset"], "export.parity_dataset") or calibration
    if parity is not None and export["parity_split"] not in parity.splits:
        raise DroneVisionError(
            f"export.parity_split '{export['parity_split']}' is not a split of {parity.yaml_path}"
            f" (splits: {', '.join(parity.splits)})"
        )
    trained_imgsz, stride = _checkpoint_imgsz_stride(weights)
    imgsz = export["imgsz"] or trained_imgsz
    if imgsz % stride:
        raise DroneVisionError(f"export.imgsz {imgsz} is not a multiple of the model's stride {stride}")
    return Plan(weights, imgsz, calibration, parity, int(cfg.threads or os.cpu_count() or 1), calibration_from)


# --- I/O adapters ----------------------------------------------------------------------------------------------


def square_metrics(weights: Path, data_yaml: Path, *, split: str, imgsz: int, out_dir: Path) -> dict[str, float]:
    """ultralytics' validation of a .pt or .onnx on CPU, every image letterboxed to ``imgsz`` squared.

    :func:`dronevision.evaluate.ultralytics_metrics` validates a .pt on rectangular batches, which ONNX files of a
    fixed input shape cannot use; that protocol difference alone moved mAP50 by 0.3 points on the aerial-cars
    model. Here the .pt runs on the same square inputs as the ONNX files, so a drop is the conversion's.
    ultralytics' AutoBackend runs FP16 (float32 inputs) and INT8 QDQ graphs on the CPU execution provider.
    """
    from dronevision.evaluate import ultralytics_metrics

    return ultralytics_metrics(
        weights,
        data_yaml,
        split=split,
        imgsz=imgsz,
        batch=VAL_BATCH,
        device="cpu",
        out_dir=out_dir,
        plots=False,
        rect=False,
    )


def _log_to_training_run(found: RunRef | None, out_dir: Path, summary: dict[str, Any]) -> MlflowRun | None:
    """Add the export's numbers and files to the training's MLflow run, when the weights' run is known."""
    if found is None:
        error = "no training run found (no mlflow_run.json or training summary.json up to 3 folders above the weights)"
        summary["mlflow"] = MlflowRun.untracked(error)
        return None
    tracker = MlflowRun.attach(found.tracking_uri, found.run_id, out_dir=out_dir)
    folder = f"export/{out_dir.name}"
    metrics = {f"export/pt/{k}": v for k, v in (summary["pt_metrics"] or {}).items()}
    for name, variant in summary["variants"].items():
        metrics.update(
            {f"export/{name}/{k}": variant[k] for k in ("size_mb", "max_abs_diff", "map50", "map50_95", "map50_drop")}
        )
        if variant["path"]:
            path = Path(variant["path"])
            tracker.log_artifact(path, f"{folder}/{path.name}" if path.is_dir() else folder)
    tracker.log_metrics({k: v for k, v in metrics.items() if v is not None})
    summary["mlflow"] = tracker.summary()
    return tracker


# --- entry point -----------------------------------------------------------------------------------------------


def _export_variants(
    plan: Plan, ex: DictConfig, out_dir: Path, run: RunRef | None
) -> tuple[dict[str, Path], dict[str, Any] | None]:
    """FP32 always; FP16 and INT8 when asked. Returns their paths and the INT8 settings (None without INT8).

    Every variant's metadata names the training's MLflow ``run`` when it is known: the FP32 file's metadata is
    copied to the others (and into the OpenVINO IR's metadata.yaml).
    """
    paths = {
        "fp32": export_onnx(
            plan.weights,
            imgsz=plan.imgsz,
            opset=ex.opset,
            dynamic=ex.dynamic,
            simplify=ex.simplify,
            out=out_dir / FILES["fp32"],
            metadata={**(run.metadata() if run else {}), **training_object_size(plan.weights)} or None,
        )
    }
    if ex.half:
        paths["fp16"] = to_fp16(paths["fp32"], out_dir / FILES["fp16"])
    if not (ex.int8 or ex.openvino_int8):
        return paths, None
    assert plan.calibration is not None  # check_inputs made sure
    train_images = sorted(plan.calibration.splits["train"])
    chosen = [train_images[i] for i in spread_indices(len(train_images), ex.calibration_images)]
    settings: dict[str, Any] = {"dataset": str(plan.calibration.yaml_path), "dataset_from": plan.calibration_from}
    if ex.int8:
        paths["int8"] = out_dir / FILES["int8"]
        settings.update(to_int8(paths["fp32"], paths["int8"], chosen, imgsz=plan.imgsz))
    if ex.openvino_int8:
        props = read_metadata_props(paths["fp32"])
        xml, ov_settings = to_openvino_int8(
            paths["fp32"], out_dir / FILES["int8_openvino"], chosen, imgsz=plan.imgsz, metadata=props
        )
        paths["int8_openvino"] = xml.parent
        settings["openvino"] = ov_settings
    return paths, settings


def _parity_inputs(plan: Plan, split: str) -> tuple[list[str], list[np.ndarray]]:
    """A few images spread over the parity split, letterboxed; one fixed noise image without a dataset."""
    if plan.parity is None:
        noise = np.random.default_rng(0).integers(0, 256, (plan.imgsz, plan.imgsz, 3), dtype=np.uint8)
        return ["fixed noise (seed 0)"], [letterbox_image(noise, imgsz=plan.imgsz)]
    images = sorted(plan.parity.splits[split])
    chosen = [images[i] for i in spread_indices(len(images), PARITY_IMAGES)]
    return [str(p) for p in chosen], [read_letterboxed(p, imgsz=plan.imgsz) for p in chosen]


def _compare_outputs(plan: Plan, paths: dict[str, Path], inputs: list[np.ndarray]) -> tuple[dict[str, Any], float]:
    """Per variant: path, size and how far its raw outputs are from PyTorch's; and PyTorch's largest |output|."""
    reference = torch_outputs(plan.weights, inputs)
    variants = {}
    for name, path in paths.items():
        outputs = (
            openvino_outputs(path, inputs, threads=plan.threads)
            if path.is_dir()
            else onnx_outputs(path, inputs, threads=plan.threads)
        )
        end2end = bool(read_metadata(path).get("end2end", False))  # final detections, compared as such
        ref, out = comparable_outputs(reference, outputs, end2end=end2end)
        diff = max_abs_diff(ref, out)
        score_diff = max_abs_diff(*([score_part(y, end2end=end2end) for y in ys] for ys in (ref, out)))
        log.info("%s: max |runtime - PyTorch| = %.3g (class scores: %.3g)", name, diff, score_diff)
        variants[name] = {
            "path": str(path),
            "size_mb": round(file_size(path) / 1e6, 3),
            "max_abs_diff": diff,
            "max_score_diff": score_diff,
        }
    return variants, max(float(np.abs(y).max()) for y in reference)


def _evaluate(
    plan: Plan, paths: dict[str, Path], variants: dict[str, Any], *, split: str, out_dir: Path
) -> dict[str, float] | None:
    """mAP50 and mAP50-95 of the .pt and every variant on the parity split; the .pt's metrics (None: no data)."""
    pt_metrics = None
    if plan.parity is not None:
        data_yaml = write_data_yaml(plan.parity, out_dir / "data" / "data.yaml")
        pt_metrics = square_metrics(
            plan.weights, data_yaml, split=split, imgsz=plan.imgsz, out_dir=out_dir / "val" / "pt"
        )
        for name, path in paths.items():
            m = square_metrics(path, data_yaml, split=split, imgsz=plan.imgsz, out_dir=out_dir / "val" / name)
            variants[name].update(map50=m["map50"], map50_95=m["map50_95"])
            log.info("%s: mAP50 %.4f mAP50-95 %.4f (.pt: %.4f)", name, m["map50"], m["map50_95"], pt_metrics["map50"])
    for variant in variants.values():
        variant.setdefault("map50", None)
        variant.setdefault("map50_95", None)
        variant["map50_drop"] = map50_drop_points(pt_metrics["map50"] if pt_metrics else None, variant["map50"])
        variant["accepted"] = True
    return pt_metrics


def _judge_int8(
    variants: dict[str, Any], paths: dict[str, Path], ex: DictConfig, pt_metrics: dict[str, float] | None
) -> str | None:
    """Keep each INT8 variant or remove it; returns the refusal's one-line message, or None when all are kept."""
    refused = []
    for name in INT8_VARIANTS:
        int8 = variants.get(name)
        if int8 is None:
            continue
        drop = int8["map50_drop"]
        int8["accepted"] = int8_accepted(drop, max_drop=ex.max_map_drop, force=ex.force)
        if int8["accepted"]:
            if drop is not None and drop > ex.max_map_drop:
                log.warning("%s mAP50 drops by %.2f points; kept because export.force=true", name, drop)
            continue
        assert pt_metrics is not None  # a known drop needs the .pt's mAP50
        path = paths.pop(name)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        int8["path"] = None
        refused.append(
            f"{name} mAP50 drops by {drop:.2f} points (.pt {pt_metrics['map50']:.4f} -> {int8['map50']:.4f}),"
            f" {FILES[name]} removed"
        )
    if not refused:
        return None
    return f"{'; '.join(refused)}: more than export.max_map_drop={ex.max_map_drop}; set export.force=true to keep it"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export FP32 (and FP16 / INT8) ONNX into ``out_dir``, check them, write summary.json; returns its content.

    Raises:
        DroneVisionError: bad input (before anything is written), or INT8 refused (after summary.json is written).
    """
    started = time.perf_counter()
    out_dir = resolve_out_dir(cfg)
    plan = check_inputs(cfg)  # nothing is written before this passes
    ex = cfg.export
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        import torch

        torch.set_num_threads(plan.threads)

    found = find_training_run(plan.weights)
    paths, int8_settings = _export_variants(plan, ex, out_dir, found)
    metadata = read_metadata(paths["fp32"])
    log.info("FP32 ONNX %s, metadata %s", paths["fp32"], metadata)
    images, inputs = _parity_inputs(plan, ex.parity_split)
    variants, output_abs_max = _compare_outputs(plan, paths, inputs)
    pt_metrics = _evaluate(plan, paths, variants, split=ex.parity_split, out_dir=out_dir)
    refusal = _judge_int8(variants, paths, ex, pt_metrics)

    summary: dict[str, Any] = {
        "weights": str(plan.weights),
        "out_dir": str(out_dir),
        "variants": variants,
        "pt_metrics": pt_metrics,
        "opset": int(ex.opset),
        "dynamic": bool(ex.dynamic),
        "imgsz": plan.imgsz,
        "metadata": metadata,
        "parity": {
            "dataset": str(plan.parity.yaml_path) if plan.parity else None,
            "split": ex.parity_split if plan.parity else None,
            "images": images,
            "output_abs_max": output_abs_max,
        },
        "int8": int8_settings,
    }
    tracker = _log_to_training_run(found, out_dir, summary)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    written = write_summary(out_dir, summary)
    if tracker is not None:
        tracker.log_artifact(written, f"export/{out_dir.name}")
        if summary["mlflow"]["ok"] != tracker.active:  # the upload failed after the summary was written
            summary["mlflow"] = tracker.summary()
            write_summary(out_dir, summary)
    print(format_summary(summary))
    if refusal:
        raise DroneVisionError(refusal)
    return summary


main = hydra_main("export", run)

if __name__ == "__main__":
    main()
