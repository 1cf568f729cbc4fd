"""Pre-labelling for human review: run a detector on images; its boxes go to CVAT, Label Studio or YOLO files.

:func:`prelabel` runs a checkpoint through the inference layer (:mod:`dronevision.infer`, plain or sliced) and
returns per image ``(path, (w, h), Detections)``; the writers sit beside their readers in the dataset stage
(:func:`dronevision.dataset.cvat.write_cvat_images`, :func:`dronevision.dataset.labelstudio.write_label_studio`,
:func:`dronevision.dataset.yolo.write_yolo`) and need no model. What reviewers send back is read by the dataset stage:
CVAT XML with ``source.format=cvat`` (:func:`dronevision.dataset.cvat.read_cvat`), Label Studio JSON with
:func:`dronevision.dataset.labelstudio.read_label_studio`, a YOLO folder with ``source.format=yolo``. Coordinates are
written with full float precision, so a file read back unchanged gives the same boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.dataset.records import ImageBoxes
from dronevision.dataset.yolo import image_size
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)


# --- pure core -------------------------------------------------------------------------------------------------


def select_classes(det: Detections, class_map: Mapping[int, str]) -> Detections:
    """Keep the boxes whose class id is in ``class_map`` (ids stay as they are).

    Examples:
        >>> det = Detections(xyxy=[[0, 0, 1, 1], [2, 2, 3, 3]], class_id=[0, 5], confidence=[0.9, 0.4])
        >>> kept = select_classes(det, {5: "truck"})
        >>> kept.class_id.tolist(), kept.confidence.tolist()
        ([5], [0.4])
    """
    keep = np.isin(det.class_id, np.fromiter(class_map, dtype=np.int64, count=len(class_map)))
    confidence = None if det.confidence is None else det.confidence[keep]
    return Detections(xyxy=det.xyxy[keep], class_id=det.class_id[keep], confidence=confidence)


SLICING_KEYS = (
    "enabled",
    "runtime",
    "threads",
    "tile",
    "overlap",
    "batch",
    "full_frame",
    "merge",
    "match",
    "match_threshold",
    "class_agnostic",
)


def slicing_params(slicing: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The sliced-inference settings to use, or None for plain inference (no mapping, or ``enabled`` false).

    Keys: ``enabled``, ``runtime`` and ``threads`` (for :func:`dronevision.infer.load_detector`), and
    :func:`dronevision.infer.sliced_predict`'s ``tile``, ``overlap``, ``batch``, ``full_frame``, ``merge``,
    ``match``, ``match_threshold``, ``class_agnostic``. Missing keys take those functions' defaults; None values
    count as missing.

    Examples:
        >>> slicing_params({"enabled": True, "tile": 512, "merge": None})
        {'tile': 512}
        >>> slicing_params({"enabled": False, "tile": 512}) is None, slicing_params(None) is None
        (True, True)
        >>> slicing_params({"enabled": True, "tiles": 512})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: unknown slicing keys ['tiles']; valid: enabled, runtime, threads, ...
    """
    if not slicing:
        return None
    unknown = sorted(set(slicing) - set(SLICING_KEYS))
    if unknown:
        raise DroneVisionError(f"unknown slicing keys {unknown}; valid: {', '.join(SLICING_KEYS)}")
    if not slicing.get("enabled"):
        return None
    return {k: v for k, v in slicing.items() if k != "enabled" and v is not None}


# --- I/O adapters ----------------------------------------------------------------------------------------------


def prelabel(
    weights: Path,
    images: Sequence[Path],
    *,
    conf: float = 0.25,
    imgsz: int = 640,
    device: str | None = None,
    class_map: Mapping[int, str] | None = None,
    slicing: Mapping[str, Any] | None = None,
) -> tuple[list[ImageBoxes], dict[int, str]]:
    """Run a detector on images for human review.

    Args:
        weights: a .pt or .onnx checkpoint.
        images: the image files.
        conf: the confidence threshold.
        imgsz: the inference size (of each tile, with slicing).
        device: ultralytics' device (``cpu``, ``0``, ...); None picks one.
        class_map: model class id -> name to write; ids not in it are dropped. Default: the model's ``names``.
        slicing: sliced inference for small objects in large frames (see :func:`slicing_params`), e.g.
            ``{"enabled": True, "tile": 640, "overlap": 0.2}``; None or ``enabled: false``: plain inference.

    Returns:
        ``(path, (w, h), boxes)`` per image (in ``images`` order) and the class id -> name map used.

    Raises:
        DroneVisionError: ``weights`` or an image does not exist, or ``class_map`` names an id the model lacks.
    """
    from dronevision.evaluate import load_model, predict
    from dronevision.infer import load_detector, sliced_predict_iter

    weights = Path(weights)
    if not weights.is_file():
        raise DroneVisionError(f"{weights}: weights file does not exist")
    paths = [Path(p) for p in images]
    for path in paths:
        if not path.is_file():
            raise DroneVisionError(f"{path}: image file does not exist")
    params = slicing_params(slicing)
    if params is None:
        model = load_model(weights)
        model_names = {int(k): str(v) for k, v in model.names.items()}
    else:
        detector = load_detector(
            weights,
            runtime=params.pop("runtime", "auto"),
            threads=params.pop("threads", None),
            imgsz=imgsz,
            conf=conf,
            device=device,
        )
        model_names = dict(detector.names)
    if class_map is None:
        names = dict(sorted(model_names.items()))
    else:
        unknown = sorted(set(class_map) - set(model_names))
        if unknown:
            raise DroneVisionError(f"class_map ids {unknown} are not classes of {weights} (it has {model_names})")
        names = {int(k): str(class_map[k]) for k in sorted(class_map)}
    sizes = [image_size(path) for path in paths]
    if params is None:
        detections = predict(model, [str(p) for p in paths], imgsz=imgsz, device=device, conf=conf)
    else:
        detections = sliced_predict_iter(detector, paths, progress=len(paths) > 1, **params)
    items = [(path, wh, select_classes(det, names)) for path, wh, det in zip(paths, sizes, detections)]
    mode = "plain" if params is None else f"sliced {params}"
    log.info(
        "%s: %d boxes on %d images (conf >= %g, %s)", weights, sum(len(d) for _, _, d in items), len(items), conf, mode
    )
    return items, names
