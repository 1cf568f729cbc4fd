"""YOLO pre- and post-processing for ONNX detectors, vectorised over a batch, as ultralytics does it.

:func:`letterbox_plan` and :func:`letterbox_batch` resize and pad like ultralytics' ``LetterBox`` (same rounding,
grey 114, ``auto`` minimal padding for rectangular inputs); :func:`decode_yolo` is its ``non_max_suppression``
(best class per anchor, ``conf >`` threshold, class-aware NMS suppressing ``IoU >`` threshold, ``max_det``);
:func:`scale_boxes` maps boxes back to the image and clips them to it. Results match ultralytics' own predictions
on the same input up to floating-point noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dronevision.infer.merge import _greedy_groups

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


def letterbox_batch(images_bgr: list[np.ndarray], plan: Letterbox) -> np.ndarray:
    """Images of one shape (BGR uint8) as a model input ``(B, 3, H, W)``: RGB float32 in 0..1, letterboxed.

    Crops may be views into a larger frame: each is resized (if needed) straight into the padded batch.

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
    if (new_h, new_w) == plan.image_hw == plan.input_hw:  # a tile of the input size: no resize, no padding
        for i, image in enumerate(images_bgr):
            for c in range(3):  # BGR -> RGB, HWC -> CHW, /255 in float32 as ultralytics does
                np.divide(image[..., 2 - c], np.float32(255), out=x[i, c], dtype=np.float32)
        return x
    canvas = np.full((len(images_bgr), height, width, 3), 114, dtype=np.uint8)
    window = canvas[:, plan.top : plan.top + new_h, plan.left : plan.left + new_w]
    for i, image in enumerate(images_bgr):
        same = (image.shape[1], image.shape[0]) == (new_w, new_h)
        window[i] = image if same else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
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
        groups = _greedy_groups(xyxy, order, cls, match="iou", threshold=iou, strict=True, limit=max_det)
        keep = np.array([i for i, _ in groups], dtype=np.int64)
        results.append((xyxy[keep], score[keep], cls[keep]))
    return results
