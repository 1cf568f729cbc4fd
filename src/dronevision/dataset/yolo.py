"""YOLO datasets (an ultralytics ``data.yaml`` with images/ and labels/ folders): load, validate, fingerprint."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dronevision.dataset.records import ImageBoxes, Issues, SourceImage, check_items, label_names, read_text
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLITS = ("train", "val", "test")
LABEL = "YOLO label file"  # for messages


@dataclass(frozen=True)
class YoloDataset:
    """A validated YOLO dataset: its ``data.yaml``, class names and the image files of each split."""

    yaml_path: Path
    names: dict[int, str]
    splits: dict[str, tuple[Path, ...]]

    @property
    def root(self) -> Path:
        """The folder the split paths are relative to."""
        return self.yaml_path.parent

    def counts(self) -> dict[str, int]:
        """Number of images per split."""
        return {split: len(images) for split, images in self.splits.items()}


def label_path(image: Path) -> Path:
    """The YOLO label file of an image: the last ``images`` folder in its path becomes ``labels``.

    Examples:
        >>> label_path(Path("ds/train/images/a.jpg")).as_posix()
        'ds/train/labels/a.txt'
    """
    parts = list(image.parts)
    idx = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if idx is None:
        return image.with_suffix(".txt")
    parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_names(names: Any, *, source: Path) -> dict[int, str]:
    """Normalise ``names`` from a data.yaml (a list or an ``{id: name}`` mapping) to ``{id: name}``.

    Examples:
        >>> parse_names(["car", "truck"], source=Path("data.yaml"))
        {0: 'car', 1: 'truck'}
        >>> parse_names({0: "vehicle"}, source=Path("data.yaml"))
        {0: 'vehicle'}
    """
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DroneVisionError(f"{source}: 'names' must be a non-empty list or mapping of class names")
    try:
        parsed = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise DroneVisionError(f"{source}: 'names' keys must be integer class ids") from None
    if sorted(parsed) != list(range(len(parsed))):
        raise DroneVisionError(f"{source}: class ids in 'names' must be 0..{len(parsed) - 1}")
    return parsed


def _split_images(entry: Any, *, root: Path, source: Path, split: str) -> tuple[Path, ...]:
    """Image files of one split entry: a folder, a .txt list of images, or a list of either."""
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        path = (root / str(item)).resolve()
        if not path.exists() and str(item).startswith("../"):  # Roboflow exports write '../train/images'
            path = (root / str(item)[3:]).resolve()
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix == ".txt":
            lines = [line.strip() for line in read_text(path, "list of images").splitlines() if line.strip()]
            images += [(path.parent / line).resolve() for line in lines]
        else:
            raise DroneVisionError(f"{source}: {split} path '{item}' does not exist (looked for {path})")
    return tuple(images)


def load_yolo_dataset(path: Path | str) -> YoloDataset:
    """Read and validate a YOLO dataset from a ``data.yaml`` or a folder that holds one.

    Raises:
        DroneVisionError: the path or data.yaml is missing, ``names`` is absent, or train/val has no images.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DroneVisionError(f"dataset path {path} does not exist")
    if path.is_dir():
        candidates = [path / n for n in ("data.yaml", "dataset.yaml", "data.yml")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DroneVisionError(f"{path}: no data.yaml in this folder")
        path = found
    try:
        data = yaml.safe_load(read_text(path, "data.yaml"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise DroneVisionError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise DroneVisionError(f"{path}: expected a mapping with 'train', 'val' and 'names'")
    if "names" not in data:
        raise DroneVisionError(f"{path}: no 'names' (the class names) in this data.yaml")
    names = parse_names(data["names"], source=path)
    root = path.parent / str(data.get("path") or ".")
    splits: dict[str, tuple[Path, ...]] = {}
    for split in SPLITS:
        if data.get(split) is None:
            if split != "test":
                raise DroneVisionError(f"{path}: no '{split}' split in this data.yaml")
            continue
        images = _split_images(data[split], root=root, source=path, split=split)
        if not images and split != "test":
            raise DroneVisionError(f"{path}: the {split} split '{data[split]}' holds no images")
        splits[split] = images
    return YoloDataset(yaml_path=path, names=names, splits=splits)


def parse_label_lines(
    lines: list[str], *, n_classes: int, source: Path, issues: Issues | None = None
) -> list[tuple[int, float, float, float, float]]:
    """Parse YOLO label lines ``class cx cy w h`` (normalised); a bad line goes to ``issues`` (default: raise).

    Examples:
        >>> parse_label_lines(["0 0.5 0.5 0.1 0.2", ""], n_classes=1, source=Path("a.txt"))
        [(0, 0.5, 0.5, 0.1, 0.2)]
        >>> parse_label_lines(["3 0.5 0.5 0.1 0.2"], n_classes=1, source=Path("a.txt"))
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.txt:1: class id 3 is not in names (0..0)
    """
    issues = issues or Issues("raise")
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}:{number}"
        if len(fields) != 5:
            issues.report("wrong_field_count", where, f"expected 'class cx cy w h', got {len(fields)} fields")
            continue
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            issues.report("non_numeric", where, f"not numbers: {line.strip()!r}")
            continue
        if not 0 <= cls < n_classes:
            issues.report("unknown_class", where, f"class id {cls} is not in names (0..{n_classes - 1})")
            continue
        if not all(-0.01 <= v <= 1.01 for v in values):
            issues.report("box_outside_image", where, f"coordinates must be normalised to 0..1, got {line.strip()!r}")
            continue
        if values[2] < 0 or values[3] < 0:
            issues.report("negative_size", where, f"negative width or height: {line.strip()!r}")
            continue
        rows.append((cls, *values))
    return rows


def write_data_yaml(dataset: YoloDataset, out: Path) -> Path:
    """Write a data.yaml for ultralytics with absolute image lists, independent of ultralytics' datasets_dir."""
    out.parent.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {"path": str(out.parent)}
    for split, images in dataset.splits.items():
        listing = out.parent / f"{split}.txt"
        listing.write_text("".join(f"{p}\n" for p in images))
        content[split] = str(listing)
    content["names"] = dataset.names
    out.write_text(yaml.safe_dump(content, sort_keys=False))
    return out


def manifest_lines(dataset: YoloDataset) -> list[str]:
    """One line per image and label file: ``split<TAB>relative path<TAB>sha256``, sorted.

    Every label file is parsed on the way, so a bad line fails here with its file and line number. The label of
    an image without one is listed as ``-`` so that adding a label changes the manifest.
    """
    lines = []
    for split, images in dataset.splits.items():
        for image in images:
            label = label_path(image)
            if label.is_file():
                parse_label_lines(read_text(label, LABEL).splitlines(), n_classes=len(dataset.names), source=label)
            for f in (image, label):
                if f is image and not f.is_file():
                    raise DroneVisionError(f"{f}: image listed in the {split} split does not exist")
                digest = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "-"
                rel = f.relative_to(dataset.root) if f.is_relative_to(dataset.root) else f
                lines.append(f"{split}\t{rel.as_posix()}\t{digest}")
    return sorted(lines)


def manifest_sha256(lines: list[str]) -> str:
    """Fingerprint of a dataset manifest.

    Examples:
        >>> manifest_sha256(["train\\ta.jpg\\t00"])[:12]
        '9d2aa1859723'
    """
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


def image_size(path: Path) -> tuple[int, int]:
    """``(w, h)`` as the detector sees the image: from the header, turned by the EXIF orientation as OpenCV does."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1) if im.format == "JPEG" else 1
    except (OSError, UnidentifiedImageError) as e:
        raise DroneVisionError(f"{path}: cannot be read as an image ({e})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_yolo(
    path: Path, *, issues: Issues, names: list[str] | None = None, keep_splits: bool = False
) -> Iterator[SourceImage]:
    """Read a YOLO source: an ultralytics data.yaml (or a folder with one), else ``images/`` + ``labels/`` folders
    with class names from ``names`` or a ``classes.txt``. Boxes come out in pixels (image sizes from headers).

    An image without a label file is reported (``image_without_label``); an empty label file means no objects.
    """
    path = Path(path)
    has_yaml = path.suffix in (".yaml", ".yml") or any((path / n).is_file() for n in ("data.yaml", "dataset.yaml"))
    if has_yaml:
        dataset = load_yolo_dataset(path)
        class_names = dataset.names
        splits = dataset.splits
    else:
        if names is None and (path / "classes.txt").is_file():
            names = [n.strip() for n in read_text(path / "classes.txt", "class list").splitlines() if n.strip()]
        if not names:
            raise DroneVisionError(f"{path}: a YOLO folder without data.yaml needs classes.txt or source.names")
        class_names = dict(enumerate(names))
        images_dir = path / "images"
        if not images_dir.is_dir():
            raise DroneVisionError(f"{path}: no data.yaml and no images/ folder")
        splits = {"": tuple(sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))}
    for split, images in splits.items():
        for image in images:
            label = label_path(image)
            if not label.is_file():
                issues.report("image_without_label", str(image), f"no label file {label}")
                continue
            wh = image_size(image)
            rows = parse_label_lines(
                read_text(label, LABEL).splitlines(), n_classes=len(class_names), source=label, issues=issues
            )
            arr = np.asarray([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4) * np.tile(wh, 2)
            xyxy = np.concatenate([arr[:, :2] - arr[:, 2:] / 2, arr[:, :2] + arr[:, 2:] / 2], axis=1)
            yield (
                SourceImage(
                    image=image,
                    name=image.stem,
                    group="",
                    xyxy=xyxy,
                    labels=[class_names[r[0]] for r in rows],
                    resolution_wh=wh,
                    where=str(label),
                    split=(split or None) if keep_splits else None,
                )
            )


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


def write_yolo(out_dir: Path, items: Sequence[ImageBoxes], names: Mapping[int, str]) -> Path:
    """Write a YOLO folder (``images/``, ``labels/``, ``classes.txt``) that ``source.format=yolo`` reads.

    Classes are numbered in ``classes.txt`` order (:func:`label_names`), so sparse or merged ids become ``0..K-1``.
    Images are hard-linked (copied across file systems) under their file names, which must differ in their stems.
    Every image gets a label file, empty without boxes. Files of the same name in ``out_dir`` are replaced.

    Returns:
        ``out_dir``.
    """
    from dronevision.dataset.writer import link_or_copy

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
