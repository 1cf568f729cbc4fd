"""Scoring protocols with one output shape: ``coco`` (pycocotools' COCOeval) and ``visdrone`` (the official VisDrone-DET
toolkit's rules, VisDrone/VisDrone2018-DET-toolkit: evalDET.m, utils/saveAnnoRes.m, dropObjectsInIgr.m,
calcAccuracy.m, evalRes.m, compOas.m, VOCap.m).

Both return ``{"protocol", "params", "overall", "per_class", "pr"}`` (``visdrone`` adds ``"class_mean"``). Numbers are
fractions in 0..1, None where undefined (a class, or a whole split, without ground truth). ``per_class`` is keyed by
class name and holds ``n_gt``; ``pr`` holds, per class, the precision envelope (best precision at recall >= r) at the
101 recall points 0, 0.01, ..., 1, at IoU 0.5.

What ``visdrone`` does differently from ``coco`` (both: IoU thresholds 0.50:0.05:0.95, greedy matching by score):

- AP uses up to 500 detections per image (``coco``: 100, COCO's standard; AR is reported at 1/10/100/500 by both).
- The detection limit counts the first N detections of the image by score, all classes together, after dropping those
  in ignored regions (``coco``: the N best per image *and class*).
- Ground truth and detections at least 50% inside the image's ignored regions are removed before matching (measured
  on the pixel grid as the toolkit does: boxes rounded to whole pixels, a region of width w covering w + 1 pixel
  columns); ``coco`` knows no ignored regions, so a detection there is a false positive.
- ``others`` (and ``ignored-regions``) are not scored; their detections still take places among the 500.
- AP is VOC's all-point interpolated area under the precision/recall curve (``coco``: 101-point interpolation).
- AR@k is the recall reached with k detections per image (the same idea as ``coco``'s, without size ranges).
- No small/medium/large breakdown.
- Classes are averaged as calcAccuracy.m does: each class once per image that holds a ground-truth box of it, i.e.
  weighted by the number of such images (``coco``: plain mean over classes with ground truth; ``class_mean`` gives
  that plain mean under ``visdrone`` rules too).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

PROTOCOLS = ("coco", "visdrone")
IOU_THRESHOLDS = np.round(0.5 + 0.05 * np.arange(10), 2)  # 0.50:0.05:0.95
T50, T75 = 0, 5  # positions of 0.50 and 0.75
MAX_DETS = (1, 10, 100, 500)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
UNSCORED = frozenset({"others", "ignored-regions", "ignored regions", "ignored"})  # VisDrone's 11 and 0
IGNORED_FRACTION = 0.5  # at least this much inside ignored regions: dropped (visdrone)
SIZES = ("small", "medium", "large")  # COCOeval's area ranges after "all"


@dataclass(frozen=True, kw_only=True)
class VisDroneImage:
    """One image for :func:`visdrone_protocol`.

    Attributes:
        wh: image size ``(width, height)`` in pixels (the ignored-region test works on its pixel grid).
        gt: ground-truth boxes, class ids in the ids of ``class_names``.
        ignore_regions: ``(K, 4)`` ``xyxy`` ignored regions.
        det: detections, with confidences.
    """

    wh: tuple[int, int]
    gt: Detections
    det: Detections
    ignore_regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore_regions", np.asarray(self.ignore_regions, dtype=np.float64).reshape(-1, 4))
        if self.det.confidence is None:
            raise ValueError("detections need confidences")


class GroundTruthImage(NamedTuple):
    """One image's ground truth as a dataset records it: file, size ``(w, h)``, boxes and ``(K, 4)`` ignored regions.

    A tuple, so ``file, wh, gt, ignore_regions = item`` works too.
    """

    file: str
    wh: tuple[int, int]
    gt: Detections
    ignore_regions: np.ndarray

    def with_detections(self, det: Detections) -> VisDroneImage:
        """This image with detections, ready for :func:`visdrone_protocol`."""
        return VisDroneImage(wh=self.wh, gt=self.gt, det=det, ignore_regions=self.ignore_regions)


# --- pure core: geometry -----------------------------------------------------------------------------------------


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)  # MATLAB's round


def ignored_fraction(xyxy: np.ndarray, ignore_xyxy: np.ndarray, resolution_wh: tuple[int, int]) -> np.ndarray:
    """Fraction of each box inside the ignored regions, on the pixel grid as the VisDrone toolkit measures it.

    The toolkit paints each region ``(left, top, w, h)`` (corners at least 1) into a 1-based mask over rows
    ``top..top+h`` and columns ``left..left+w`` (clipped to the image), rounds each box to whole pixels (at least 1),
    sums the mask over rows ``y+1..y+h`` and columns ``x+1..x+w`` (clipped) with an integral image and divides by
    ``w*h``. Here the same sums come from a grid compressed to the regions' edges, without painting the image.

    Examples:
        >>> ignored_fraction(np.array([[0, 0, 10, 10], [5, 0, 15, 10], [30, 30, 40, 40]]),
        ...                  np.array([[0, 0, 10, 10]]), (100, 100)).tolist()
        [1.0, 0.6, 0.0]
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(len(xyxy))
    regions = np.asarray(ignore_xyxy, dtype=np.float64).reshape(-1, 4)
    if not len(xyxy) or not len(regions):
        return out
    width, height = int(resolution_wh[0]), int(resolution_wh[1])
    reg = _round_half_away(np.maximum(1.0, np.c_[regions[:, :2], regions[:, 2:] - regions[:, :2]]))
    r0, c0 = reg[:, 1], reg[:, 0]  # first row / column, 1-based
    r1, c1 = np.minimum(height, reg[:, 1] + reg[:, 3]), np.minimum(width, reg[:, 0] + reg[:, 2])  # last, inclusive
    # cells (e[k], e[k+1]] between consecutive edges are wholly inside or outside each region
    er = np.unique(np.clip(np.r_[0, height, r0 - 1, r1], 0, height))
    ec = np.unique(np.clip(np.r_[0, width, c0 - 1, c1], 0, width))
    in_r = (er[None, :-1] >= r0[:, None] - 1) & (er[None, 1:] <= r1[:, None])  # (regions, row cells)
    in_c = (ec[None, :-1] >= c0[:, None] - 1) & (ec[None, 1:] <= c1[:, None])
    mask = (in_r.T.astype(np.int64) @ in_c.astype(np.int64)) > 0  # (row cells, column cells)

    def prefix(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:  # integral image at 1-based (row, col)
        ov_r = np.clip(rows[:, None] - er[None, :-1], 0, np.diff(er)[None, :])
        ov_c = np.clip(cols[:, None] - ec[None, :-1], 0, np.diff(ec)[None, :])
        return np.einsum("nr,rc,nc->n", ov_r, mask.astype(np.float64), ov_c)

    pos = np.maximum(1.0, _round_half_away(np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]))
    x, y = np.clip(pos[:, 0], 1, width), np.clip(pos[:, 1], 1, height)
    w, h = pos[:, 2], pos[:, 3]
    x2, y2 = np.minimum(width, x + w), np.maximum(1, np.minimum(height, y + h))
    inside = prefix(y, x) + prefix(y2, x2) - prefix(y, x2) - prefix(y2, x)
    return inside / (w * h)


def overlaps(det_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """``(D, G)`` IoU, computed as the toolkit's compOas (no overlap, or touching boxes: 0).

    Examples:
        >>> gt = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]])
        >>> overlaps(np.array([[0, 0, 10, 10]]), gt).round(3).tolist()
        [[1.0, 0.333, 0.0]]
    """
    d, g = det_xyxy[:, None, :], gt_xyxy[None, :, :]
    iw = np.minimum(d[..., 2], g[..., 2]) - np.maximum(d[..., 0], g[..., 0])
    ih = np.minimum(d[..., 3], g[..., 3]) - np.maximum(d[..., 1], g[..., 1])
    ok = (iw > 0) & (ih > 0)
    inter = np.where(ok, iw * ih, 0.0)
    d_area = (det_xyxy[:, 2] - det_xyxy[:, 0]) * (det_xyxy[:, 3] - det_xyxy[:, 1])
    g_area = (gt_xyxy[:, 2] - gt_xyxy[:, 0]) * (gt_xyxy[:, 3] - gt_xyxy[:, 1])
    union = d_area[:, None] + g_area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=ok & (union > 0))


def greedy_match(iou: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """``(T, D)``: true where a detection (a row of ``iou``, best score first) matches a ground-truth box.

    As evalRes.m: each detection in turn takes the still unmatched ground-truth box with the highest IoU >= the
    threshold (the last such box on ties); every other detection is a false positive.

    Examples:
        >>> greedy_match(np.array([[0.9, 0.6], [0.7, 0.0]]), np.array([0.5, 0.8])).tolist()
        [[True, False], [True, False]]
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    hit = np.zeros((len(thresholds), iou.shape[0]), dtype=bool)
    if not iou.size:
        return hit
    rows, cols = np.nonzero(iou >= thresholds.min())
    if not len(rows):
        return hit
    free = np.ones((len(thresholds), iou.shape[1]), dtype=bool)
    starts = np.searchsorted(rows, np.arange(iou.shape[0] + 1))
    for d in np.unique(rows).tolist():
        g = cols[starts[d] : starts[d + 1]]
        v = iou[d, g]
        ok = free[:, g] & (v[None, :] >= thresholds[:, None])
        if len(g) == 1:
            ts = np.flatnonzero(ok[:, 0])
            hit[ts, d] = True
            free[ts, g[0]] = False
            continue
        ts = np.flatnonzero(ok.any(axis=1))
        if not len(ts):
            continue
        best = len(g) - 1 - np.argmax(np.where(ok[ts], v, -1.0)[:, ::-1], axis=1)  # the last of equal IoUs
        hit[ts, d] = True
        free[ts, g[best]] = False
    return hit


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """All-point interpolated AP (VOCap.m) of each row of ``(T, N)`` recall/precision arrays.

    Examples:
        >>> voc_ap(np.array([[0.5, 0.5, 1.0]]), np.array([[1.0, 0.5, 2 / 3]])).round(4).tolist()
        [0.8333]
    """
    recall, precision = np.atleast_2d(recall), np.atleast_2d(precision)
    n = len(recall)
    mrec = np.c_[np.zeros(n), recall, np.ones(n)]
    mpre = np.c_[np.zeros(n), precision, np.zeros(n)]
    mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    return np.sum((mrec[:, 1:] - mrec[:, :-1]) * mpre[:, 1:], axis=1)


def pr_envelope(recall: np.ndarray, precision: np.ndarray) -> list[float]:
    """Best precision at recall >= r for the 101 points r = 0, 0.01, ..., 1 (0 past the last recall reached).

    Examples:
        >>> pr_envelope(np.array([0.5, 1.0]), np.array([1.0, 0.5]))[49:52]  # recall 0.49, 0.5, 0.51
        [1.0, 1.0, 0.5]
    """
    if not len(recall):
        return [0.0] * len(RECALL_POINTS)
    env = np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0).tolist()


# --- pure core: the visdrone protocol ----------------------------------------------------------------------------


def _class_index(class_id: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Position of each class id in ``scored`` (sorted), -1 where it is not scored."""
    if not len(scored):
        return np.full(len(class_id), -1)
    pos = np.searchsorted(scored, class_id)
    ok = (pos < len(scored)) & (scored[np.minimum(pos, len(scored) - 1)] == class_id)
    return np.where(ok, pos, -1)


def visdrone_protocol(
    images: Sequence[VisDroneImage], class_names: Mapping[int, str], *, max_dets: Sequence[int] = MAX_DETS
) -> dict[str, Any]:
    """Score detections by the official VisDrone-DET toolkit's rules (see the module docstring).

    Per image: ground truth and detections at least half inside ignored regions are dropped; the detections are ranked
    by score (ties keep their order) and the first ``max(max_dets)`` are kept, whatever their class. Per class named
    in ``class_names`` (but ``others``): greedy matching per IoU threshold, AP from VOC's all-point interpolation with
    all kept detections, AR@k from the first k detections per image. ``overall`` averages the classes the toolkit's
    way (each class once per image holding ground truth of it); ``class_mean`` is the plain mean over classes with
    ground truth.

    Examples:
        >>> gt = Detections(xyxy=[[10, 10, 50, 50]], class_id=[0])
        >>> det = Detections(xyxy=[[10, 10, 50, 50], [60, 60, 90, 90]], class_id=[0, 0], confidence=[0.9, 0.8])
        >>> m = visdrone_protocol([VisDroneImage(wh=(100, 100), gt=gt, det=det)], {0: "car"})
        >>> m["overall"]["AP"], m["overall"]["AR_1"]
        (1.0, 1.0)
    """
    max_dets = tuple(sorted(int(k) for k in max_dets))
    limit = max_dets[-1]
    scored = np.array(sorted(c for c, name in class_names.items() if name not in UNSCORED), dtype=np.int64)
    n_cls, n_thr = len(scored), len(IOU_THRESHOLDS)
    n_gt, n_img = np.zeros(n_cls, np.int64), np.zeros(n_cls, np.int64)
    found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n_cls)]  # (scores, hits, ranks)
    for image in images:
        gt, det = image.gt, image.det
        gt_keep = np.ones(len(gt), bool)
        det_keep = np.ones(len(det), bool)
        if len(image.ignore_regions):
            gt_keep = ignored_fraction(gt.xyxy, image.ignore_regions, image.wh) < IGNORED_FRACTION
            det_keep = ignored_fraction(det.xyxy, image.ignore_regions, image.wh) < IGNORED_FRACTION
        g_xyxy, g_cls = gt.xyxy[gt_keep], _class_index(gt.class_id[gt_keep], scored)
        assert det.confidence is not None
        kept = np.flatnonzero(det_keep)
        kept = kept[np.argsort(-det.confidence[kept], kind="stable")][:limit]
        d_xyxy, d_score, d_cls = det.xyxy[kept], det.confidence[kept], _class_index(det.class_id[kept], scored)
        counts = np.bincount(g_cls[g_cls >= 0], minlength=n_cls)
        n_gt += counts
        n_img += counts > 0
        rank = np.arange(len(kept))
        for k in np.unique(d_cls[d_cls >= 0]).tolist():
            sel = d_cls == k
            hits = greedy_match(overlaps(d_xyxy[sel], g_xyxy[g_cls == k]))
            found[k].append((d_score[sel], hits, rank[sel]))

    per_class: dict[str, dict[str, Any]] = {}
    pr: dict[str, dict[str, list[float]] | None] = {}
    keys = ("AP", "AP50", "AP75", *(f"AR_{k}" for k in max_dets))
    table = np.full((n_cls, len(keys)), np.nan)
    for k, class_id in enumerate(scored.tolist()):
        name = class_names[class_id]
        if not n_gt[k]:
            per_class[name] = {**dict.fromkeys(keys), "n_gt": 0}
            pr[name] = None
            continue
        if found[k]:
            scores = np.concatenate([f[0] for f in found[k]])
            hits = np.concatenate([f[1] for f in found[k]], axis=1)
            ranks = np.concatenate([f[2] for f in found[k]])
        else:
            scores, hits, ranks = np.zeros(0), np.zeros((n_thr, 0), bool), np.zeros(0, np.int64)
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(hits[:, order], axis=1)
        fp = np.cumsum(~hits[:, order], axis=1)
        recall, precision = tp / n_gt[k], tp / np.maximum(1, tp + fp)
        ap = voc_ap(recall, precision)
        ar = [hits[:, ranks < m].sum(axis=1) / n_gt[k] for m in max_dets]
        table[k] = [ap.mean(), ap[T50], ap[T75], *(a.mean() for a in ar)]
        per_class[name] = {**dict(zip(keys, table[k].tolist())), "n_gt": int(n_gt[k])}
        pr[name] = {"recall": RECALL_POINTS.tolist(), "precision": pr_envelope(recall[0], precision[0])}

    has_gt = n_img > 0
    overall = dict.fromkeys(keys)
    class_mean = dict.fromkeys(keys)
    if has_gt.any():
        overall = dict(zip(keys, (np.average(table[has_gt], axis=0, weights=n_img[has_gt])).tolist()))
        class_mean = dict(zip(keys, table[has_gt].mean(axis=0).tolist()))
    return {
        "protocol": "visdrone",
        "params": {
            "iou_thresholds": IOU_THRESHOLDS.tolist(),
            "max_dets": list(max_dets),
            "ap_max_dets": limit,
            "ignored_fraction": IGNORED_FRACTION,
            "n_images": len(images),
            "class_weights": {class_names[c]: int(w) for c, w in zip(scored.tolist(), n_img.tolist())},
        },
        "overall": overall,
        "class_mean": class_mean,
        "per_class": per_class,
        "pr": pr,
    }


# --- the coco protocol (pycocotools) -----------------------------------------------------------------------------


def coco_protocol(
    ground_truth: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    *,
    max_dets: Sequence[int] = MAX_DETS,
    ap_max_dets: int = 100,
) -> dict[str, Any]:
    """COCO box metrics by pycocotools' COCOeval, overall and per class, read from its precision/recall arrays.

    AP, AP50, AP75 and AP small/medium/large use ``ap_max_dets`` detections per image and class (100, COCO's
    standard); AR is given at each of ``max_dets``. ``overall`` is the mean over classes with ground truth, as
    COCOeval's summary. Detections of categories the ground truth lacks are left out (logged). Neither argument is
    modified.

    Examples:
        >>> gt = {"images": [{"id": 0, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "car"}],
        ...       "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 40, 40],
        ...                        "area": 1600, "iscrowd": 0}]}
        >>> m = coco_protocol(gt, [{"image_id": 0, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}])
        >>> round(m["overall"]["AP"], 6), m["overall"]["AR_1"], m["per_class"]["car"]["n_gt"]
        (1.0, 1.0, 1)
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    max_dets = tuple(sorted(int(k) for k in max_dets))
    if ap_max_dets not in max_dets:
        raise DroneVisionError(f"ap_max_dets={ap_max_dets} must be one of max_dets {list(max_dets)}")
    categories = {c["id"]: c["name"] for c in ground_truth["categories"]}
    image_ids = {im["id"] for im in ground_truth["images"]}
    unknown_img = sorted({d["image_id"] for d in detections} - image_ids, key=str)
    if unknown_img:
        raise DroneVisionError(f"detections name image ids {unknown_img[:5]} that are not in the ground truth")
    n_all = len(detections)
    detections = [d for d in detections if d["category_id"] in categories]
    if len(detections) < n_all:  # COCOeval would skip them silently
        log.warning("coco: %d detections of categories not in the ground truth are not scored", n_all - len(detections))
    dataset = {**ground_truth, "annotations": [dict(a) for a in ground_truth["annotations"]]}  # COCOeval adds keys
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # pycocotools prints
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        if detections:
            dt = gt.loadRes([dict(d) for d in detections])  # loadRes adds keys to each record
        else:
            dt = COCO()
            dt.dataset = {"images": list(dataset["images"]), "categories": dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
    log.debug("pycocotools:\n%s", printed.getvalue())
    p = ev.params
    precision, recall = ev.eval["precision"], ev.eval["recall"]  # (T, R, K, A, M), (T, K, A, M); -1: no gt
    t50, t75 = (int(np.argmin(np.abs(p.iouThrs - t))) for t in (0.5, 0.75))
    m_ap = max_dets.index(ap_max_dets)

    def mean(values: np.ndarray) -> float | None:
        values = values[values > -1]
        return float(values.mean()) if values.size else None

    def metrics(k: slice | int) -> dict[str, float | None]:
        out = {
            "AP": mean(precision[:, :, k, 0, m_ap]),
            "AP50": mean(precision[t50, :, k, 0, m_ap]),
            "AP75": mean(precision[t75, :, k, 0, m_ap]),
            **{f"AP_{size}": mean(precision[:, :, k, a, m_ap]) for a, size in enumerate(SIZES, start=1)},
        }
        out.update({f"AR_{m}": mean(recall[:, k, 0, i]) for i, m in enumerate(max_dets)})
        return out

    n_gt = {c: 0 for c in p.catIds}
    for a in dataset["annotations"]:
        if not a.get("iscrowd", 0):
            n_gt[a["category_id"]] += 1
    per_class, pr = {}, {}
    for k, cat in enumerate(p.catIds):
        name = categories[cat]
        per_class[name] = {**metrics(k), "n_gt": n_gt[cat]}
        curve = precision[t50, :, k, 0, m_ap]
        pr[name] = None if (curve < 0).all() else {"recall": p.recThrs.tolist(), "precision": curve.tolist()}
    return {
        "protocol": "coco",
        "params": {
            "iou_thresholds": p.iouThrs.tolist(),
            "max_dets": list(max_dets),
            "ap_max_dets": ap_max_dets,
            "n_images": len(ground_truth["images"]),
        },
        "overall": metrics(slice(None)),
        "per_class": per_class,
        "pr": pr,
    }
