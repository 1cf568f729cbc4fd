"""Label Studio JSON exports (tasks with ``annotations`` and ``predictions``): parse into :class:`SourceImage` records.

This is the way back from human review of pre-labels (:func:`write_label_studio`, below). Per task, the boxes
come from the first annotation that was not cancelled, else from the first prediction (the pre-labels nobody
changed). Only ``rectanglelabels`` regions are read; other region types are counted and logged once per file.

:func:`parse_label_studio` checks a loaded JSON document without touching the disk; :func:`read_label_studio` reads
the file and checks that the images exist. A task with any bad region is reported once and left out whole: a partly
read task would teach the model that the dropped object is background. Regions of other types in kept tasks are
counted in ``issues.dropped`` (``not_a_box:<type>``), so that they show in the build's summary.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, unquote_plus, urlsplit

import numpy as np

from dronevision.dataset.records import BadRecord as _Bad
from dronevision.dataset.records import (
    ImageBoxes,
    Issues,
    SourceImage,
    check_items,
    existing_images,
    load_json,
    relative_image_name,
    safe_join,
)
from dronevision.dataset.records import json_number as _number
from dronevision.dataset.records import short_repr as _short
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

LOCAL_FILES_PREFIX = "/data/local-files/?d="
UPLOAD_PREFIX = "/data/upload/"

XYXY = tuple[float, float, float, float]


def _task_where(where: str, index: int, task: Any) -> str:
    """``x.json: task[3] (id=17)``: the file, the list entry and the task id when it has a usable one."""
    ident = task.get("id") if isinstance(task, dict) else None
    usable = isinstance(ident, (int, str)) and not isinstance(ident, bool)
    return f"{where}: task[{index}]" + (f" (id={_short(ident)})" if usable else "")


def image_path_from_url(url: str, *, url_prefix: str = LOCAL_FILES_PREFIX) -> str | None:
    """The image file a task's ``data.image`` points to, relative to the image folder; None for a remote URL.

    ``url_prefix`` is stripped; otherwise the path after ``?d=`` (local files served by Label Studio, decoded as Label
    Studio decodes a query) or after ``/data/upload/`` (files uploaded to Label Studio; their folder is
    ``<Label Studio data>/media/upload``) is used; a plain path is taken as is.

    Examples:
        >>> image_path_from_url("/data/local-files/?d=flight%201/a+b.jpg")
        'flight 1/a b.jpg'
        >>> image_path_from_url("http://localhost:8080/data/upload/3/1f2e-a.jpg")
        '3/1f2e-a.jpg'
        >>> image_path_from_url("frames/a.jpg"), image_path_from_url("https://example.com/a.jpg")
        ('frames/a.jpg', None)
    """
    if url_prefix and url.startswith(url_prefix):
        rest = url[len(url_prefix) :]
        return unquote_plus(rest) if url_prefix.endswith("?d=") else unquote(rest)
    if "?d=" in url:
        return unquote_plus(url.split("?d=", 1)[1].split("&", 1)[0])
    remote = "://" in url or url.startswith("data:")
    path = urlsplit(url).path if remote else url
    if path.startswith(UPLOAD_PREFIX):
        return unquote(path[len(UPLOAD_PREFIX) :])
    return None if remote else url


def _image_name(data: Any, url_prefix: str) -> str:
    """The relative image path of a task's ``data``: a non-empty file name without control characters."""
    if not isinstance(data, dict):
        raise _Bad("bad_format", f"'data' must be an object with 'image', got {type(data).__name__}")
    url = data.get("image")
    if not isinstance(url, str) or not url:
        raise _Bad("bad_format", f"'data.image' must be a non-empty string, got {_short(url)}")
    name = image_path_from_url(url, url_prefix=url_prefix)
    if name is None:
        expected = f"'{url_prefix}<path>' or '{UPLOAD_PREFIX}<path>'"
        raise _Bad("bad_format", f"image URL {_short(url)} is not a local file (expected {expected})")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("bad_format", f"image path {_short(name)} is not valid text") from None
    if not name or any(ord(c) < 32 or c == "\x7f" for c in name) or not PurePosixPath(name).stem:
        raise _Bad("bad_format", f"image path {_short(name)} is not a file name")
    return name


def _results(task: dict[str, Any]) -> tuple[list[Any], str]:
    """The regions to read and where they come from: the first annotation not cancelled, else the first prediction."""
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise _Bad("bad_format", f"'annotations' must be a list, got {type(annotations).__name__}")
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise _Bad("bad_format", f"annotations[{index}] must be an object, got {type(annotation).__name__}")
        if annotation.get("was_cancelled"):
            continue
        result = annotation.get("result")
        if not isinstance(result, list):
            raise _Bad("bad_format", f"annotations[{index}].result must be a list, got {_short(result)}")
        return result, f"annotations[{index}]"
    predictions = task.get("predictions", [])
    if not isinstance(predictions, list):
        raise _Bad("bad_format", f"'predictions' must be a list, got {type(predictions).__name__}")
    if not predictions:
        return [], ""
    prediction = predictions[0]
    result = prediction.get("result") if isinstance(prediction, dict) else None
    if not isinstance(result, list):
        raise _Bad("bad_format", f"predictions[0] must be an object with a 'result' list, got {_short(prediction)}")
    return result, "predictions[0]"


def _angle(value: Any, key: str) -> None:
    """Refuse a rotation: an axis-aligned box cannot hold it exactly (0 and multiples of 360 are fine)."""
    angle = _number(value)
    if angle is None:
        raise _Bad("non_numeric", f"'{key}' is not a number: {_short(value)}")
    if angle % 360.0:
        raise _Bad("bad_format", f"'{key}' is {_short(value)}: rotated boxes are not supported")


def _size(result: dict[str, Any]) -> tuple[int, int]:
    """``(original_width, original_height)`` of a region: positive whole numbers of pixels."""
    sizes = []
    for key in ("original_width", "original_height"):
        if key not in result:
            raise _Bad("bad_format", f"region has no '{key}' (needed to turn percentages into pixels)")
        value = _number(result[key])
        if value is None:
            raise _Bad("non_numeric", f"'{key}' is not a number: {_short(result[key])}")
        if value < 0:
            raise _Bad("negative_size", f"'{key}' is negative: {_short(result[key])}")
        if value == 0 or not value.is_integer():
            raise _Bad("bad_format", f"'{key}' must be a positive whole number of pixels, got {_short(result[key])}")
        sizes.append(int(value))
    return sizes[0], sizes[1]


def _region(result: Any) -> tuple[str, XYXY, tuple[int, int]] | None:
    """``(label, xyxy in pixels, (w, h))`` of one ``rectanglelabels`` region; None for other region types."""
    if not isinstance(result, dict):
        raise _Bad("bad_format", f"expected a region object, got {type(result).__name__}")
    if result.get("type") != "rectanglelabels":
        return None
    value = result.get("value")
    if not isinstance(value, dict):
        raise _Bad("bad_format", f"region 'value' must be an object, got {_short(value)}")
    labels = value.get("rectanglelabels")
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str) or not labels[0].strip():
        raise _Bad("bad_format", f"'rectanglelabels' must hold exactly one class name, got {_short(labels)}")
    _angle(value.get("rotation", 0), "rotation")
    _angle(result.get("image_rotation", 0), "image_rotation")
    for key in ("x", "y", "width", "height"):
        if key not in value:
            raise _Bad("bad_format", f"region value has no '{key}'")
    numbers = [_number(value[key]) for key in ("x", "y", "width", "height")]
    if None in numbers:
        raw = {key: value[key] for key in ("x", "y", "width", "height")}
        raise _Bad("non_numeric", f"region holds a value that is not a finite number: {_short(raw)}")
    x, y, w, h = (float(n) for n in numbers if n is not None)
    if w < 0 or h < 0:
        raise _Bad("negative_size", f"region has a negative width or height: width={w!r}, height={h!r}")
    size = _size(result)
    sx, sy = size[0] / 100.0, size[1] / 100.0
    xyxy = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
    if not all(math.isfinite(v) for v in xyxy):
        raise _Bad("non_numeric", f"region coordinates overflow: x={x!r}, y={y!r}, width={w!r}, height={h!r}")
    return labels[0], xyxy, size


def _task(task: Any, url_prefix: str) -> tuple[str, list[str], list[XYXY], Any, Counter[str]]:
    """``(relative image path, labels, xyxy, (w, h) or None, other region types)`` of one task, or :class:`_Bad`."""
    if not isinstance(task, dict):
        raise _Bad("bad_format", f"expected a task object with 'data', got {type(task).__name__}")
    name = _image_name(task.get("data"), url_prefix)
    results, origin = _results(task)
    labels: list[str] = []
    boxes: list[XYXY] = []
    resolution_wh = None
    other: Counter[str] = Counter()
    for index, result in enumerate(results):
        try:
            region = _region(result)
        except _Bad as bad:
            raise _Bad(bad.kind, f"{origin}.result[{index}]: {bad.message}") from None
        if region is None:
            other[str(result.get("type"))] += 1
            continue
        label, xyxy, size = region
        if resolution_wh is not None and size != resolution_wh:
            message = f"{origin}.result[{index}]: image size {size} differs from {resolution_wh} of an earlier region"
            raise _Bad("bad_format", message)
        resolution_wh = size
        labels.append(label)
        boxes.append(xyxy)
    return name, labels, boxes, resolution_wh, other


def parse_label_studio(
    data: list[Any], *, root: Path, issues: Issues, where: str, url_prefix: str = LOCAL_FILES_PREFIX
) -> list[SourceImage]:
    """Turn a loaded Label Studio JSON export (a list of tasks) into one :class:`SourceImage` per task, in file order.

    Boxes come from the first annotation that is not ``was_cancelled``, else from ``predictions[0]``; a task with
    neither has no boxes. Regions are percentages of ``original_width``/``original_height`` and become pixel
    ``xyxy``; rotated regions are refused. Issue kinds: ``bad_format``, ``non_numeric``, ``negative_size`` and
    ``path_escape``; a bad task is reported and left out whole. Regions that are not ``rectanglelabels`` are counted
    in ``issues.dropped`` as ``not_a_box:<type>``.

    Args:
        data: the parsed JSON.
        root: the folder image paths are relative to.
        issues: the bad-input policy.
        where: the file, for messages.
        url_prefix: what :func:`dronevision.sample.prelabel.write_label_studio` put before each image path.

    Raises:
        DroneVisionError: ``data`` is not a list, or a bad task under ``Issues("raise")``.

    Examples:
        >>> region = {"type": "rectanglelabels", "original_width": 200, "original_height": 100,
        ...           "value": {"x": 10, "y": 20, "width": 25, "height": 50, "rectanglelabels": ["car"]}}
        >>> task = {"id": 7, "data": {"image": "/data/local-files/?d=f1/a.jpg"}, "predictions": [{"result": [region]}]}
        >>> [image] = parse_label_studio([task], root=Path("/ls"), issues=Issues(), where="x.json")
        >>> image.image.as_posix(), image.name, image.labels, image.xyxy.tolist(), image.resolution_wh
        ('/ls/f1/a.jpg', 'a', ('car',), [[20.0, 20.0, 70.0, 70.0]], (200, 100))
        >>> region["value"]["rotation"] = 30
        >>> parse_label_studio([task], root=Path("/ls"), issues=Issues(), where="x.json")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: x.json: task[0] (id=7): predictions[0].result[0]: 'rotation' is 30: ...
    """
    if not isinstance(data, list):
        hint = " (a single task? wrap it in a list)" if isinstance(data, dict) and "data" in data else ""
        raise DroneVisionError(f"{where}: expected a JSON list of Label Studio tasks, got {type(data).__name__}{hint}")
    records = []
    ignored: Counter[str] = Counter()
    for index, task in enumerate(data):
        rec = _task_where(where, index, task)
        try:
            name, labels, boxes, resolution_wh, other = _task(task, url_prefix)
        except _Bad as bad:
            issues.report(bad.kind, rec, bad.message)
            continue
        path = safe_join(root, name, issues=issues, where=rec)
        if path is None:
            continue
        ignored.update(other)
        records.append(
            SourceImage(
                image=path,
                name=PurePosixPath(name).stem,
                group="",
                xyxy=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                labels=tuple(labels),
                resolution_wh=resolution_wh,
                where=rec,
            )
        )
    for kind, n in sorted(ignored.items()):
        issues.drop(f"not_a_box:{kind}", n)
    if ignored:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(ignored.items()))
        log.info("%s: ignored %d regions that are not rectanglelabels (%s)", where, sum(ignored.values()), kinds)
    return records


def read_label_studio(
    path: Path, *, issues: Issues, images_dir: Path | None = None, url_prefix: str = LOCAL_FILES_PREFIX
) -> list[SourceImage]:
    """Read a Label Studio JSON export and check that its images exist.

    Args:
        path: the JSON file (Label Studio's "JSON" export, or the tasks written by
            :func:`dronevision.sample.prelabel.write_label_studio`).
        issues: the bad-input policy; an image file that does not exist is a ``missing_image``.
        images_dir: the folder image paths are relative to (Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` for local
            files, ``<data dir>/media/upload`` for uploads). Default: the JSON's folder.
        url_prefix: the prefix given to :func:`dronevision.sample.prelabel.write_label_studio`, if not the default.

    Raises:
        DroneVisionError: the file cannot be read or is not valid JSON (whatever the policy), or a bad task under the
            ``raise`` policy.
    """
    path = Path(path)
    data = load_json(path, "Label Studio export")
    root = Path(images_dir) if images_dir is not None else path.parent
    parsed = parse_label_studio(data, root=root, issues=issues, where=str(path), url_prefix=url_prefix)
    records = existing_images(parsed, issues)
    log.info("%s: %d images, %d boxes (images in %s)", path, len(records), sum(len(r.xyxy) for r in records), root)
    return records


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


def write_label_studio(
    path: Path,
    items: Sequence[ImageBoxes],
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
        url = url_prefix + quote(relative_image_name(image, image_root), safe="/")
        tasks.append(label_studio_task(url, resolution_wh, det, names, model_version=model_version))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    log.info("%s: %d tasks, %d boxes (Label Studio)", path, len(tasks), sum(len(d) for _, _, d in items))
    return path
