"""Pre-labelling for human review: run a detector on images, write its boxes for CVAT, Label Studio or YOLO.

:func:`prelabel` runs a checkpoint (through :func:`dronevision.evaluate.predict`, or, with ``slicing.enabled``,
through sliced inference: :func:`dronevision.slicing.sliced_predict`) and returns per image
``(path, (w, h), Detections)``; the writers need no model. What reviewers send back is read by the dataset stage:
CVAT XML with ``source.format=cvat`` (:func:`dronevision.dataset.cvat.read_cvat`), Label Studio JSON with
:func:`dronevision.dataset.labelstudio.read_label_studio`, a YOLO folder with ``source.format=yolo``. Coordinates are
written with full float precision, so a file read back unchanged gives the same boxes.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from dronevision.dataset.labelstudio import LOCAL_FILES_PREFIX
from dronevision.dataset.writer import link_or_copy
from dronevision.dataset.yolo import IMAGE_SUFFIXES, image_size
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

Item = tuple[Path, tuple[int, int], Detections]  # image, (w, h), boxes in its pixels


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


def label_names(names: Mapping[int, str]) -> list[str]:
    """The distinct class names in class-id order (several ids may share a name, merging those classes).

    Examples:
        >>> label_names({7: "truck", 2: "car", 5: "car"})
        ['car', 'truck']
    """
    return list(dict.fromkeys(names[k] for k in sorted(names)))


def check_items(items: Sequence[Item], names: Mapping[int, str]) -> None:
    """Refuse what no annotation tool reads back: unknown class ids, odd boxes or sizes, unusable class names.

    Examples:
        >>> det = Detections(xyxy=[[5, 5, 2, 9]], class_id=[0])
        >>> check_items([(Path("a.jpg"), (64, 48), det)], {0: "car"})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.jpg: box 0 has x2 < x1 or y2 < y1: [5.0, 5.0, 2.0, 9.0]
    """
    for name in names.values():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DroneVisionError(f"class name {name!r} must be non-empty, without surrounding spaces")
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise DroneVisionError(f"class name {name!r} holds control characters")
    for image, resolution_wh, det in items:
        w, h = resolution_wh
        if not (isinstance(w, (int, np.integer)) and isinstance(h, (int, np.integer)) and w > 0 and h > 0):
            raise DroneVisionError(f"{image}: image size must be positive whole pixels, got {resolution_wh}")
        unknown = sorted(set(det.class_id.tolist()) - set(names))
        if unknown:
            raise DroneVisionError(f"{image}: class ids {unknown} are not in names {dict(names)}")
        finite = np.isfinite(det.xyxy).all(axis=1)
        if det.confidence is not None:
            finite &= np.isfinite(det.confidence)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise DroneVisionError(f"{image}: box {i} has a value that is not finite: {det.xyxy[i].tolist()}")
        negative = (det.xyxy[:, 2] < det.xyxy[:, 0]) | (det.xyxy[:, 3] < det.xyxy[:, 1])
        if negative.any():
            i = int(np.flatnonzero(negative)[0])
            raise DroneVisionError(f"{image}: box {i} has x2 < x1 or y2 < y1: {det.xyxy[i].tolist()}")


def yolo_label_lines(det: Detections, resolution_wh: tuple[int, int], class_index: Mapping[int, int]) -> list[str]:
    """YOLO label lines ``class cx cy w h`` (normalised, shortest exact float text); boxes are clipped to the image.

    Args:
        det: boxes in pixels.
        resolution_wh: the image size.
        class_index: class id of ``det`` -> line class (index in ``classes.txt``).

    Examples:
        >>> det = Detections(xyxy=[[10, 20, 30, 60], [-5, 0, 10, 100]], class_id=[7, 2])
        >>> yolo_label_lines(det, (100, 100), {2: 0, 7: 1})
        ['1 0.2 0.4 0.2 0.4', '0 0.05 0.5 0.1 1.0']
    """
    w, h = resolution_wh
    xyxy = np.clip(det.xyxy, 0.0, [w, h, w, h])
    lines = []
    for (x1, y1, x2, y2), cls in zip(xyxy.tolist(), det.class_id.tolist()):
        values = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
        lines.append(" ".join([str(class_index[cls]), *(repr(float(v)) for v in values)]))
    return lines


def label_studio_task(
    image_url: str,
    resolution_wh: tuple[int, int],
    det: Detections,
    names: Mapping[int, str],
    *,
    model_version: str,
) -> dict[str, Any]:
    """One Label Studio task with the boxes as pre-annotations (percentages of the image; ``score`` per region).

    Examples:
        >>> det = Detections(xyxy=[[20, 10, 70, 60]], class_id=[0], confidence=[0.5])
        >>> task = label_studio_task("/data/local-files/?d=a.jpg", (200, 100), det, {0: "car"}, model_version="m")
        >>> [region] = task["predictions"][0]["result"]
        >>> region["value"], region["score"], task["predictions"][0]["score"]
        ({'x': 10.0, 'y': 10.0, 'width': 25.0, 'height': 50.0, 'rotation': 0, 'rectanglelabels': ['car']}, 0.5, 0.5)
    """
    w, h = resolution_wh
    results = []
    confidence = det.confidence.tolist() if det.confidence is not None else [None] * len(det)
    for i, ((x1, y1, x2, y2), cls, score) in enumerate(zip(det.xyxy.tolist(), det.class_id.tolist(), confidence)):
        value = {
            "x": x1 / w * 100.0,
            "y": y1 / h * 100.0,
            "width": (x2 - x1) / w * 100.0,
            "height": (y2 - y1) / h * 100.0,
            "rotation": 0,
            "rectanglelabels": [names[cls]],
        }
        region: dict[str, Any] = {
            "id": f"dv{i}",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": int(w),
            "original_height": int(h),
            "image_rotation": 0,
            "value": value,
        }
        if score is not None:
            region["score"] = score
        results.append(region)
    prediction: dict[str, Any] = {"model_version": model_version}
    if det.confidence is not None:  # Label Studio sorts tasks by it: the mean box confidence, 0 without boxes
        prediction["score"] = float(det.confidence.mean()) if len(det) else 0.0
    prediction["result"] = results
    return {"data": {"image": image_url}, "predictions": [prediction]}


def cvat_images_xml(items: Sequence[tuple[str, tuple[int, int], Detections]], names: Mapping[int, str]) -> ET.Element:
    """A CVAT for images 1.1 ``<annotations>`` element from ``(image name, (w, h), boxes)``; exact float text.

    Examples:
        >>> det = Detections(xyxy=[[1.5, 2, 10, 0.1 + 20]], class_id=[0])
        >>> root = cvat_images_xml([("f/a.jpg", (64, 48), det)], {0: "car"})
        >>> root.find("meta/task/labels/label/name").text, root.find("image").attrib
        ('car', {'id': '0', 'name': 'f/a.jpg', 'width': '64', 'height': '48'})
        >>> root.find("image/box").get("ybr")
        '20.1'
    """
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "size").text = str(len(items))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in label_names(names):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
    for index, (image_name, (w, h), det) in enumerate(items):
        attrib = {"id": str(index), "name": image_name, "width": str(int(w)), "height": str(int(h))}
        node = ET.SubElement(root, "image", attrib)
        for (x1, y1, x2, y2), cls in zip(det.xyxy.tolist(), det.class_id.tolist()):
            box = {"label": names[cls], "occluded": "0", "source": "auto"}
            box.update({k: repr(float(v)) for k, v in zip(("xtl", "ytl", "xbr", "ybr"), (x1, y1, x2, y2))})
            box["z_order"] = "0"
            ET.SubElement(node, "box", box)
    return root


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

    Keys: ``enabled``, ``runtime`` and ``threads`` (for :func:`dronevision.slicing.load_detector`), and
    :func:`dronevision.slicing.sliced_predict`'s ``tile``, ``overlap``, ``batch``, ``full_frame``, ``merge``,
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


def _relative(image: Path, image_root: Path) -> str:
    """The image path relative to ``image_root`` with ``/`` separators; an image outside it is refused."""
    for path, root in ((Path(image), Path(image_root)), (Path(image).resolve(), Path(image_root).resolve())):
        if path.is_relative_to(root):
            relative = path.relative_to(root).as_posix()
            if any(ord(c) < 32 or c == "\x7f" for c in relative):
                raise DroneVisionError(f"{image}: the file name holds control characters")
            return relative
    raise DroneVisionError(f"{image}: image is not inside image_root {image_root}")


def prelabel(
    weights: Path,
    images: Sequence[Path],
    *,
    conf: float = 0.25,
    imgsz: int = 640,
    device: str | None = None,
    class_map: Mapping[int, str] | None = None,
    slicing: Mapping[str, Any] | None = None,
) -> tuple[list[Item], dict[int, str]]:
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
    from dronevision.slicing import load_detector, sliced_predict_iter

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


def write_yolo(out_dir: Path, items: Sequence[Item], names: Mapping[int, str]) -> Path:
    """Write a YOLO folder (``images/``, ``labels/``, ``classes.txt``) that ``source.format=yolo`` reads.

    Classes are numbered in ``classes.txt`` order (:func:`label_names`), so sparse or merged ids become ``0..K-1``.
    Images are hard-linked (copied across file systems) under their file names, which must differ in their stems.
    Every image gets a label file, empty without boxes. Files of the same name in ``out_dir`` are replaced.

    Returns:
        ``out_dir``.
    """
    check_items(items, names)
    stems: dict[str, Path] = {}
    for image, _, _ in items:
        image = Path(image)
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise DroneVisionError(f"{image}: YOLO readers take {', '.join(sorted(IMAGE_SUFFIXES))} images only")
        if image.stem in stems:
            raise DroneVisionError(f"{image}: a second image named '{image.stem}' (first: {stems[image.stem]})")
        stems[image.stem] = image
    classes = label_names(names)
    class_index = {k: classes.index(v) for k, v in names.items()}
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    for image, resolution_wh, det in items:
        image = Path(image)
        link_or_copy(image, out_dir / "images" / image.name)
        lines = yolo_label_lines(det, resolution_wh, class_index)
        (out_dir / "labels" / f"{image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))
    log.info("%s: %d images, %d boxes, %d classes", out_dir, len(items), sum(len(d) for _, _, d in items), len(classes))
    return out_dir


def write_cvat_images(path: Path, items: Sequence[Item], names: Mapping[int, str], *, image_root: Path) -> Path:
    """Write a CVAT for images 1.1 XML file to upload as annotations to a CVAT task holding the same images.

    Image names are relative to ``image_root`` (as the CVAT task knows them); boxes have ``source="auto"``.

    Returns:
        ``path``.
    """
    check_items(items, names)
    named = [(_relative(image, image_root), wh, det) for image, wh, det in items]
    root = cvat_images_xml(named, names)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    log.info("%s: %d images, %d boxes (CVAT for images 1.1)", path, len(items), sum(len(d) for _, _, d in items))
    return path


def write_label_studio(
    path: Path,
    items: Sequence[Item],
    names: Mapping[int, str],
    *,
    image_root: Path,
    url_prefix: str = LOCAL_FILES_PREFIX,
    model_version: str = "dronevision",
) -> Path:
    """Write Label Studio tasks with the boxes as predictions (pre-annotations) for import.

    The labelling config needs ``<Image name="image" value="$image"/>`` and ``<RectangleLabels name="label"
    toName="image">`` with every class name. Image URLs are ``url_prefix`` + the path relative to ``image_root``
    (URL-quoted); for Label Studio's local files ``image_root`` is its ``LOCAL_FILES_DOCUMENT_ROOT``.

    Returns:
        ``path``.
    """
    check_items(items, names)
    tasks = []
    for image, resolution_wh, det in items:
        url = url_prefix + quote(_relative(image, image_root), safe="/")
        tasks.append(label_studio_task(url, resolution_wh, det, names, model_version=model_version))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    log.info("%s: %d tasks, %d boxes (Label Studio)", path, len(tasks), sum(len(d) for _, _, d in items))
    return path
