"""Ground truth for the scoring protocols (:mod:`dronevision.evaluate.protocols`): a raw VisDrone-DET folder, or
one split of a dataset (built by ``dronevision.dataset``, or any YOLO dataset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.evaluate.protocols import PROTOCOLS, UNSCORED, GroundTruthImage
from dronevision.schema import Detections


def load_visdrone_det_ground_truth(folder: Path | str) -> tuple[list[GroundTruthImage], dict[int, str]]:
    """Ground truth of a VisDrone-DET folder (``images/`` + ``annotations/``) and its class names.

    Class ids are VisDrone categories - 1 (``pedestrian`` 0 ... ``motor`` 9). ``others`` boxes are left out (never
    scored); rows of category 0 or score 0 become ignored regions (the official annotations give score 0 only to
    category 0, where this is the toolkit's rule). A bad annotation line raises, naming file and line.
    """
    from dronevision.dataset.records import Issues
    from dronevision.dataset.visdrone import CATEGORIES, read_visdrone_det
    from dronevision.dataset.yolo import image_size

    names = {i - 1: CATEGORIES[i] for i in range(1, len(CATEGORIES) - 1)}
    ids = {name: cid for cid, name in names.items()}
    items = []
    for record in read_visdrone_det(Path(folder), issues=Issues("raise")):
        gt = Detections(xyxy=record.xyxy, class_id=[ids[label] for label in record.labels])
        items.append(GroundTruthImage(str(record.image), image_size(record.image), gt, record.ignore_xyxy))
    if not items:
        raise DroneVisionError(f"{folder}: no annotated images")
    return items, names


def load_dataset_ground_truth(
    dataset: Path | str, split: str
) -> tuple[list[GroundTruthImage], dict[int, str], Path | None]:
    """Ground truth of one split of a dataset (its folder or data.yaml), its class names and its data.yaml.

    A dataset built by ``dronevision.dataset`` is read from its manifest.json (pixel boxes, image sizes, ignored
    regions), in the order of ``annotations/instances_<split>.json``, so that an image's position is its COCO image
    id there. Any other YOLO dataset is read from its labels, without ignored regions.
    """
    path = Path(dataset).expanduser().resolve()
    root = path.parent if path.is_file() else path
    data_yaml = path if path.is_file() else root / "data.yaml"
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        from dronevision.dataset import label_path, load_yolo_dataset, parse_label_lines
        from dronevision.dataset.records import read_text
        from dronevision.dataset.yolo import LABEL, image_size
        from dronevision.evaluate.core import yolo_to_xyxy

        yolo = load_yolo_dataset(path)
        if split not in yolo.splits:
            raise DroneVisionError(f"{yolo.yaml_path}: no split {split!r} (splits: {sorted(yolo.splits)})")
        items = []
        for image in yolo.splits[split]:
            wh, label = image_size(image), label_path(image)
            lines = read_text(label, LABEL).splitlines() if label.is_file() else []
            rows = parse_label_lines(lines, n_classes=len(yolo.names), source=label)
            items.append(GroundTruthImage(str(image), wh, yolo_to_xyxy(rows, wh), np.zeros((0, 4))))
        return items, dict(yolo.names), yolo.yaml_path
    from dronevision.dataset.records import load_json

    manifest: Any = load_json(manifest_path, "dataset manifest")
    items = []
    for entry in manifest["entries"]:
        if entry["split"] != split:
            continue
        boxes = np.asarray(entry["boxes"], dtype=np.float64).reshape(-1, 5)
        ignored = np.asarray(entry.get("ignored", []), dtype=np.float64).reshape(-1, 4)
        gt = Detections(xyxy=boxes[:, 1:], class_id=boxes[:, 0])
        items.append(
            GroundTruthImage(str(root / entry["file"]), (int(entry["size"][0]), int(entry["size"][1])), gt, ignored)
        )
    if not items:
        raise DroneVisionError(f"{manifest_path}: no images in split {split!r} (splits: {sorted(manifest['images'])})")
    return items, dict(enumerate(manifest["classes"])), data_yaml if data_yaml.is_file() else None


# --- the scored ground truth --------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """The images scored, their boxes (class ids are positions in ``names``) and ignored regions."""

    source: Path
    kind: str  # "dataset" (built YOLO dataset) or "visdrone-det" (images/ + annotations/)
    names: dict[int, str]
    images: list[Path]
    sizes: list[tuple[int, int]]
    boxes: list[Detections]
    ignored: list[np.ndarray]
    data_yaml: Path | None = None


def check_protocols(protocol: Any) -> list[str]:
    """``coco``, ``visdrone`` or a list of them.

    Examples:
        >>> check_protocols("coco"), check_protocols(["coco", "visdrone"])
        (['coco'], ['coco', 'visdrone'])
        >>> check_protocols("voc")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: protocol 'voc' is not one of coco, visdrone
    """
    chosen = [protocol] if isinstance(protocol, str) else list(protocol)
    for p in chosen:
        if p not in PROTOCOLS:
            raise DroneVisionError(f"protocol '{p}' is not one of {', '.join(PROTOCOLS)}")
    if not chosen:
        raise DroneVisionError("protocol: name at least one of coco, visdrone")
    return chosen


def scored_names(names: Mapping[int, str]) -> list[str]:
    """Class names in id order, without the ones no protocol scores (``others``, ignored regions).

    Examples:
        >>> scored_names({0: "car", 1: "others", 2: "van"})
        ['car', 'van']
    """
    return [n for _, n in sorted(names.items()) if n not in UNSCORED]


def check_same_classes(model_names: Mapping[int, str], model: Path, truth: GroundTruth) -> None:
    """Refuse weights whose classes are not the dataset's, naming both lists."""
    ours, theirs = scored_names(model_names), scored_names(truth.names)
    if ours != theirs:
        raise DroneVisionError(
            f"weights {model} have classes {ours} but dataset {truth.source} has {theirs}: evaluate a model on "
            "data labelled with its own classes"
        )


def load_ground_truth(path: Path, split: str) -> GroundTruth:
    """A built dataset's split, or a raw VisDrone-DET folder, as :class:`GroundTruth`."""
    from dronevision.evaluate.ground_truth import load_dataset_ground_truth, load_visdrone_det_ground_truth

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DroneVisionError(f"dataset path {path} does not exist")
    raw = path.is_dir() and not (path / "data.yaml").is_file()
    if raw and (path / "annotations").is_dir() and (path / "images").is_dir():
        items, names = load_visdrone_det_ground_truth(path)
        kind, data_yaml = "visdrone-det", None
    else:
        items, names, data_yaml = load_dataset_ground_truth(path, split)
        kind = "dataset"
    if not items:
        raise DroneVisionError(f"dataset {path}: the {split if kind == 'dataset' else 'images'} split holds no images")
    return GroundTruth(
        source=path,
        kind=kind,
        names=dict(names),
        images=[Path(i[0]) for i in items],
        sizes=[tuple(i[1]) for i in items],
        boxes=[i[2] for i in items],
        ignored=[np.asarray(i[3], dtype=float).reshape(-1, 4) for i in items],
        data_yaml=data_yaml,
    )
