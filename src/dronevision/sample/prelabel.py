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

from dronevision.dataset.records import ImageBoxes
from dronevision.dataset.yolo import image_size
from dronevision.errors import DroneVisionError
from dronevision.infer.sliced import SliceSettings

log = logging.getLogger(__name__)


# --- I/O adapters ----------------------------------------------------------------------------------------------


def prelabel(
    weights: Path,
    images: Sequence[Path],
    *,
    conf: float = 0.25,
    imgsz: int = 640,
    device: str | None = None,
    class_map: Mapping[int, str] | None = None,
    slicing: SliceSettings | None = None,
    runtime: str = "auto",
    threads: int | None = None,
) -> tuple[list[ImageBoxes], dict[int, str]]:
    """Run a detector on images for human review.

    Args:
        weights: a .pt, .onnx or OpenVINO IR.
        images: the image files.
        conf: the confidence threshold.
        imgsz: the inference size (of each tile, with slicing).
        device: ultralytics' device (``cpu``, ``0``, ...); None picks one.
        class_map: model class id -> name to write; ids not in it are dropped. Default: the model's ``names``.
        slicing: sliced inference for small objects in large frames (``slicing.enabled``), multi-scale inference
            (``slicing.scales``) and GSD resizing from the config (``slicing.gsd``); None: plain inference.
        runtime: the detector's runtime (:func:`dronevision.infer.load_detector`).
        threads: CPU threads; None: every core.

    Returns:
        ``(path, (w, h), boxes)`` per image (in ``images`` order) and the class id -> name map used.

    Raises:
        DroneVisionError: ``weights`` or an image does not exist, or ``class_map`` names an id the model lacks.
    """
    from dronevision.infer import load_detector, predict_images

    weights = Path(weights)
    if not weights.exists():
        raise DroneVisionError(f"{weights}: weights file does not exist")
    paths = [Path(p) for p in images]
    for path in paths:
        if not path.is_file():
            raise DroneVisionError(f"{path}: image file does not exist")
    settings = slicing or SliceSettings()
    detector = load_detector(weights, runtime=runtime, threads=threads, imgsz=imgsz, conf=conf, device=device)
    model_names = dict(detector.names)
    if class_map is None:
        names = dict(sorted(model_names.items()))
    else:
        unknown = sorted(set(class_map) - set(model_names))
        if unknown:
            raise DroneVisionError(f"class_map ids {unknown} are not classes of {weights} (it has {model_names})")
        names = {int(k): str(class_map[k]) for k in sorted(class_map)}
    sizes = [image_size(path) for path in paths]
    detections = predict_images(detector, paths, settings=settings, progress=len(paths) > 1)
    items = [(path, wh, det.filter(classes=names)) for path, wh, det in zip(paths, sizes, detections)]
    mode = f"sliced {settings}" if settings.enabled else "plain"
    if settings.scaling:
        mode += f", scales {settings.scales or (1.0,)}, GSD {settings.gsd}"
    log.info(
        "%s: %d boxes on %d images (conf >= %g, %s)", weights, sum(len(d) for _, _, d in items), len(items), conf, mode
    )
    return items, names
