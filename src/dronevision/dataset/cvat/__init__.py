"""CVAT for images 1.1 and CVAT for video 1.1 XML exports: pure parsers over the XML text, and one file reader.

Only boxes are read; other shapes (polygons, points, tags, ...) are counted and logged once per file. Rotated boxes
(``rotation="..."``, CVAT 2.x) become the axis-aligned box around them. Bad records go through
:class:`~dronevision.dataset.records.Issues` and are skipped; malformed XML always raises.

:func:`read_cvat` reads a file of either kind; :mod:`~dronevision.dataset.cvat.images` parses and writes CVAT for
images, :mod:`~dronevision.dataset.cvat.video` parses CVAT for video (tracks interpolated between keyframes), and
:mod:`~dronevision.dataset.cvat.elements` reads the attributes both share.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dronevision.dataset.cvat.elements import parse_xml
from dronevision.dataset.cvat.images import cvat_images_xml, images_from_root, parse_cvat_images, write_cvat_images
from dronevision.dataset.cvat.video import interpolate_track, parse_cvat_video, video_from_root
from dronevision.dataset.records import Issues, SourceImage
from dronevision.dataset.yolo import IMAGE_SUFFIXES
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

__all__ = [
    "cvat_images_xml",
    "interpolate_track",
    "parse_cvat_images",
    "parse_cvat_video",
    "read_cvat",
    "write_cvat_images",
]


def _images_root(xml: Path, images_dir: Path | None) -> Path:
    if images_dir is not None:
        return Path(images_dir)
    return xml.parent / "images" if (xml.parent / "images").is_dir() else xml.parent


def read_cvat(
    path: Path, *, issues: Issues, images_dir: Path | None = None, frame_stride: int = 1
) -> list[SourceImage]:
    """Read a CVAT for images 1.1 or CVAT for video 1.1 export (told apart by ``<track>`` vs ``<image>`` elements).

    Args:
        path: the XML file, or a folder that holds ``annotations.xml``.
        issues: the bad-record policy; images and frames whose file does not exist are reported as ``missing_image``.
        images_dir: where the images (or video frames) are; default ``<xml folder>/images`` if it exists, else the
            XML's folder. Video frames are the image files there, sorted by name (``frame_000000.PNG``, ...).
        frame_stride: for a video export, keep every ``frame_stride``-th frame.

    Returns:
        The images; for a video, their group is the name of the XML's folder.

    Raises:
        DroneVisionError: the file is missing or malformed, or a bad record under ``Issues("raise")``.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        path = path / "annotations.xml"
    if not path.is_file():
        raise DroneVisionError(f"{path}: CVAT annotation file does not exist")
    where = str(path)
    root = parse_xml(path.read_bytes(), where=where)  # bytes: expat honours the declared encoding
    images_root = _images_root(path, images_dir)
    has_tracks, has_images = root.find("track") is not None, root.find("image") is not None
    if has_tracks and has_images:
        issues.report("bad_format", where, "holds both <image> and <track> elements: not one CVAT 1.1 format")
        return []
    if not has_tracks and not has_images:
        log.warning("%s: no <image> or <track> elements: nothing to read", where)
    if has_tracks:
        files = sorted(images_root.iterdir(), key=lambda p: p.name) if images_root.is_dir() else []
        frames = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        sequence = path.parent.name
        records = video_from_root(
            root, frames=frames, issues=issues, where=where, sequence=sequence, frame_stride=frame_stride
        )
    else:
        records = []
        for record in images_from_root(root, root_dir=images_root, issues=issues, where=where):
            if record.image.is_file():
                records.append(record)
            else:
                issues.report("missing_image", record.where, f"image file {record.image} does not exist")
    log.info("%s: %d images, %d boxes", where, len(records), sum(len(r.xyxy) for r in records))
    return records
