"""The XML elements of CVAT 1.1 exports, read one attribute at a time: each bad value raises
:class:`~dronevision.dataset.records.BadRecord` (skipped or raised by the reader's ``Issues``); malformed XML always
raises."""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter

from dronevision.dataset.records import BadRecord as _Bad
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

XYXY = tuple[float, float, float, float]
TrackBox = tuple[int, bool, bool, bool, XYXY]  # frame, keyframe, outside, occluded, xyxy
INT64_MAX = 2**63 - 1


def get_attr(node: ET.Element, key: str, what: str) -> str:
    """The attribute ``key`` of ``node`` (``what`` names the node in the error)."""
    value = node.get(key)
    if value is None:
        raise _Bad("bad_format", f"{what} has no '{key}' attribute")
    return value


def get_label(node: ET.Element, what: str) -> str:
    """The non-empty ``label`` attribute of ``node``."""
    label = get_attr(node, "label", what)
    if not label.strip():
        raise _Bad("bad_format", f"{what} has an empty 'label'")
    return label


def parse_int(value: str, key: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    """``value`` as an integer in ``lo..hi``."""
    try:
        number = int(value)
    except ValueError:
        raise _Bad("non_numeric", f"{key} is not an integer: {value!r}") from None
    if not lo <= number <= hi:
        raise _Bad("bad_format", f"{key} must be in {lo}..{hi}, got {number}")
    return number


def parse_float(value: str, key: str) -> float:
    """``value`` as a finite number."""
    try:
        number = float(value)
    except ValueError:
        raise _Bad("non_numeric", f"{key} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise _Bad("non_numeric", f"{key} is not a finite number: {value!r}")
    return number


def get_flag(node: ET.Element, key: str, default: bool) -> bool:
    """The 0/1 (or true/false) attribute ``key`` of ``node``, ``default`` when absent."""
    value = node.get(key)
    if value is None:
        return default
    if value.strip().lower() not in ("0", "1", "true", "false"):
        raise _Bad("non_numeric", f"{key} must be 0 or 1, got {value!r}")
    return value.strip().lower() in ("1", "true")


def box_xyxy(node: ET.Element) -> XYXY:
    """``xtl ytl xbr ybr`` of a ``<box>``, as the axis-aligned box around it when it is rotated."""
    xtl, ytl, xbr, ybr = (parse_float(get_attr(node, key, "box"), key) for key in ("xtl", "ytl", "xbr", "ybr"))
    if xbr < xtl or ybr < ytl:
        raise _Bad("negative_size", f"box has xbr < xtl or ybr < ytl: ({xtl}, {ytl}, {xbr}, {ybr})")
    rotation = parse_float(node.get("rotation", "0"), "rotation") % 360.0
    if rotation:
        cx, cy, hw, hh = xtl / 2 + xbr / 2, ytl / 2 + ybr / 2, xbr / 2 - xtl / 2, ybr / 2 - ytl / 2
        cos, sin = abs(math.cos(math.radians(rotation))), abs(math.sin(math.radians(rotation)))
        hw, hh = hw * cos + hh * sin, hw * sin + hh * cos
        xtl, ytl, xbr, ybr = cx - hw, cy - hh, cx + hw, cy + hh
        if not all(math.isfinite(v) for v in (xtl, ytl, xbr, ybr)):
            raise _Bad("non_numeric", "rotated box coordinates are out of range")
    return xtl, ytl, xbr, ybr


def parse_xml(text: str | bytes, *, where: str) -> ET.Element:
    """The ``<annotations>`` root element; malformed XML raises with the file and line."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line, column = e.position
        reason = str(e).rsplit(": line", 1)[0]
        raise DroneVisionError(f"{where}:{line}:{column}: not valid XML ({reason})") from None
    except (ValueError, UnicodeError) as e:  # e.g. lone surrogates in a str
        raise DroneVisionError(f"{where}: not valid XML ({type(e).__name__})") from None
    if root.tag != "annotations":
        raise DroneVisionError(f"{where}: root element is <{str(root.tag)[:40]}>, not CVAT's <annotations>")
    return root


def log_ignored(ignored: Counter[str], where: str) -> None:
    """Log the non-box annotations of one file, counted by tag, once."""
    if ignored:
        kinds = ", ".join(f"{tag}: {n}" for tag, n in sorted(ignored.items()))
        log.info("%s: ignored %d non-box annotations (%s)", where, sum(ignored.values()), kinds)
