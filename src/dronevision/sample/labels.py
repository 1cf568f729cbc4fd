"""Labels for sampled frames: joined from the footage's own annotations, or pre-labelled by a detector."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from dronevision.dataset.records import Issues
from dronevision.dataset.writer import link_or_copy
from dronevision.dataset.yolo import image_size
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

LABEL_FORMATS = ("visdrone-vid", "cvat-video")


def annotation_for(labels_path: Path, video_id: str, n_videos: int) -> Path | None:
    """The annotation file of one video: the file itself for a single video, else ``<folder>/<video id>.*``."""
    if labels_path.is_file():
        return labels_path if n_videos == 1 else None
    for candidate in (
        labels_path / f"{video_id}.txt",
        labels_path / f"{video_id}.xml",
        labels_path / video_id / "annotations.xml",
    ):
        if candidate.is_file():
            return candidate
    return None


def _annotated(
    results: Sequence[dict[str, Any]], labels_path: Path, missing: list[str]
) -> Iterator[tuple[dict[str, Any], Path]]:
    """The sampled videos with their annotation file; videos without one are appended to ``missing``."""
    for result in results:
        if result["error"]:
            continue
        annotation = annotation_for(labels_path, result["video_id"], len(results))
        if annotation is None:
            missing.append(result["video_id"])
            continue
        yield result, annotation


def kept_frames(result: Mapping[str, Any], out_dir: Path) -> list[tuple[int, Path]]:
    """(frame index, file) of each kept frame of a video."""
    return [(r["frame_index"], out_dir / r["file"]) for r in result["records"] if r["kept"]]


def select_vid_lines(lines: Sequence[str], frames: set[int]) -> list[str]:
    """The VisDrone-VID annotation lines of the given (1-based) frame numbers, unchanged.

    Examples:
        >>> select_vid_lines(["1,3,0,0,5,5,1,4,0,0", "2,3,1,0,5,5,1,4,0,0", ""], {2})
        ['2,3,1,0,5,5,1,4,0,0']
    """
    out = []
    for line in lines:
        head = line.split(",", 1)[0].strip()
        if head.isdigit() and int(head) in frames:
            out.append(line.rstrip("\n"))
    return out


def join_visdrone_vid(out_dir: Path, results: Sequence[dict[str, Any]], labels_path: Path) -> dict[str, Any]:
    """Write ``labelled/`` as a VisDrone-VID folder of the kept frames (frame n is the n-th decoded frame)."""
    root = out_dir / "labelled"
    joined, missing = 0, []
    for result, annotation in _annotated(results, labels_path, missing):
        frames = kept_frames(result, out_dir)
        numbers = {index + 1 for index, _ in frames}
        for index, file in frames:
            link_or_copy(file, root / "sequences" / result["video_id"] / f"{index + 1:07d}.jpg")
        lines = select_vid_lines(annotation.read_text().splitlines(), numbers)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{result['video_id']}.txt").write_text("".join(f"{x}\n" for x in lines))
        joined += len(frames)
    return {
        "format": "visdrone-vid",
        "path": str(root),
        "frames": joined,
        "videos_without_labels": missing,
        "dataset_source": {"format": "visdrone-vid", "path": str(root)},
    }


def join_cvat_video(out_dir: Path, results: Sequence[dict[str, Any]], labels_path: Path) -> dict[str, Any]:
    """Write ``labelled/`` as CVAT for images (frames + annotations.xml) from CVAT-for-video tracks."""
    from dronevision.dataset.cvat import parse_cvat_video, write_cvat_images

    root = out_dir / "labelled"
    items, names, missing = [], {}, []
    issues = Issues("skip")  # an annotation longer than its video, say: counted, not fatal
    for result, annotation in _annotated(results, labels_path, missing):
        frames = dict(kept_frames(result, out_dir))
        n = max([*frames, round((result.get("duration_s") or 0) * (result.get("fps") or 0))]) + 1
        paths = [frames.get(i, Path(f"/not-kept/{i}")) for i in range(n)]
        records = parse_cvat_video(
            annotation.read_text(),
            frames=paths,
            issues=issues,
            where=str(annotation),
            sequence=result["video_id"],
        )
        for record in records:
            if record.image not in frames.values():
                continue
            target = root / "images" / record.image.name
            link_or_copy(record.image, target)
            for label in record.labels:
                names.setdefault(label, len(names))
            det = Detections(
                xyxy=record.xyxy, class_id=[names[x] for x in record.labels], confidence=np.ones(len(record.xyxy))
            )
            items.append((target, record.resolution_wh or image_size(target), det))
    write_cvat_images(root / "annotations.xml", items, {v: k for k, v in names.items()}, image_root=root / "images")
    return {
        "format": "cvat-video",
        "path": str(root),
        "frames": len(items),
        "videos_without_labels": missing,
        "dataset_source": {"format": "cvat", "path": str(root / "annotations.xml")},
    }


def prelabel_frames(out_dir: Path, results: Sequence[dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run a detector on the kept frames; write YOLO labels, CVAT for images XML and Label Studio JSON."""
    from dronevision.dataset.cvat import write_cvat_images
    from dronevision.dataset.labelstudio import write_label_studio
    from dronevision.dataset.yolo import write_yolo
    from dronevision.infer import SliceSettings
    from dronevision.sample.prelabel import prelabel

    images = [file for result in results if not result["error"] for _, file in kept_frames(result, out_dir)]
    class_map = dict(cfg.prelabel.class_map) if cfg.prelabel.get("class_map") else None
    items, names = prelabel(
        Path(cfg.prelabel.weights),
        images,
        conf=float(cfg.prelabel.conf),
        imgsz=int(cfg.prelabel.imgsz),
        device=cfg.prelabel.device,
        class_map=class_map,
        slicing=SliceSettings.from_config(cfg.slicing),
        runtime=str(cfg.prelabel.runtime),
        threads=cfg.prelabel.threads,
    )
    root = out_dir / "prelabel"
    write_yolo(root / "yolo", items, names)
    write_cvat_images(root / "cvat.xml", items, names, image_root=out_dir / "frames")
    write_label_studio(root / "labelstudio.json", items, names, image_root=out_dir / "frames")
    return {
        "path": str(root),
        "frames": len(items),
        "boxes": sum(len(d) for _, _, d in items),
        "classes": dict(names),
        "dataset_source": {"format": "yolo", "path": str(root / "yolo")},
    }


def check_labels(labels: Mapping[str, Any]) -> None:
    """Refuse a bad ``labels.format``/``labels.path`` (the footage's own annotations; sample and track)."""
    fmt = labels.get("format")
    if fmt:
        if fmt not in LABEL_FORMATS:
            raise DroneVisionError(f"labels.format must be one of {', '.join(LABEL_FORMATS)}, got '{fmt}'")
        if not labels.get("path") or not Path(str(labels["path"])).expanduser().exists():
            raise DroneVisionError(f"labels.path {labels.get('path')} does not exist")


def check_label_config(cfg: DictConfig) -> None:
    """Refuse a bad labels/prelabel setting before any video is decoded."""
    check_labels(cfg.labels)
    weights = cfg.prelabel.get("weights")
    if weights and not Path(str(weights)).expanduser().exists():
        raise DroneVisionError(f"prelabel.weights {weights} does not exist")
    if weights:
        from dronevision.infer import SliceSettings

        SliceSettings.from_config(cfg.slicing)  # a bad slicing setting is refused before decoding


def write_labels(out_dir: Path, results: Sequence[dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Labels as configured: ``labels.format``/``labels.path`` joins annotations, ``prelabel.weights`` pre-labels."""
    out: dict[str, Any] = {}
    fmt = cfg.labels.get("format")
    if fmt:
        join = join_visdrone_vid if fmt == "visdrone-vid" else join_cvat_video
        out["annotations"] = join(out_dir, results, Path(str(cfg.labels.path)).expanduser())
    if cfg.prelabel.get("weights"):
        out["prelabel"] = prelabel_frames(out_dir, results, cfg)
    return out
