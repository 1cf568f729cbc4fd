"""Merging the boxes of overlapping tiles: NMS or greedy NMM, matched by IoU or IoS, with SAHI's semantics.

Pure NumPy. SAHI's rules, kept so that our merged boxes are SAHI's (``sahi/postprocess/combine.py``):

- boxes are visited by score, highest first, ties broken by ``x1, y1, x2, y2`` ascending;
- a pair matches when its overlap is ``>=`` the threshold (IoU: over the union; IoS: over the smaller box);
- class-aware (the default) means only boxes of the same class match;
- NMS keeps the visited box and drops its matches; greedy NMM merges its matches into it, one by one in score
  order, each checked again against the box merged so far (a match that no longer overlaps enough is dropped):
  the union box, the highest score, the class of the higher-scored side.
"""

from __future__ import annotations

import numpy as np

from dronevision.infer.geometry import box_areas
from dronevision.schema import Detections

MERGES = ("nmm", "nms")
MATCHES = ("ios", "iou")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a one-line ``ValueError``.

    Examples:
        >>> check_choice("match", "iou", MATCHES)
        'iou'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def overlap(xyxy: np.ndarray, others_xyxy: np.ndarray, *, match: str = "iou") -> np.ndarray:
    """IoU or IoS of one box ``(4,)`` with each of ``(N, 4)`` boxes (0 where the denominator is 0).

    Examples:
        >>> a, b = np.array([0., 0, 10, 10]), np.array([[5., 0, 10, 10], [20, 20, 30, 30]])
        >>> overlap(a, b, match="iou").tolist(), overlap(a, b, match="ios").tolist()
        ([0.5, 0.0], [1.0, 0.0])
    """
    box = np.asarray(xyxy, dtype=np.float64).reshape(4)
    others = np.asarray(others_xyxy, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    h = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area, areas = float(box_areas(box[None])[0]), box_areas(others)
    iou = check_choice("match", match, MATCHES) == "iou"
    denominator = area + areas - inter if iou else np.minimum(area, areas)
    return np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)


def pairwise_overlap(a_xyxy: np.ndarray, b_xyxy: np.ndarray, *, match: str = "iou") -> np.ndarray:
    """IoU or IoS of every box of ``a`` ``(N, 4)`` with every box of ``b`` ``(M, 4)``, as ``(N, M)``.

    Examples:
        >>> pairwise_overlap(np.array([[0., 0, 2, 2]]), np.array([[1., 0, 2, 2], [0, 0, 2, 2]])).tolist()
        [[0.5, 1.0]]
    """
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        out[i] = overlap(a[i], b, match=match)
    return out


def score_order(xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices by score, highest first; ties by ``x1, y1, x2, y2`` ascending (SAHI's order).

    Examples:
        >>> score_order(np.array([[5., 0, 6, 1], [1, 0, 2, 1], [0, 0, 1, 1]]), np.array([0.9, 0.9, 0.5])).tolist()
        [1, 0, 2]
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.lexsort((xyxy[:, 3], xyxy[:, 2], xyxy[:, 1], xyxy[:, 0], -np.asarray(scores, dtype=np.float64)))


MAX_PAIRS = 1_000_000  # candidate pairs the sweep holds at once (tens of MB of temporaries); beyond it, the scan


def _greedy_groups(
    xyxy: np.ndarray,
    order: np.ndarray,
    class_id: np.ndarray | None,
    *,
    match: str,
    threshold: float,
    strict: bool = False,
    limit: int | None = None,
) -> list[tuple[int, list[int]]]:
    """Visit boxes in ``order``; each one not yet taken takes the later untaken boxes that match it.

    Returns ``(kept index, matched indices in visiting order)`` per kept box, stopping after ``limit`` kept boxes.
    The matching pairs come from a sweep over boxes sorted by ``x1`` (only boxes whose x-ranges overlap are
    compared, with the very operations of the scan, so the same pairs match); the greedy visit then runs over them.
    A threshold that lets boxes without overlap match, or more than :data:`MAX_PAIRS` candidate pairs, takes the
    scan instead (:func:`_greedy_scan`: one vectorised pass over the unvisited boxes per kept box).
    """
    order = np.asarray(order, dtype=np.int64)
    iou = check_choice("match", match, MATCHES) == "iou"
    ranked = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)[order]
    classes = None if class_id is None else np.asarray(class_id)[order]
    pairs = _matching_pairs(ranked, classes, iou=iou, threshold=threshold, strict=strict) if len(order) > 1 else None
    if pairs is None:
        return _greedy_scan(xyxy, order, class_id, iou=iou, threshold=threshold, strict=strict, limit=limit)
    first, later = pairs
    bounds = np.searchsorted(first, np.arange(len(order) + 1)).tolist()
    later_list, order_list = later.tolist(), order.tolist()
    taken = bytearray(len(order))
    groups: list[tuple[int, list[int]]] = []
    for r in range(len(order)):
        if limit is not None and len(groups) >= limit:
            break
        if taken[r]:
            continue
        matched = [j for j in later_list[bounds[r] : bounds[r + 1]] if not taken[j]]
        for j in matched:
            taken[j] = 1
        groups.append((order_list[r], [order_list[j] for j in matched]))
    return groups


def _matching_pairs(
    ranked_xyxy: np.ndarray, class_id: np.ndarray | None, *, iou: bool, threshold: float, strict: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every matching pair ``(a, b)`` with ``a < b`` (indices into ``ranked_xyxy``), sorted by ``a`` then ``b``; None
    when the sweep does not apply (a threshold at which boxes that do not overlap match) or would hold more than
    :data:`MAX_PAIRS` candidates.

    Examples:
        >>> boxes = np.array([[0., 0, 10, 10], [100, 0, 110, 10], [5, 0, 15, 10], [1, 0, 11, 10]])
        >>> [p.tolist() for p in _matching_pairs(boxes, None, iou=True, threshold=0.3, strict=False)]
        [[0, 0, 2], [2, 3, 3]]
    """
    if not (threshold > 0 or (strict and threshold >= 0)):
        return None  # a match needs a positive intersection only when the threshold is above 0
    n = len(ranked_xyxy)
    by_x = np.argsort(ranked_xyxy[:, 0], kind="stable")
    ends = np.searchsorted(ranked_xyxy[by_x, 0], ranked_xyxy[by_x, 2], side="left")  # x1 < this box's x2
    counts = np.maximum(ends - np.arange(1, n + 1), 0)
    total = int(counts.sum())
    if total > MAX_PAIRS:
        return None
    first = np.repeat(np.arange(n), counts)
    second = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + first + 1
    a, b = by_x[first], by_x[second]
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in ranked_xyxy.T)
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    w = np.minimum(x2[a], x2[b]) - np.maximum(x1[a], x1[b])
    h = np.minimum(y2[a], y2[b]) - np.maximum(y1[a], y1[b])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    denominator = areas[a] + areas[b] - inter if iou else np.minimum(areas[a], areas[b])  # symmetric in a and b
    value = np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)
    hit = value > threshold if strict else value >= threshold
    if class_id is not None:
        hit &= class_id[a] == class_id[b]
    lo, hi = np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])
    keyed = np.lexsort((hi, lo))
    return lo[keyed], hi[keyed]


def _greedy_scan(
    xyxy: np.ndarray,
    order: np.ndarray,
    class_id: np.ndarray | None,
    *,
    iou: bool,
    threshold: float,
    strict: bool,
    limit: int | None,
) -> list[tuple[int, list[int]]]:
    """:func:`_greedy_groups` by scanning: each kept box is compared with every unvisited one (memory linear in N)."""
    if class_id is not None and len(np.unique(class_id[order])) > 1:  # class by class: smaller arrays, same result
        rank = np.empty(len(class_id), dtype=np.int64)
        rank[order] = np.arange(len(order))
        groups = [
            group
            for c in np.unique(class_id[order])
            for group in _greedy_scan(
                xyxy, order[class_id[order] == c], None, iou=iou, threshold=threshold, strict=strict, limit=limit
            )
        ]
        groups.sort(key=lambda group: rank[group[0]])
        return groups[:limit] if limit is not None else groups
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).T)
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    groups: list[tuple[int, list[int]]] = []
    alive = np.asarray(order, dtype=np.int64)
    while alive.size and (limit is None or len(groups) < limit):  # `overlap` inlined: this loop is the hot path
        i, rest = int(alive[0]), alive[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        denominator = areas[i] + areas[rest] - inter if iou else np.minimum(areas[i], areas[rest])
        value = np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)
        hit = value > threshold if strict else value >= threshold
        if class_id is not None:
            hit &= class_id[rest] == class_id[i]
        groups.append((i, rest[hit].tolist()))
        alive = rest[~hit]
    return groups


def nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    *,
    class_id: np.ndarray | None = None,
    class_agnostic: bool = False,
    match: str = "iou",
    threshold: float = 0.5,
    strict: bool = False,
    order: np.ndarray | None = None,
    max_kept: int | None = None,
) -> np.ndarray:
    """Non-maximum suppression, the project's only one; returns the kept indices, highest score first.

    With the defaults it is SAHI's (tiles merged by :func:`merge_detections`); with ``strict=True``, ``order`` by
    score (stable) and ``max_kept=max_det`` it is ultralytics' NMS after its confidence filter
    (:func:`dronevision.infer.yolo.decode_yolo`).

    Args:
        xyxy: ``(N, 4)`` boxes.
        scores: ``(N,)`` confidences.
        class_id: ``(N,)`` classes (None: all boxes are of one class).
        class_agnostic: let boxes of different classes suppress each other.
        match: ``iou`` or ``ios``.
        threshold: a box is suppressed by a higher one when their overlap is ``>=`` this (``>`` if ``strict``).
        strict: suppress only overlaps above ``threshold`` (ultralytics' and torchvision's rule).
        order: the visiting order (default: by score, ties by ``x1, y1, x2, y2``, SAHI's order); boxes left out of
            it are dropped.
        max_kept: stop after this many kept boxes.

    Examples:
        >>> boxes = np.array([[0., 0, 10, 10], [1, 0, 10, 10], [0, 0, 4, 4]])
        >>> nms(boxes, np.array([0.9, 0.8, 0.7])).tolist()  # IoU 0.9 and 0.16 with the first
        [0, 2]
        >>> nms(boxes, np.array([0.9, 0.8, 0.7]), match="ios").tolist()  # the small box is inside the first
        [0]
        >>> nms(boxes, np.array([0.9, 0.8, 0.7]), class_id=np.array([0, 1, 0]), match="ios").tolist()
        [0, 1]
        >>> nms(boxes, np.array([0.9, 0.8, 0.7]), class_id=np.array([0, 1, 0]), class_agnostic=True).tolist()
        [0, 2]
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    classes = None if class_id is None or class_agnostic else np.asarray(class_id).reshape(-1)
    order = score_order(xyxy, scores) if order is None else order
    groups = _greedy_groups(xyxy, order, classes, match=match, threshold=threshold, strict=strict, limit=max_kept)
    return np.array([i for i, _ in groups], dtype=np.int64)


def greedy_nmm(
    xyxy: np.ndarray,
    scores: np.ndarray,
    *,
    class_id: np.ndarray | None = None,
    class_agnostic: bool = False,
    match: str = "ios",
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy non-maximum merging (SAHI's GREEDYNMM); returns merged ``(xyxy, scores, class_id)``, by score.

    Each kept box absorbs the lower boxes that match it: their union box, the highest score, and the class of the
    higher-scored side (which matters only with ``class_agnostic``). Without ``class_id`` every box is class 0.

    Examples:
        >>> boxes = np.array([[0., 0, 10, 10], [8, 0, 20, 10], [30, 30, 40, 40]])
        >>> merged, score, cls = greedy_nmm(boxes, np.array([0.6, 0.9, 0.5]), match="iou", threshold=0.1)
        >>> merged.tolist(), score.tolist(), cls.tolist()
        ([[0.0, 0.0, 20.0, 10.0], [30.0, 30.0, 40.0, 40.0]], [0.9, 0.5], [0, 0])
        >>> greedy_nmm(boxes, np.array([0.6, 0.9, 0.5]), match="iou", threshold=0.5)[0].tolist()  # IoU 0.1
        [[8.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 40.0]]
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.zeros(len(xyxy), dtype=np.int64) if class_id is None else np.asarray(class_id).reshape(-1)
    aware = None if class_id is None or class_agnostic else classes
    groups = _greedy_groups(xyxy, score_order(xyxy, scores), aware, match=match, threshold=threshold)
    kept = np.array([i for i, _ in groups], dtype=np.int64)
    out_xyxy, out_score, out_class = xyxy[kept], scores[kept], classes[kept].astype(np.int64)
    iou = match == "iou"
    boxes, score_list, class_list = xyxy.tolist(), scores.tolist(), classes.tolist()
    for k, (i, matched) in enumerate(groups):
        if not matched:  # most boxes of sliced inference: nothing to merge
            continue
        # plain floats, not NumPy calls on one box: the same IEEE operations as `overlap`, 20x less overhead
        (x1, y1, x2, y2), score, cls = boxes[i], score_list[i], class_list[i]
        for j in matched:
            a1, b1, a2, b2 = boxes[j]
            inter = max(min(x2, a2) - max(x1, a1), 0.0) * max(min(y2, b2) - max(y1, b1), 0.0)
            area, other = max(x2 - x1, 0.0) * max(y2 - y1, 0.0), max(a2 - a1, 0.0) * max(b2 - b1, 0.0)
            denominator = area + other - inter if iou else min(area, other)
            if (inter / denominator if denominator > 0 else 0.0) >= threshold:  # SAHI checks against the merged box
                x1, y1, x2, y2 = min(x1, a1), min(y1, b1), max(x2, a2), max(y2, b2)
                cls = cls if score > score_list[j] else class_list[j]
                score = max(score, score_list[j])
        out_xyxy[k], out_score[k], out_class[k] = (x1, y1, x2, y2), score, cls
    return out_xyxy, out_score, out_class


def merge_detections(
    det: Detections,
    *,
    merge: str = "nmm",
    match: str = "ios",
    threshold: float = 0.5,
    class_agnostic: bool = False,
) -> Detections:
    """Merge the boxes of overlapping tiles (and of a full-frame pass) into one set, highest score first.

    Args:
        det: all boxes in image pixels, with confidences.
        merge: ``nmm`` (greedy non-maximum merging, SAHI's default) or ``nms``.
        match: ``ios`` (intersection over the smaller box, SAHI's default) or ``iou``.
        threshold: boxes overlapping this much (``>=``) are merged or suppressed.
        class_agnostic: let boxes of different classes merge (else only boxes of one class).

    Examples:
        >>> det = Detections(xyxy=[[0, 0, 10, 10], [5, 0, 15, 10]], class_id=[0, 0], confidence=[0.8, 0.9])
        >>> merge_detections(det).xyxy.tolist(), merge_detections(det, merge="nms").xyxy.tolist()
        ([[0.0, 0.0, 15.0, 10.0]], [[5.0, 0.0, 15.0, 10.0]])
    """
    check_choice("merge", merge, MERGES)
    check_choice("match", match, MATCHES)
    if det.confidence is None:
        raise ValueError("merging needs confidences")
    kwargs = {"class_id": det.class_id, "class_agnostic": class_agnostic, "match": match, "threshold": threshold}
    if merge == "nms":
        keep = nms(det.xyxy, det.confidence, **kwargs)
        return det[keep]
    xyxy, score, cls = greedy_nmm(det.xyxy, det.confidence, **kwargs)
    return Detections(xyxy=xyxy, class_id=cls, confidence=score)
