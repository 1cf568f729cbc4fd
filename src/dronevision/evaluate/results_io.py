"""Detections as files: the VisDrone result format (for the official VisDrone-DET toolkit) and COCO results JSON.

VisDrone result files (one ``<image stem>.txt`` per image, what the official VisDrone-DET toolkit scores)::

    <left>,<top>,<width>,<height>,<score>,<category>,-1,-1

Lines are written best score first: the toolkit keeps the first N lines of a file, not the N best. Coordinates have
3 decimals, scores 6 significant digits. ``category`` is VisDrone's category id (``pedestrian`` 1 ... ``motor`` 10,
``others`` 11), found by class name when every class name is a VisDrone category name, else our class id + 1.

Files made elsewhere are checked line by line (record by record in JSON): a score outside 0..1 (or not a number), a
box that is not finite or has a negative size, or a category the dataset does not have raises one line naming the
file and the line or record. The evaluate command has no skip option: a results file is scored whole or not at all.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.dataset.records import json_number, load_json, read_text
from dronevision.dataset.visdrone import CATEGORIES, OTHERS
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

# An image without detections gets this line instead of an empty file, which the MATLAB toolkit cannot index
# (``det(1:0, 6)`` of a 0x0 matrix). Category 0 (ignored regions) is never scored, so it changes no number.
PLACEHOLDER_LINE = "0,0,1,1,0,0,-1,-1"
FIELDS = ("left", "top", "width", "height", "score", "category")  # of a result line, for messages


# --- pure core -----------------------------------------------------------------------------------------------------


def visdrone_category_ids(class_names: Mapping[int, str]) -> dict[int, int]:
    """Our class id -> VisDrone category id: by name when all names are VisDrone categories, else id + 1.

    Examples:
        >>> visdrone_category_ids({0: "car", 1: "bus"}), visdrone_category_ids({0: "vehicle", 1: "excavator"})
        ({0: 4, 1: 9}, {0: 1, 1: 2})
    """
    if class_names and all(name in CATEGORIES[1:] for name in class_names.values()):
        return {cid: CATEGORIES.index(name) for cid, name in class_names.items()}
    return {cid: cid + 1 for cid in class_names}


def visdrone_result_lines(det: Detections, category_ids: Mapping[int, int]) -> list[str]:
    """One image's detections as VisDrone result lines, best score first (equal scores keep their order).

    Examples:
        >>> det = Detections(xyxy=[[0, 0, 10, 5], [1.5, 2, 4, 8]], class_id=[0, 1], confidence=[0.2, 0.9])
        >>> visdrone_result_lines(det, {0: 4, 1: 9})
        ['1.500,2.000,2.500,6.000,0.9,9,-1,-1', '0.000,0.000,10.000,5.000,0.2,4,-1,-1']
    """
    if det.confidence is None:
        raise ValueError("detections need confidences")
    order = np.argsort(-det.confidence, kind="stable")
    lines = []
    for (x1, y1, x2, y2), cls, score in zip(
        det.xyxy[order].tolist(), det.class_id[order].tolist(), det.confidence[order].tolist()
    ):
        if cls not in category_ids:
            raise DroneVisionError(f"class id {cls} has no VisDrone category (classes: {sorted(category_ids)})")
        lines.append(f"{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f},{score:.6g},{category_ids[cls]},-1,-1")
    return lines


def parse_visdrone_result_lines(
    lines: Sequence[str], *, source: str, class_of_category: Mapping[int, int], strict: bool = False
) -> tuple[Detections, int]:
    """Parse VisDrone result lines into detections with our class ids, and count the lines of no class of ours.

    Those lines keep class id -1: never scored, but still counted in the toolkit's first-500 per image. With
    ``strict``, only 0 (ignored regions, the placeholder line) and 11 (``others``) may be such categories: any other
    category the dataset does not have raises. Blank lines and a trailing comma are tolerated; anything else wrong
    (a score outside 0..1 included) raises, naming ``source:line``.

    Examples:
        >>> det, n_other = parse_visdrone_result_lines(["1,2,3,4,0.5,4,-1,-1", "0,0,1,1,0,0,-1,-1"], source="a.txt",
        ...                                            class_of_category={4: 0})
        >>> det.xyxy.tolist(), det.class_id.tolist(), n_other
        ([[1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 1.0, 1.0]], [0, -1], 1)
        >>> parse_visdrone_result_lines(["1,2,3,x,0.5,4"], source="a.txt", class_of_category={4: 0})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.txt:1: not a number: 'x' (expected <left>,<top>,<width>,<height>,...
        >>> parse_visdrone_result_lines(["1,2,3,4,1.5,4"], source="a.txt", class_of_category={4: 0})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.txt:1: score 1.5 is not a confidence in 0..1
    """
    xyxy, class_id, score = [], [], []
    n_other = 0
    expected = "expected <left>,<top>,<width>,<height>,<score>,<category>,-1,-1"
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        where = f"{source}:{number}"
        fields = [f.strip() for f in text.removesuffix(",").split(",")]
        if not 6 <= len(fields) <= 8:
            raise DroneVisionError(f"{where}: {len(fields)} comma-separated fields ({expected})")
        values = []
        for f in fields:
            try:
                values.append(float(f))
            except ValueError:
                raise DroneVisionError(f"{where}: not a number: {f!r} ({expected})") from None
        if not all(map(math.isfinite, values)):
            bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            raise DroneVisionError(f"{where}: not a finite number: {FIELDS[bad]} {fields[bad]!r} in {text!r}")
        left, top, w, h, s, category = values[:6]
        if not 0 <= s <= 1:
            raise DroneVisionError(f"{where}: score {fields[4]} is not a confidence in 0..1")
        if w < 0 or h < 0:
            raise DroneVisionError(f"{where}: negative width or height: {text!r}")
        if category != int(category) or category < 0:
            raise DroneVisionError(f"{where}: category {fields[5]} is not a category id (an integer >= 0)")
        if strict and int(category) not in class_of_category and int(category) not in (0, OTHERS):
            ours = sorted(class_of_category)
            raise DroneVisionError(
                f"{where}: category {fields[5]} is not one of the dataset's {ours} (nor 0 or {OTHERS}, never scored)"
            )
        cls = class_of_category.get(int(category), -1)
        n_other += cls < 0
        xyxy.append([left, top, left + w, top + h])
        class_id.append(cls)
        score.append(s)
    return Detections(xyxy=np.reshape(xyxy, (-1, 4)), class_id=class_id, confidence=np.asarray(score)), n_other


def match_detections(
    images: Sequence[Path | str], by_stem: Mapping[str, Detections], *, source: str = "predictions"
) -> list[Detections]:
    """Detections per image, found by file stem; an image without any gets none (logged).

    Raises when some detections belong to none of the images.

    Examples:
        >>> [len(d) for d in match_detections(["images/a.jpg"], {})]
        [0]
    """
    stems = [Path(image).stem for image in images]
    extra = sorted(by_stem.keys() - set(stems))
    if extra:
        raise DroneVisionError(f"{source}: detections for {len(extra)} images not in the dataset, e.g. {extra[:3]}")
    missing = [s for s in stems if s not in by_stem]
    if missing:
        log.warning("%s: no detections for %d of %d images (e.g. %s)", source, len(missing), len(stems), missing[0])
    empty = Detections.empty(with_confidence=True)
    return [by_stem.get(stem, empty) for stem in stems]


def coco_records(predictions: Sequence[Detections], images: Sequence[Path | str]) -> list[dict[str, Any]]:
    """COCO result records: image id = position in ``images``, category id = class id + 1 (the numbering of
    :func:`dronevision.evaluate.coco_ground_truth` and of a built dataset's ``annotations/instances_<split>.json``),
    and the image's ``file_name``. Detections of class id < 0 are left out.

    Examples:
        >>> det = Detections(xyxy=[[1, 2, 4, 6]], class_id=[0], confidence=[0.5])
        >>> coco_records([det], ["images/val/a.jpg"])
        [{'image_id': 0, 'category_id': 1, 'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.5, 'file_name': 'a.jpg'}]
    """
    records = []
    for image_id, (det, image) in enumerate(zip(predictions, images)):
        if det.confidence is None:
            raise ValueError("detections need confidences")
        name = Path(image).name
        for (x1, y1, x2, y2), cls, score in zip(det.xyxy.tolist(), det.class_id.tolist(), det.confidence.tolist()):
            if cls >= 0:
                bbox = [x1, y1, x2 - x1, y2 - y1]
                records.append(
                    {"image_id": image_id, "category_id": cls + 1, "bbox": bbox, "score": score, "file_name": name}
                )
    return records


def map_coco_results(
    records: Any, ground_truth: Mapping[str, Any], *, source: str = "results", match: str = "auto"
) -> list[dict[str, Any]]:
    """Check COCO result records and point their ``image_id`` at the ground truth's images.

    ``match``: ``id`` (the ground truth's image ids), ``file_name`` (the record's ``file_name`` if it has one, else
    its ``image_id`` as a file name, path or stem; a numeric stem may be an integer, as ultralytics writes it), or
    ``auto``: by ``file_name`` when every record has one (as :func:`coco_records` writes), by id when every image id
    is one of the ground truth's, else by file name.

    Examples:
        >>> gt = {"images": [{"id": 7, "file_name": "images/val/0001.jpg"}], "categories": [{"id": 1, "name": "car"}]}
        >>> map_coco_results([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5}], gt)[0]["image_id"]
        7
    """
    if not isinstance(records, list):
        raise DroneVisionError(f"{source}: COCO results must be a JSON list of records, got {type(records).__name__}")
    if match not in ("auto", "id", "file_name"):
        raise DroneVisionError(f"match must be auto, id or file_name, got {match!r}")
    ids = {im["id"] for im in ground_truth["images"]}
    categories = {c["id"] for c in ground_truth["categories"]}
    by_name: dict[Any, Any] = {}
    for im in ground_truth["images"]:
        path = Path(str(im.get("file_name", "")))
        keys = {str(im.get("file_name", "")), path.name, path.stem}
        if path.stem.isdigit():
            keys.add(int(path.stem))
        for key in keys:
            by_name[key] = im["id"] if by_name.get(key, im["id"]) == im["id"] else None  # None: ambiguous
    out = []
    for i, rec in enumerate(records):
        where = f"{source}: record {i}"
        if not isinstance(rec, dict) or not {"image_id", "category_id", "bbox", "score"} <= rec.keys():
            raise DroneVisionError(f"{where}: needs image_id, category_id, bbox and score, got {str(rec)[:80]}")
        bbox, score = rec["bbox"], rec["score"]
        numbers = [json_number(v) for v in bbox] if isinstance(bbox, list) else []
        if len(numbers) != 4 or None in numbers or bbox[2] < 0 or bbox[3] < 0:
            raise DroneVisionError(f"{where}: bbox must be 4 finite numbers [x, y, w >= 0, h >= 0], got {bbox!r:.80}")
        if json_number(score) is None or not 0 <= score <= 1:
            raise DroneVisionError(f"{where}: score {score!r:.40} is not a confidence in 0..1")
        if isinstance(rec["image_id"], bool) or not isinstance(rec["image_id"], (int, str)):
            raise DroneVisionError(f"{where}: image_id must be an integer or a string, got {rec['image_id']!r}")
        if isinstance(rec["category_id"], bool) or rec["category_id"] not in categories:
            raise DroneVisionError(f"{where}: category_id {rec['category_id']!r} is not in {sorted(categories)}")
        out.append({"image_id": rec["image_id"], "category_id": rec["category_id"], "bbox": bbox, "score": score})
    names = [rec.get("file_name") if isinstance(rec, dict) else None for rec in records]
    has_names = bool(records) and all(isinstance(n, str) for n in names)
    by_id = match == "id" or (match == "auto" and not has_names and all(r["image_id"] in ids for r in out))
    for i, rec in enumerate(out):
        key = rec["image_id"] if by_id or not has_names else names[i]
        image_id = (key if key in ids else None) if by_id else by_name.get(key)
        if image_id is None:
            what = f"image_id {key!r}" if by_id or not has_names else f"file_name {key!r}"
            how = "image id" if by_id else "image file name or stem"
            raise DroneVisionError(f"{source}: record {i}: {what} matches no {how} of the ground truth")
        rec["image_id"] = image_id
    return out


def coco_results_to_detections(
    records: Iterable[Mapping[str, Any]], ground_truth: Mapping[str, Any]
) -> list[Detections]:
    """COCO result records (image ids of the ground truth) as one :class:`Detections` per ground-truth image, in its
    order; class id = category id - 1, as :func:`dronevision.evaluate.coco_ground_truth` numbers them.

    Examples:
        >>> gt = {"images": [{"id": 3}, {"id": 5}]}
        >>> records = [{"image_id": 5, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}]
        >>> dets = coco_results_to_detections(records, gt)
        >>> [len(d) for d in dets], dets[1].xyxy.tolist(), dets[1].class_id.tolist()
        ([0, 1], [[1.0, 2.0, 4.0, 6.0]], [1])
    """
    index = {im["id"]: i for i, im in enumerate(ground_truth["images"])}
    rows: list[list[list[float]]] = [[] for _ in index]
    for rec in records:
        x, y, w, h = rec["bbox"]
        rows[index[rec["image_id"]]].append([x, y, x + w, y + h, rec["category_id"] - 1, rec["score"]])
    out = []
    for r in rows:
        arr = np.asarray(r, dtype=np.float64).reshape(-1, 6)
        out.append(Detections(xyxy=arr[:, :4], class_id=arr[:, 4], confidence=arr[:, 5]))
    return out


# --- I/O adapters --------------------------------------------------------------------------------------------------


def write_visdrone_results(
    folder: Path | str, images: Sequence[Path | str], predictions: Sequence[Detections], class_names: Mapping[int, str]
) -> Path:
    """Write one ``<image stem>.txt`` per image into ``folder``, best score first; returns the folder.

    An image without detections gets :data:`PLACEHOLDER_LINE` (see there), never an empty file.
    """
    folder = Path(folder)
    stems = [Path(image).stem for image in images]
    if len(set(stems)) < len(stems):
        raise DroneVisionError("two images share a file stem: VisDrone result files are named by stem")
    if len(predictions) != len(stems):
        raise ValueError(f"{len(stems)} images but {len(predictions)} predictions")
    folder.mkdir(parents=True, exist_ok=True)
    category_ids = visdrone_category_ids(class_names)
    for stem, det in zip(stems, predictions):
        lines = visdrone_result_lines(det, category_ids) or [PLACEHOLDER_LINE]
        (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    log.info("wrote VisDrone result files for %d images to %s", len(stems), folder)
    return folder


def read_visdrone_results(folder: Path | str, class_names: Mapping[int, str]) -> dict[str, Detections]:
    """Read a folder of VisDrone result files: image stem -> detections with our class ids.

    Lines of categories that are none of ``class_names`` (the placeholder of an image without detections, category 0,
    or ``others`` when there is no such class) are left out and counted in the log: the toolkit never scores them,
    though it would count them among an image's first 500. Any other category the dataset does not have, or a score
    outside 0..1, raises (see :func:`parse_visdrone_result_lines`); files are read as UTF-8, a byte-order mark
    dropped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DroneVisionError(f"{folder}: not a folder of VisDrone result files")
    class_of_category = {cat: cid for cid, cat in visdrone_category_ids(class_names).items()}
    out, n_other = {}, 0
    for path in sorted(folder.glob("*.txt")):
        det, n = parse_visdrone_result_lines(
            read_text(path, "VisDrone result file").splitlines(),
            source=str(path),
            class_of_category=class_of_category,
            strict=True,
        )
        out[path.stem] = det[det.class_id >= 0]
        n_other += n
    if not out:
        raise DroneVisionError(f"{folder}: no .txt result files")
    if n_other:
        log.info("%s: %d detections of categories that are none of our classes were left out", folder, n_other)
    return out


def write_coco_results(
    path: Path | str, images: Sequence[Path | str], predictions: Sequence[Detections], class_names: Mapping[int, str]
) -> Path:
    """Write predictions as a COCO results JSON (see :func:`coco_records`); returns its path."""
    unknown = sorted({c for det in predictions for c in det.class_id.tolist() if c >= 0} - set(class_names))
    if unknown:
        raise DroneVisionError(f"predictions have class ids {unknown[:5]} that are not in {sorted(class_names)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = coco_records(predictions, images)
    path.write_text(json.dumps(records))
    log.info("wrote %d COCO result records to %s", len(records), path)
    return path


def read_coco_results(path: Path | str, ground_truth: Mapping[str, Any], *, match: str = "auto") -> list[dict]:
    """Read a COCO results JSON (a list of records; UTF-8, a byte-order mark dropped) mapped onto the ground truth's
    images (see :func:`map_coco_results`)."""
    path = Path(path)
    records = load_json(path, "COCO results file")
    return map_coco_results(records, ground_truth, source=str(path), match=match)


def read_predictions(
    path: Path | str, images: Sequence[Path | str], class_names: Mapping[int, str]
) -> list[Detections]:
    """Detections made elsewhere, one per image: a folder of VisDrone result files (by image stem) or a COCO results
    JSON (image ids are positions in ``images`` or file names/stems, category ids class id + 1)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return match_detections(images, read_visdrone_results(path, class_names), source=str(path))
    if path.is_file() and path.suffix == ".json":
        ground_truth = {
            "images": [{"id": i, "file_name": Path(image).name} for i, image in enumerate(images)],
            "categories": [{"id": c + 1, "name": n} for c, n in sorted(class_names.items())],
        }
        return coco_results_to_detections(read_coco_results(path, ground_truth), ground_truth)
    raise DroneVisionError(f"predictions {path}: neither a folder of VisDrone .txt files nor a COCO results .json")
