"""Evaluate a checkpoint on a dataset split: COCO metrics with pycocotools, beside ultralytics' own numbers."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.dataset import YoloDataset, label_path, parse_label_lines
from dronevision.dataset.yolo import image_size
from dronevision.schema import Detections

log = logging.getLogger(__name__)

COCO_STATS = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR_1",
    "AR_10",
    "AR_100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


# --- pure core -------------------------------------------------------------------------------------------------


def yolo_to_xyxy(rows: Sequence[Sequence[float]], resolution_wh: tuple[int, int]) -> Detections:
    """YOLO label rows ``(class, cx, cy, w, h)`` (normalised) to pixel ``xyxy`` boxes.

    Examples:
        >>> yolo_to_xyxy([(0, 0.5, 0.5, 0.5, 0.25)], resolution_wh=(200, 100)).xyxy.tolist()
        [[50.0, 37.5, 150.0, 62.5]]
    """
    if not rows:
        return Detections.empty()
    arr = np.asarray(rows, dtype=np.float64)
    w, h = resolution_wh
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return Detections(xyxy=xyxy, class_id=arr[:, 0])


def coco_ground_truth(
    images: Sequence[tuple[str, tuple[int, int], Detections]], names: dict[int, str]
) -> dict[str, Any]:
    """A COCO ground-truth dict from ``(file name, (w, h), boxes)`` per image; ids are positions, classes + 1.

    Examples:
        >>> gt = coco_ground_truth([("a.jpg", (10, 10), yolo_to_xyxy([(0, .5, .5, .2, .4)], (10, 10)))], {0: "car"})
        >>> gt["annotations"][0]["bbox"], gt["categories"]
        ([4.0, 3.0, 2.0, 4.0], [{'id': 1, 'name': 'car'}])
    """
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": k + 1, "name": v} for k, v in sorted(names.items())],
    }
    for image_id, (file_name, (w, h), det) in enumerate(images):
        coco["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for (x1, y1, x2, y2), cls in zip(det.xyxy.tolist(), det.class_id.tolist()):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return coco


def coco_detections(predictions: Iterable[Detections]) -> list[dict[str, Any]]:
    """COCO result records from per-image predictions, image ids by position (as in :func:`coco_ground_truth`)."""
    records = []
    for image_id, det in enumerate(predictions):
        assert det.confidence is not None, "predictions need confidences"
        for (x1, y1, x2, y2), cls, score in zip(det.xyxy.tolist(), det.class_id.tolist(), det.confidence.tolist()):
            records.append(
                {"image_id": image_id, "category_id": cls + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    return records


def coco_metrics(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """COCO box metrics (AP, AP50, ..., AR_100) computed by pycocotools' COCOeval; all 0.0 without detections."""
    if not detections or not ground_truth["annotations"]:
        return dict.fromkeys(COCO_STATS, 0.0)
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()) as printed:  # pycocotools prints; keep it in the log
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("pycocotools:\n%s", printed.getvalue())
    return {name: max(float(v), 0.0) for name, v in zip(COCO_STATS, ev.stats)}  # -1 means "no such objects"


# --- I/O adapters ----------------------------------------------------------------------------------------------


def load_split(dataset: YoloDataset, split: str) -> list[tuple[str, tuple[int, int], Detections]]:
    """Ground truth of a split as ``(image path, (w, h), boxes)``."""
    items = []
    for image in dataset.splits[split]:
        wh = image_size(image)
        label = label_path(image)
        lines = label.read_text().splitlines() if label.is_file() else []
        rows = parse_label_lines(lines, n_classes=len(dataset.names), source=label)
        items.append((str(image), wh, yolo_to_xyxy(rows, wh)))
    return items


def load_model(weights: Path) -> Any:
    """An ultralytics detector from a local .pt or .onnx (never downloaded: the caller checks the path)."""
    from ultralytics import YOLO

    return YOLO(str(weights), task="detect")


def predict(
    weights: Path | Any,
    images: Sequence[str],
    *,
    imgsz: int,
    device: str | None,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    batch: int = 8,
) -> Iterator[Detections]:
    """Run a checkpoint (.pt or .onnx, or a model from :func:`load_model`) on images with ultralytics and yield one
    :class:`Detections` per image."""
    model = load_model(weights) if isinstance(weights, (str, Path)) else weights
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        for result in model.predict(
            chunk, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, device=device, verbose=False
        ):
            boxes = result.boxes
            yield Detections(
                xyxy=boxes.xyxy.cpu().numpy(), class_id=boxes.cls.cpu().numpy(), confidence=boxes.conf.cpu().numpy()
            )


def ultralytics_metrics(
    weights: Path,
    data_yaml: Path,
    *,
    split: str,
    imgsz: int,
    batch: int,
    device: str | None,
    out_dir: Path,
    plots: bool,
    rect: bool | None = None,
) -> dict[str, float]:
    """ultralytics' own validation numbers (its mAP interpolation differs from pycocotools').

    ``rect=False`` letterboxes every image to ``imgsz`` squared, as a fixed-shape ONNX file must be fed; None keeps
    ultralytics' default.
    """
    metrics = load_model(weights).val(
        data=str(data_yaml),
        split=split,
        imgsz=imgsz,
        batch=batch,
        device=device,
        project=str(out_dir.parent),
        name=out_dir.name,
        exist_ok=True,
        plots=plots,
        verbose=False,
        **({} if rect is None else {"rect": rect}),
    )
    precision, recall, map50, map50_95 = (float(v) for v in metrics.mean_results())
    return {"map50": map50, "map50_95": map50_95, "precision": precision, "recall": recall}


def evaluate_checkpoint(
    weights: Path,
    dataset: YoloDataset,
    data_yaml: Path,
    *,
    split: str,
    imgsz: int,
    batch: int,
    device: str | None,
    out_dir: Path,
    plots: bool = True,
) -> dict[str, Any]:
    """ultralytics' metrics and pycocotools' COCO metrics of one checkpoint on one split."""
    ours = ultralytics_metrics(
        weights, data_yaml, split=split, imgsz=imgsz, batch=batch, device=device, out_dir=out_dir, plots=plots
    )
    items = load_split(dataset, split)
    gt = coco_ground_truth([(Path(p).name, wh, det) for p, wh, det in items], dataset.names)
    preds = list(predict(weights, [p for p, _, _ in items], imgsz=imgsz, device=device, batch=batch))
    coco = coco_metrics(gt, coco_detections(preds))
    log.info(
        "COCO AP %.4f AP50 %.4f | ultralytics mAP50-95 %.4f mAP50 %.4f",
        coco["AP"],
        coco["AP50"],
        ours["map50_95"],
        ours["map50"],
    )
    return {"split": split, "n_images": len(items), "ultralytics": ours, "coco": coco}
