"""Scaled and multi-scale inference: frames resized before detection, boxes mapped back to the original pixels.

Two settings of the ``slicing`` group drive it (:class:`dronevision.infer.sliced.SliceSettings`): ``gsd`` gives each
frame a resize factor so that objects appear at the training scale (:mod:`dronevision.infer.gsd`), and ``scales``
runs each frame at several extra factors whose boxes are merged with the group's ``merge``/``match`` rules
(:func:`dronevision.infer.merge.merge_detections`). The model sees the resized frame at its own pixel size: padded
when smaller than the model's input (or a tile), cut into tiles when larger. Without a GSD, scale 1 is the view
the model has anyway (the letterboxed frame; the frame's own pixels when sliced), so ``scales=[0.33, 0.5, 1]``
also looks for objects two and three times larger than the training data's, as seen from a lower flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dronevision.infer.detector import Detector, add_time
from dronevision.infer.geometry import clip_boxes
from dronevision.infer.merge import merge_detections
from dronevision.schema import Detections

if TYPE_CHECKING:
    from dronevision.infer.sliced import SliceSettings

log = logging.getLogger(__name__)

FOCUS_TOP = 20  # confidences that make a scale's score (focus_weights)
SIZE_SIGMA = 0.4  # spread of size_weights' likeness, in natural-log units (0.4: 1.5x off weighs 0.6)


# --- pure core -------------------------------------------------------------------------------------------------


def scaled_size(image_wh: tuple[int, int], factor: float) -> tuple[int, int]:
    """The ``(w, h)`` of an image resized by ``factor`` (at least 1 pixel each).

    Examples:
        >>> scaled_size((64, 48), 0.5), scaled_size((64, 48), 1.5), scaled_size((3, 3), 0.01)
        ((32, 24), (96, 72), (1, 1))
    """
    w, h = image_wh
    return max(1, round(w * factor)), max(1, round(h * factor))


def unscale_detections(det: Detections, factor_wh: tuple[float, float], image_wh: tuple[int, int]) -> Detections:
    """Boxes found in a resized image, moved back to the original image's pixels (divided, clipped to it; a box
    found wholly outside it, in padding, is dropped).

    Examples:
        >>> d = Detections(xyxy=[[10, 10, 20, 30]], class_id=[0], confidence=[0.9])
        >>> unscale_detections(d, (0.5, 0.5), (64, 48)).xyxy.tolist()
        [[20.0, 20.0, 40.0, 48.0]]
    """
    if not len(det):
        return det
    fx, fy = factor_wh
    xyxy = det.xyxy / np.array([fx, fy, fx, fy])
    clipped, visible = clip_boxes(xyxy, np.array([0, 0, *image_wh]))
    kept = det[visible > 0]
    return Detections(xyxy=clipped[visible > 0], class_id=kept.class_id, confidence=kept.confidence)


def focus_weights(per_scale: Sequence[Detections], power: float, *, top: int = FOCUS_TOP) -> list[float]:
    """A weight per scale for its confidences: ``(its score / the best scale's score) ** power``, where a scale's
    score is the mean of its ``top`` highest confidences. One frame is seen from one altitude, so the scale at
    which the model is surest is taken as the right one and the others count less (0: all weigh 1).

    Examples:
        >>> sure = Detections(xyxy=[[0, 0, 9, 9]] * 2, class_id=[0, 0], confidence=[0.9, 0.7])
        >>> unsure = Detections(xyxy=[[0, 0, 9, 9]], class_id=[0], confidence=[0.4])
        >>> focus_weights([unsure, sure], 2.0), focus_weights([unsure, sure], 0.0)
        ([0.25, 1.0], [1.0, 1.0])
    """
    scores = [float(np.sort(d.confidence)[::-1][:top].mean()) if len(d) else 0.0 for d in per_scale]
    best = max(scores, default=0.0)
    if power == 0 or best <= 0:
        return [1.0] * len(per_scale)
    return [(score / best) ** power for score in scores]


def size_weights(
    per_scale: Sequence[Detections], factors: Sequence[float], box_px: float, sigma: float = SIZE_SIGMA
) -> list[np.ndarray]:
    """A weight per box from its size as the model saw it (SNIP's valid range per scale, made soft): a box found
    at the largest scale that is larger than ``box_px``, or one found at a smaller scale that is smaller than
    ``box_px``, weighs ``exp(-ln(v / box_px)^2 / (2 sigma^2))`` for its side ``v`` in that view; other boxes weigh
    1. A vehicle seen too large at the model's own view, or a group of small ones seen as one at a reduced
    scale, counts less than the same vehicle at the scale where it looks as in training.

    Args:
        per_scale: each scale's boxes, in the original image's pixels.
        factors: each scale's view factor (original pixels to the pixels the model saw).
        box_px: the training objects' typical side as the model saw them (the median).
        sigma: the spread of the likeness, in natural-log units of size.

    Examples:
        >>> cars = Detections(xyxy=[[0, 0, 40, 40], [50, 0, 66, 16]], class_id=[0, 0], confidence=[0.9, 0.9])
        >>> [w.round(2).tolist() for w in size_weights([cars, cars], [0.4, 1.0], box_px=16)]  # 16/6 px, 40/16 px
        [[1.0, 0.07], [0.07, 1.0]]
    """
    if len(per_scale) < 2:  # one scale: nothing to prefer
        return [np.ones(len(det)) for det in per_scale]
    largest = max(factors)
    out = []
    for det, f in zip(per_scale, factors):
        side = np.sqrt(np.maximum(det.area, 1e-12)) * f
        likeness = np.exp(-(np.log(side / box_px) ** 2) / (2 * sigma**2))
        off = side > box_px if f >= largest else side < box_px
        out.append(np.where(off, likeness, 1.0))
    return out


def merge_scales(
    per_scale: Sequence[Detections],
    factors_wh: Sequence[tuple[float, float]],
    image_wh: tuple[int, int],
    *,
    merge: str = "nms",
    match: str = "iou",
    threshold: float = 0.5,
    class_agnostic: bool = False,
    focus: float = 0.0,
    box_px: float | None = None,
    sigma: float = SIZE_SIGMA,
    view_factors: Sequence[float] | None = None,
) -> Detections:
    """The detections of several resized copies of one image, in its own pixels, merged into one set. Confidences
    are weighted first: per scale with ``focus`` > 0 (:func:`focus_weights`), per box with ``box_px``
    (:func:`size_weights`, with ``view_factors``: original pixels to the model's view per scale; default: the
    resize factors).

    Examples:
        >>> a = Detections(xyxy=[[10, 10, 20, 20]], class_id=[0], confidence=[0.6])  # found at half size
        >>> b = Detections(xyxy=[[21, 20, 40, 41]], class_id=[0], confidence=[0.9])  # found at full size
        >>> merge_scales([a, b], [(0.5, 0.5), (1.0, 1.0)], (64, 48)).xyxy.tolist()
        [[21.0, 20.0, 40.0, 41.0]]
    """
    if len(per_scale) != len(factors_wh):
        raise ValueError(f"{len(per_scale)} detection sets for {len(factors_wh)} factors")
    per_scale = [unscale_detections(d, f, image_wh) for d, f in zip(per_scale, factors_wh)]
    if len(per_scale) > 1 and (focus or box_px):
        weights: list[Any] = focus_weights(per_scale, focus)
        if box_px:
            views = view_factors or [float(np.sqrt(fx * fy)) for fx, fy in factors_wh]
            weights = [w * s for w, s in zip(weights, size_weights(per_scale, views, box_px, sigma))]
        per_scale = [Detections(xyxy=d.xyxy, class_id=d.class_id, confidence=d.confidence * w)
                     for d, w in zip(per_scale, weights)]  # fmt: skip
    det = Detections.merge(per_scale)
    if len(per_scale) == 1 or len(det) < 2:
        return det
    return merge_detections(det, merge=merge, match=match, threshold=threshold, class_agnostic=class_agnostic)


# --- inference -------------------------------------------------------------------------------------------------


def resize_bgr(image_bgr: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image_bgr`` resized to ``size_wh`` (area averaging when shrinking, bilinear when enlarging)."""
    import cv2

    h, w = image_bgr.shape[:2]
    if (w, h) == tuple(size_wh):
        return image_bgr
    shrink = size_wh[0] * size_wh[1] < w * h
    return cv2.resize(image_bgr, size_wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def pad_to(image_bgr: np.ndarray, min_hw: tuple[int, int], value: int = 114) -> np.ndarray:
    """``image_bgr`` padded at the bottom and right (ultralytics' letterbox grey) to at least ``min_hw``, so that
    the model sees it at its own pixel size instead of enlarged; boxes found in it need no shift.

    Examples:
        >>> pad_to(np.zeros((10, 50, 3), np.uint8), (32, 32)).shape
        (32, 50, 3)
    """
    h, w = image_bgr.shape[:2]
    if h >= min_hw[0] and w >= min_hw[1]:
        return image_bgr
    out = np.full((max(h, min_hw[0]), max(w, min_hw[1]), 3), value, np.uint8)
    out[:h, :w] = image_bgr
    return out


def view_factor(image_wh: tuple[int, int], gsd_factor: float | None, input_hw: tuple[int, int], sliced: bool) -> float:
    """The resize of an image at scale 1: its GSD factor when known (objects at the training scale), else the view
    the model has without scaling (its own pixels when sliced, the letterbox's fit into ``input_hw`` when not).

    Examples:
        >>> view_factor((832, 416), None, (416, 416), sliced=False), view_factor((832, 416), 0.8, (416, 416), False)
        (0.5, 0.8)
    """
    if gsd_factor is not None:
        return gsd_factor
    return 1.0 if sliced else min(input_hw[0] / image_wh[1], input_hw[1] / image_wh[0])


def scaled_predict(
    detector: Detector,
    images_bgr: Sequence[np.ndarray],
    settings: SliceSettings,
    *,
    factors: Sequence[float | None] | float | None = None,
    batch: int = 8,
    timings: dict[str, float] | None = None,
) -> list[Detections]:
    """Detections per image in its own pixels: each image resized by its view (:func:`view_factor`) times each of
    ``settings.scales`` (``(1.0,)`` when None), seen by the model at that size, boxes mapped back and, with several
    scales, merged by ``settings.merge``/``match``/``match_threshold``.

    "Seen at that size": a resized image smaller than the model's input (``settings.tile`` when sliced) is padded,
    not enlarged by the letterbox; a larger one is cut into tiles of the model's input (``settings.tile`` and
    ``full_frame`` when sliced; otherwise no full-frame pass, which would undo the scale, and the tiles merged by NMS
    at ``settings.match_threshold`` IoU, as the model's own NMS treats one input).

    Args:
        detector: from :func:`dronevision.infer.load_detector`.
        images_bgr: ``(H, W, 3)`` uint8 BGR images.
        settings: the ``slicing`` group.
        factors: the GSD resize factor of each image, or one for all (:class:`dronevision.infer.gsd.GsdScaler`);
            None: not known.
        batch: images per model call for plain inference (sliced inference uses ``settings.batch``).
        timings: if given, gets the seconds per stage added (``resize`` and ``merge`` here, the detector's own).
    """
    from dataclasses import replace

    from dronevision.infer.sliced import sliced_predict

    per_image = [factors] * len(images_bgr) if factors is None or isinstance(factors, (int, float)) else list(factors)
    if len(per_image) != len(images_bgr):
        raise ValueError(f"{len(per_image)} factors for {len(images_bgr)} images")
    input_hw = detector.input_hw
    scales = settings.scales or (1.0,)
    box_px = (settings.scales_box_px or detector.train_box_px) if len(scales) > 1 else None
    if settings.enabled:
        tiles, view_hw = settings, (settings.tile, settings.tile)
    else:  # larger than the input: tiles the input's size, no full-frame pass, merged by NMS as one large input
        # would be (NMM at evaluate's conf 0.001 unites a car with every weak box around it: 0.5x mAP50 0.607 -> 0.001)
        tiles = replace(settings, enabled=True, tile=min(input_hw), full_frame=False, merge="nms", match="iou")
        view_hw = input_hw
    found: list[list[Detections]] = [[] for _ in images_bgr]
    used: list[list[tuple[float, float]]] = [[] for _ in images_bgr]  # resize factors (w, h)
    seen: list[list[float]] = [[] for _ in images_bgr]  # original pixels to the pixels the model saw
    for scale in scales:
        started = time.perf_counter()
        views, whole = [], []  # whole: run as one model input (else in tiles)
        for i, (image, factor) in enumerate(zip(images_bgr, per_image)):
            h, w = image.shape[:2]
            view = view_factor((w, h), factor, input_hw, settings.enabled)
            if factor is None and scale == 1.0:  # the model's own view: exactly the path without scaling
                views.append(image)
                whole.append(not settings.enabled)
                used[i].append((1.0, 1.0))
                seen[i].append(view)
                continue
            size = scaled_size((w, h), view * scale)
            views.append(pad_to(resize_bgr(image, size), view_hw))
            whole.append(not settings.enabled and views[-1].shape[:2] == tuple(view_hw))
            used[i].append((size[0] / w, size[1] / h))
            seen[i].append(float(np.sqrt(size[0] / w * size[1] / h)))  # the rounded size the model saw
        add_time(timings, "resize", started)
        picked = [i for i, one in enumerate(whole) if one]
        dets = dict(zip(picked, detector.predict([views[i] for i in picked], batch=batch, timings=timings)))
        for i, one in enumerate(whole):
            found[i].append(dets[i] if one else sliced_predict(detector, views[i], tiles, timings=timings))
    started = time.perf_counter()
    out = []
    for image, dets_i, ratios, views_i in zip(images_bgr, found, used, seen):
        h, w = image.shape[:2]
        out.append(
            merge_scales(
                dets_i,
                ratios,
                (w, h),
                merge=settings.merge,
                match=settings.match,
                threshold=settings.match_threshold,
                class_agnostic=settings.class_agnostic,
                focus=settings.scales_focus,
                box_px=box_px,
                sigma=settings.scales_box_sigma,
                view_factors=views_i,
            )
        )
    add_time(timings, "merge", started)
    return out
