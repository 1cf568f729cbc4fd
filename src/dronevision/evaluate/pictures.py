"""Pictures of an evaluation: PR curves, confusion matrix, per-class table, a gallery of the worst images, and the
altitude-shift curve.

The matching here (one IoU threshold, one confidence threshold, greedy by score) is for pictures and counts an
analyst can read; the metrics themselves come from :mod:`dronevision.evaluate.protocols`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.schema import Detections

BACKGROUND = "background"


# --- pure core -------------------------------------------------------------------------------------------------


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes.

    Examples:
        >>> iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5], [20, 20, 30, 30]])).tolist()
        [[0.5, 0.0]]
    """
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class ImageMatch:
    """Greedy matching of one image's detections (above a confidence) to its ground truth."""

    det_gt: np.ndarray  # per detection: index of the matched ground-truth box, or -1 (a false positive)
    gt_matched: np.ndarray  # per ground-truth box: whether a detection matched it

    @property
    def false_positives(self) -> int:
        return int((self.det_gt < 0).sum())

    @property
    def misses(self) -> int:
        return int((~self.gt_matched).sum())


def match_image(gt: Detections, det: Detections, *, iou: float = 0.5, class_aware: bool = True) -> ImageMatch:
    """Match detections to ground truth greedily by score at ``iou``; each ground-truth box is matched once.

    Examples:
        >>> gt = Detections(np.array([[0, 0, 10, 10]]), np.array([0]))
        >>> det = Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 9]]), np.array([0, 0]), np.array([0.9, 0.8]))
        >>> m = match_image(gt, det)
        >>> m.det_gt.tolist(), m.false_positives, m.misses
        ([0, -1], 1, 0)
    """
    det_gt = np.full(len(det), -1, dtype=np.int64)
    gt_matched = np.zeros(len(gt), dtype=bool)
    if len(det) and len(gt):
        ious = iou_matrix(det.xyxy, gt.xyxy)
        if class_aware:
            ious[det.class_id[:, None] != gt.class_id[None, :]] = 0.0
        scores = det.confidence if det.confidence is not None else np.ones(len(det))
        for d in np.argsort(-scores, kind="stable"):
            candidates = np.where(~gt_matched & (ious[d] >= iou))[0]
            if len(candidates):
                g = candidates[np.argmax(ious[d, candidates])]
                det_gt[d], gt_matched[g] = g, True
    return ImageMatch(det_gt, gt_matched)


def above(det: Detections, conf: float) -> Detections:
    """The detections with confidence at least ``conf``."""
    return det if det.confidence is None else det.filter(min_confidence=conf)


def confusion_matrix(
    pairs: Sequence[tuple[Detections, Detections]], n_classes: int, *, conf: float = 0.25, iou: float = 0.5
) -> np.ndarray:
    """``(n+1, n+1)`` counts: rows true class (last row: background = false positives), columns predicted class
    (last column: background = missed). Matching ignores classes, so a box found with the wrong class shows up.

    Examples:
        >>> gt = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0, 1]))
        >>> det = Detections(np.array([[0, 0, 10, 10], [80, 80, 90, 90]]), np.array([1, 0]), np.array([.9, .9]))
        >>> confusion_matrix([(gt, det)], 2).tolist()
        [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    """
    matrix = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    for gt, det in pairs:
        det = above(det, conf)
        m = match_image(gt, det, iou=iou, class_aware=False)
        for d, g in enumerate(m.det_gt):
            true = gt.class_id[g] if g >= 0 else n_classes
            matrix[true, det.class_id[d]] += 1
        for g in np.where(~m.gt_matched)[0]:
            matrix[gt.class_id[g], n_classes] += 1
    return matrix


def worst_images(
    pairs: Sequence[tuple[Detections, Detections]], *, k: int, conf: float = 0.25, iou: float = 0.5
) -> list[tuple[int, int, int]]:
    """Indices of the ``k`` images with the most false positives plus misses, as ``(index, fps, misses)``.

    Examples:
        >>> gt = Detections(np.array([[0, 0, 10, 10]]), np.array([0]))
        >>> good = Detections(np.array([[0, 0, 10, 10]]), np.array([0]), np.array([0.9]))
        >>> worst_images([(gt, good), (gt, Detections.empty(with_confidence=True))], k=1)
        [(1, 0, 1)]
    """
    scored = []
    for i, (gt, det) in enumerate(pairs):
        m = match_image(gt, above(det, conf), iou=iou)
        scored.append((i, m.false_positives, m.misses))
    scored.sort(key=lambda t: (-(t[1] + t[2]), t[0]))
    return [t for t in scored[:k] if t[1] + t[2] > 0]


# --- pictures --------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(pr: Mapping[str, Mapping[str, Sequence[float]]], out: Path, *, title: str) -> Path:
    """Precision-recall curve per class (``{name: {"recall": [...], "precision": [...]}}``) in one PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, curve in pr.items():
        if curve is not None:  # None: a class without ground truth has no curve
            ax.plot(curve["recall"], curve["precision"], label=name, linewidth=1.2)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if pr:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_altitude_curve(per_scale: Mapping[str, Mapping[str, Any]], out: Path) -> Path:
    """mAP50 and mAP50-95 against the scale (log x) in one PNG."""
    plt = _pyplot()
    zs = sorted(per_scale, key=float)
    x = [float(z) for z in zs]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("map50", "mAP50"), ("map50_95", "mAP50-95")):
        y = [np.nan if per_scale[z][key] is None else per_scale[z][key] for z in zs]
        ax.plot(x, y, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{z}x" for z in zs])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("scale (< 1: seen from higher up, > 1: from lower down)")
    ax.set_ylabel("COCO mAP")
    ax.set_title("altitude shift")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], out: Path, *, conf: float, iou: float) -> Path:
    """The confusion matrix, rows normalised per true class, with the counts written in the cells."""
    plt = _pyplot()
    labels = [*names, BACKGROUND]
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (conf >= {conf}, IoU >= {iou})")
    for (r, c), v in np.ndenumerate(matrix):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=7, color="white" if norm[r, c] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_class_table(rows: Sequence[Sequence[Any]], header: Sequence[str], out: Path, *, title: str) -> Path:
    """A per-class table rendered as a PNG (the same numbers are in metrics.json)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(header) + 1, 0.35 * len(rows) + 1.2))
    ax.axis("off")
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    table = ax.table(cellText=cells or [[""] * len(header)], colLabels=list(header), loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_gallery(
    items: Sequence[tuple[Path, Detections, Detections, str]], out: Path, *, conf: float, iou: float, cell: int = 480
) -> Path:
    """Images with ground truth (green), true positives (blue) and false positives (red) drawn, missed ground truth
    thicker; one caption per image. ``items`` are ``(image path, ground truth, detections, caption)``."""
    import cv2

    cells = []
    for path, gt, det, caption in items:
        image = cv2.imread(str(path))
        if image is None:
            continue
        det = above(det, conf)
        m = match_image(gt, det, iou=iou)
        scale = cell / max(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        for g, box in enumerate(gt.xyxy * scale):
            thickness = 1 if m.gt_matched[g] else 2
            cv2.rectangle(image, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (0, 200, 0), thickness)
        for d, box in enumerate(det.xyxy * scale):
            colour = (255, 120, 0) if m.det_gt[d] >= 0 else (0, 0, 255)
            cv2.rectangle(image, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), colour, 1)
        canvas = np.zeros((cell + 18, cell, 3), np.uint8)
        canvas[: image.shape[0], : image.shape[1]] = image
        cv2.putText(canvas, caption[:70], (3, cell + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        cells.append(canvas)
    if not cells:
        cells = [np.zeros((cell + 18, cell, 3), np.uint8)]
    cols = min(3, len(cells))
    cells += [np.zeros_like(cells[0])] * (-len(cells) % cols)
    grid = np.concatenate([np.concatenate(cells[i : i + cols], axis=1) for i in range(0, len(cells), cols)], axis=0)
    cv2.imwrite(str(out), grid)
    return out
