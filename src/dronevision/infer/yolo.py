"""YOLO pre- and post-processing for exported detectors, vectorised over a batch, as ultralytics does it.

:func:`letterbox_plan` and :func:`letterbox_batch` resize and pad like ultralytics' ``LetterBox`` (same rounding,
grey 114, ``auto`` minimal padding for rectangular inputs); :func:`decode_yolo` is its ``non_max_suppression``
(best class per anchor, ``conf >`` threshold, class-aware NMS suppressing ``IoU >`` threshold, ``max_det``) for
NMS-based heads, and a confidence filter for end-to-end heads (YOLO26, YOLOv10), which output final detections;
:func:`scale_boxes` maps boxes back to the image and clips them to it; :func:`decode` does both into
:class:`~dronevision.schema.Detections`. Results match ultralytics' own predictions on the same input up to
floating-point noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dronevision.infer.merge import nms
from dronevision.schema import Detections

MAX_NMS = 30000  # ultralytics keeps at most this many candidates per image before NMS


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``image_hw`` goes into a model input of ``input_hw``: resized to ``resized_wh``, padded."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_wh: tuple[int, int]
    top: int
    left: int


def letterbox_plan(image_hw: tuple[int, int], imgsz_hw: tuple[int, int], *, stride: int, auto: bool) -> Letterbox:
    """ultralytics' ``LetterBox`` geometry: scale to fit ``imgsz_hw``, pad (to a multiple of ``stride`` if ``auto``).

    Examples:
        >>> letterbox_plan((1500, 2000), (640, 640), stride=32, auto=True)
        Letterbox(image_hw=(1500, 2000), input_hw=(480, 640), resized_wh=(640, 480), top=0, left=0)
        >>> letterbox_plan((1500, 2000), (640, 640), stride=32, auto=False)
        Letterbox(image_hw=(1500, 2000), input_hw=(640, 640), resized_wh=(640, 480), top=80, left=0)
        >>> letterbox_plan((640, 640), (640, 640), stride=32, auto=True).input_hw
        (640, 640)
    """
    h, w = image_hw
    r = min(imgsz_hw[0] / h, imgsz_hw[1] / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = imgsz_hw[1] - new_w, imgsz_hw[0] - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    return Letterbox((h, w), (new_h + top + bottom, new_w + left + right), (new_w, new_h), top, left)


def letterbox_batch(images_bgr: list[np.ndarray], plan: Letterbox, *, uint8: bool = False) -> np.ndarray:
    """Images of one shape (BGR uint8) as a model input ``(B, 3, H, W)``: RGB float32 in 0..1, letterboxed.

    Crops may be views into a larger frame: each is resized (if needed) straight into the padded batch. With
    ``uint8`` the letterboxed ``(B, H, W, 3)`` BGR canvases are returned as they are (OpenVINO's ``u8_input``
    preprocesses inside the graph).

    Examples:
        >>> x = letterbox_batch([np.full((48, 64, 3), 255, np.uint8)] * 2, letterbox_plan((48, 64), (32, 32), stride=32,
        ...     auto=False))
        >>> x.shape, float(x[0, 0, 0, 0]), float(x[0, 0, 16, 16])
        ((2, 3, 32, 32), 0.4470588266849518, 1.0)
    """
    import cv2

    height, width = plan.input_hw
    new_w, new_h = plan.resized_wh
    for i, image in enumerate(images_bgr):
        if image.shape[:2] != plan.image_hw:
            raise ValueError(f"image {i} is {image.shape[:2]}, the plan is for {plan.image_hw}")
    x = np.empty((len(images_bgr), 3, height, width), dtype=np.float32)
    same_size = (new_h, new_w) == plan.image_hw == plan.input_hw
    if same_size and not uint8:  # a tile of the input size: no resize, no padding
        for i, image in enumerate(images_bgr):
            for c in range(3):  # BGR -> RGB, HWC -> CHW, /255 in float32 as ultralytics does
                np.divide(image[..., 2 - c], np.float32(255), out=x[i, c], dtype=np.float32)
        return x
    padded = (new_h, new_w) != (height, width)
    canvas = np.full((len(images_bgr), height, width, 3), 114, dtype=np.uint8) if padded else None
    if canvas is None:  # every pixel is written below: no grey fill
        canvas = np.empty((len(images_bgr), height, width, 3), dtype=np.uint8)
    window = canvas[:, plan.top : plan.top + new_h, plan.left : plan.left + new_w]
    for i, image in enumerate(images_bgr):
        same = (image.shape[1], image.shape[0]) == (new_w, new_h)
        window[i] = image if same else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if uint8:
        return canvas
    for c in range(3):
        np.divide(canvas[..., 2 - c], np.float32(255), out=x[:, c], dtype=np.float32)
    return x


def scale_boxes(xyxy: np.ndarray, plan: Letterbox) -> np.ndarray:
    """Boxes in model-input pixels back to image pixels, clipped to the image (ultralytics' ``scale_boxes``).

    Examples:
        >>> plan = letterbox_plan((1500, 2000), (640, 640), stride=32, auto=False)
        >>> scale_boxes(np.array([[0., 80, 64, 112]]), plan).tolist()
        [[0.0, 0.0, 200.0, 100.0]]
    """
    h, w = plan.image_hw
    new_w, new_h = plan.resized_wh
    out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) - [plan.left, plan.top, plan.left, plan.top]
    out /= [new_w / w, new_h / h, new_w / w, new_h / h]
    return np.clip(out, 0, [w, h, w, h])


def decode_yolo(
    output: np.ndarray, *, conf: float, iou: float, max_det: int, end2end: bool = False
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Raw YOLO outputs to ``(xyxy, confidence, class_id)`` per image, in model-input pixels.

    Args:
        output: ``(B, 4 + nc, A)`` (``cx, cy, w, h`` then class scores per anchor), or ``(B, N, 6)`` rows of
            ``x1, y1, x2, y2, conf, class`` from an end-to-end (NMS-free) model.
        conf: keep boxes scoring more than this.
        iou: class-aware NMS drops a box overlapping a higher one by more than this.
        max_det: at most this many boxes per image.
        end2end: ``output`` is already post-NMS.

    Examples:
        >>> out = np.zeros((1, 5, 3), np.float32)
        >>> out[0, :, 0] = [10, 10, 4, 4, 0.9]; out[0, :, 1] = [10.5, 10, 4, 4, 0.8]; out[0, :, 2] = [30, 30, 4, 4, 0.1]
        >>> [(xyxy, score, cls)] = decode_yolo(out, conf=0.25, iou=0.7, max_det=300)
        >>> xyxy.tolist(), score.round(2).tolist(), cls.tolist()
        ([[8.0, 8.0, 12.0, 12.0]], [0.9], [0])
    """
    results = []
    if end2end:
        for rows in output:
            rows = rows[rows[:, 4] > conf][:max_det]
            results.append((rows[:, :4].astype(np.float64), rows[:, 4].astype(np.float64), rows[:, 5].astype(np.int64)))
        return results
    scores = output[:, 4:]
    best = scores.max(axis=1)  # (B, A)
    for b in range(len(output)):
        anchors = np.flatnonzero(best[b] > conf)
        if not anchors.size:
            results.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)))
            continue
        score = best[b, anchors].astype(np.float64)
        cls = scores[b][:, anchors].argmax(axis=0).astype(np.int64)
        cx, cy, w, h = (output[b, k, anchors].astype(np.float64) for k in range(4))
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        order = np.argsort(-score, kind="stable")[:MAX_NMS]
        keep = nms(xyxy, score, class_id=cls, match="iou", threshold=iou, strict=True, order=order, max_kept=max_det)
        results.append((xyxy[keep], score[keep], cls[keep]))
    return results


def decode(
    output: np.ndarray, plan: Letterbox, *, conf: float, iou: float, max_det: int, end2end: bool
) -> list[Detections]:
    """Raw outputs of a batch letterboxed by ``plan`` to :class:`Detections` in image pixels (:func:`decode_yolo`,
    then :func:`scale_boxes`): what every exported model's output goes through, in evaluation and benchmarks alike.

    Examples:
        >>> out = np.zeros((1, 5, 1), np.float32); out[0, :, 0] = [32, 32, 8, 8, 0.9]
        >>> plan = letterbox_plan((128, 128), (64, 64), stride=32, auto=False)
        >>> [det] = decode(out, plan, conf=0.25, iou=0.7, max_det=300, end2end=False)
        >>> det.xyxy.tolist(), det.class_id.tolist()
        ([[56.0, 56.0, 72.0, 72.0]], [0])
    """
    decoded = decode_yolo(np.asarray(output, dtype=np.float32), conf=conf, iou=iou, max_det=max_det, end2end=end2end)
    return [Detections(xyxy=scale_boxes(xyxy, plan), class_id=cls, confidence=score) for xyxy, score, cls in decoded]


def letterbox_image(image_bgr: np.ndarray, *, imgsz: int | tuple[int, int], uint8: bool = False) -> np.ndarray:
    """One image letterboxed, centred, to ``imgsz`` (a side, or ``(h, w)``): ``(1, 3, H, W)`` RGB float32 in 0..1,
    or with ``uint8`` the ``(H, W, 3)`` BGR canvas.

    Examples:
        >>> canvas = letterbox_image(np.zeros((50, 100, 3), np.uint8), imgsz=64, uint8=True)
        >>> canvas.shape, canvas.dtype, int(canvas[0, 0, 0]), int(canvas[32, 0, 0])
        ((64, 64, 3), dtype('uint8'), 114, 0)
        >>> canvas = letterbox_image(np.zeros((1080, 1920, 3), np.uint8), imgsz=(384, 640), uint8=True)
        >>> canvas[[0, 12, 371, 372], 0, 0].tolist()
        [114, 0, 0, 114]
        >>> letterbox_image(np.zeros((50, 100, 3), np.uint8), imgsz=64).shape
        (1, 3, 64, 64)
    """
    hw = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    x = letterbox_batch([image_bgr], letterbox_plan(image_bgr.shape[:2], hw, stride=32, auto=False), uint8=uint8)
    return x[0] if uint8 else x


def read_letterboxed(image: str | Path, *, imgsz: int) -> np.ndarray:
    """Read an image file and letterbox it (:func:`letterbox_image`); a file that is not an image is a
    :class:`~dronevision.errors.DroneVisionError`."""
    from dronevision.infer.sliced import read_bgr

    return letterbox_image(read_bgr(image), imgsz=imgsz)
