"""Ground truth for the scoring protocols (:mod:`dronevision.evaluate.protocols`): a raw VisDrone-DET folder, or
one split of a dataset (built by ``dronevision.dataset``, or any YOLO dataset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.evaluate.protocols import GroundTruthImage
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
        from dronevision.dataset import load_yolo_dataset
        from dronevision.evaluate.core import load_split

        yolo = load_yolo_dataset(path)
        if split not in yolo.splits:
            raise DroneVisionError(f"{yolo.yaml_path}: no split {split!r} (splits: {sorted(yolo.splits)})")
        items = [GroundTruthImage(p, wh, det, np.zeros((0, 4))) for p, wh, det in load_split(yolo, split)]
        return items, dict(yolo.names), yolo.yaml_path
    import json

    manifest = json.loads(manifest_path.read_text())
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
