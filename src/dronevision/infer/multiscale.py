"""Scaled and multi-scale inference: frames resized before detection, boxes mapped back to the original pixels.

Two settings of the ``slicing`` group drive it (:class:`dronevision.infer.sliced.SliceSettings`): ``gsd`` gives each
frame a resize factor so that objects appear at the training scale (:mod:`dronevision.infer.gsd`), and ``scales``
runs each frame at several extra factors whose boxes are merged with the group's ``merge``/``match`` rules
(:func:`dronevision.infer.merge.merge_detections`). The resized frame goes through the configured path: sliced
when ``slicing.enabled`` (tiles of the resized frame: a tile the size of the model's input sees the objects at the
resized scale), else plain (the whole frame is letterboxed to the model's input, so a resize only changes what
the model sees when the frame is no larger than that input).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from dronevision.infer.detector import Detector, add_time
from dronevision.infer.geometry import clip_boxes
from dronevision.infer.merge import merge_detections
from dronevision.schema import Detections

if TYPE_CHECKING:
    from dronevision.infer.sliced import SliceSettings

log = logging.getLogger(__name__)


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
    """Boxes found in a resized image, moved back to the original image's pixels (divided, clipped to it).

    Examples:
        >>> d = Detections(xyxy=[[10, 10, 20, 30]], class_id=[0], confidence=[0.9])
        >>> unscale_detections(d, (0.5, 0.5), (64, 48)).xyxy.tolist()
        [[20.0, 20.0, 40.0, 48.0]]
    """
    if not len(det):
        return det
    fx, fy = factor_wh
    xyxy = det.xyxy / np.array([fx, fy, fx, fy])
    clipped, _ = clip_boxes(xyxy, np.array([0, 0, *image_wh]))
    return Detections(xyxy=clipped, class_id=det.class_id, confidence=det.confidence)


def merge_scales(
    per_scale: Sequence[Detections],
    factors_wh: Sequence[tuple[float, float]],
    image_wh: tuple[int, int],
    *,
    merge: str = "nms",
    match: str = "iou",
    threshold: float = 0.5,
    class_agnostic: bool = False,
) -> Detections:
    """The detections of several resized copies of one image, in its own pixels, merged into one set.

    Examples:
        >>> a = Detections(xyxy=[[10, 10, 20, 20]], class_id=[0], confidence=[0.6])  # found at half size
        >>> b = Detections(xyxy=[[21, 20, 40, 41]], class_id=[0], confidence=[0.9])  # found at full size
        >>> merge_scales([a, b], [(0.5, 0.5), (1.0, 1.0)], (64, 48)).xyxy.tolist()
        [[21.0, 20.0, 40.0, 41.0]]
    """
    if len(per_scale) != len(factors_wh):
        raise ValueError(f"{len(per_scale)} detection sets for {len(factors_wh)} factors")
    det = Detections.merge([unscale_detections(d, f, image_wh) for d, f in zip(per_scale, factors_wh)])
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


def scaled_predict(
    detector: Detector,
    images_bgr: Sequence[np.ndarray],
    settings: SliceSettings,
    *,
    factors: Sequence[float] | float = 1.0,
    batch: int = 8,
    timings: dict[str, float] | None = None,
) -> list[Detections]:
    """Detections per image in its own pixels: each image resized by its factor times each of ``settings.scales``
    (``(1.0,)`` when None), detected (sliced when ``settings.enabled``), boxes mapped back and, with several
    scales, merged by ``settings.merge``/``match``/``match_threshold``.

    Args:
        detector: from :func:`dronevision.infer.load_detector`.
        images_bgr: ``(H, W, 3)`` uint8 BGR images.
        settings: the ``slicing`` group.
        factors: the GSD resize factor of each image, or one for all (:class:`dronevision.infer.gsd.GsdScaler`).
        batch: images per model call for plain inference (sliced inference uses ``settings.batch``).
        timings: if given, gets the seconds per stage added (``resize`` and ``merge`` here, the detector's own).
    """
    from dronevision.infer.sliced import sliced_predict

    per_image = [float(factors)] * len(images_bgr) if isinstance(factors, (int, float)) else list(factors)
    if len(per_image) != len(images_bgr):
        raise ValueError(f"{len(per_image)} factors for {len(images_bgr)} images")
    scales = settings.scales or (1.0,)
    found: list[list[Detections]] = [[] for _ in images_bgr]
    used: list[list[tuple[float, float]]] = [[] for _ in images_bgr]
    for scale in scales:
        started = time.perf_counter()
        resized, ratios = [], []
        for image, factor in zip(images_bgr, per_image):
            h, w = image.shape[:2]
            size = scaled_size((w, h), factor * scale)
            resized.append(resize_bgr(image, size))
            ratios.append((size[0] / w, size[1] / h))
        add_time(timings, "resize", started)
        if settings.enabled:
            dets = [sliced_predict(detector, image, settings, timings=timings) for image in resized]
        else:
            dets = detector.predict(resized, batch=batch, timings=timings)  # one shape group per size
        for i, (det, ratio) in enumerate(zip(dets, ratios)):
            found[i].append(det)
            used[i].append(ratio)
    started = time.perf_counter()
    out = []
    for image, dets, ratios in zip(images_bgr, found, used):
        h, w = image.shape[:2]
        out.append(
            merge_scales(
                dets,
                ratios,
                (w, h),
                merge=settings.merge,
                match=settings.match,
                threshold=settings.match_threshold,
                class_agnostic=settings.class_agnostic,
            )
        )
    add_time(timings, "merge", started)
    return out
