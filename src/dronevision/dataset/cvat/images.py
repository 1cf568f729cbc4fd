"""CVAT for images 1.1: the pure parser and the writer, side by side."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from dronevision.dataset.cvat.elements import box_xyxy, get_attr, get_flag, get_label, log_ignored, parse_int, parse_xml
from dronevision.dataset.records import BadRecord as _Bad
from dronevision.dataset.records import (
    ImageBoxes,
    Issues,
    SourceImage,
    check_items,
    label_names,
    relative_image_name,
    safe_join,
)
from dronevision.schema import Detections

log = logging.getLogger(__name__)


def images_from_root(root: ET.Element, *, root_dir: Path, issues: Issues, where: str) -> list[SourceImage]:
    """The ``<image>`` elements of a CVAT for images ``root`` as records; bad ones go to ``issues``."""
    records: list[SourceImage] = []
    ignored: Counter[str] = Counter()
    for number, node in enumerate(root.findall("image")):
        name = node.get("name")
        image_where = f"{where}: <image name={name!r}>" if name is not None else f"{where}: <image #{number}>"
        try:
            if not name or not PurePosixPath(name).stem:
                raise _Bad("bad_format", "image has no file 'name'")
            size = [node.get(key) for key in ("width", "height")]
            resolution_wh = None
            if size[0] is not None or size[1] is not None:
                w, h = (parse_int(get_attr(node, key, "image"), key, lo=1) for key in ("width", "height"))
                resolution_wh = (w, h)
        except _Bad as bad:
            issues.report(bad.kind, image_where, bad.message)
            continue
        image = safe_join(root_dir, name, issues=issues, where=image_where)
        if image is None:
            continue
        xyxy, labels, occlusion = [], [], []
        ignored.update(str(child.tag) for child in node if child.tag != "box")
        for index, child in enumerate(node.findall("box")):
            try:
                label = get_label(child, "box")
                occluded = get_flag(child, "occluded", False)
                xyxy.append(box_xyxy(child))
            except _Bad as bad:
                issues.report(bad.kind, f"{image_where} box {index}", bad.message)
                continue
            labels.append(label)
            occlusion.append(int(occluded))
        records.append(
            SourceImage(
                image=image,
                name=PurePosixPath(name).stem,
                group="",
                xyxy=np.asarray(xyxy),
                labels=tuple(labels),
                attrs={"occlusion": np.asarray(occlusion, dtype=np.int64)},
                resolution_wh=resolution_wh,
                where=image_where,
            )
        )
    log_ignored(ignored, where)
    return records


def parse_cvat_images(text: str, *, root: Path, issues: Issues, where: str) -> list[SourceImage]:
    """Parse a CVAT for images 1.1 export: one :class:`SourceImage` per ``<image>``, with its ``<box>`` shapes.

    Args:
        text: the XML text.
        root: the folder that image names are relative to.
        issues: the bad-record policy; a bad image or box is reported and skipped.
        where: the annotation file, for messages.

    Raises:
        DroneVisionError: the XML is malformed or is not CVAT's, or a bad record under ``Issues("raise")``.

    Examples:
        >>> text = '''<annotations><version>1.1</version>
        ...   <image id="0" name="frames/a.jpg" width="64" height="48">
        ...     <box label="car" occluded="1" xtl="1" ytl="2" xbr="11.5" ybr="12" z_order="0"/>
        ...     <polygon label="road" points="0,0;5,0;5,5"/>
        ...   </image></annotations>'''
        >>> [im] = parse_cvat_images(text, root=Path("/data"), issues=Issues(), where="ann.xml")
        >>> im.image.as_posix(), im.name, im.labels, im.resolution_wh, im.where
        ('/data/frames/a.jpg', 'a', ('car',), (64, 48), "ann.xml: <image name='frames/a.jpg'>")
        >>> im.xyxy.tolist(), im.attrs["occlusion"].tolist()
        ([[1.0, 2.0, 11.5, 12.0]], [1])
        >>> bad = text.replace('xbr="11.5"', 'xbr="0"')
        >>> parse_cvat_images(bad, root=Path("/data"), issues=Issues(), where="ann.xml")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: ann.xml: <image name='frames/a.jpg'> box 0: box has xbr < xtl ...
    """
    return images_from_root(parse_xml(text, where=where), root_dir=root, issues=issues, where=where)


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


def write_cvat_images(path: Path, items: Sequence[ImageBoxes], names: Mapping[int, str], *, image_root: Path) -> Path:
    """Write a CVAT for images 1.1 XML file to upload as annotations to a CVAT task holding the same images.

    Image names are relative to ``image_root`` (as the CVAT task knows them); boxes have ``source="auto"``.

    Returns:
        ``path``.
    """
    check_items(items, names)
    named = [(relative_image_name(image, image_root), wh, det) for image, wh, det in items]
    root = cvat_images_xml(named, names)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    log.info("%s: %d images, %d boxes (CVAT for images 1.1)", path, len(items), sum(len(d) for _, _, d in items))
    return path
