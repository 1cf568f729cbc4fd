"""``python -m dronevision.synth out_dir=<dir> ...``: render a flyover from the bundled data."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dronevision.errors import DroneVisionError
from dronevision.synth.flyover import render_flyover

log = logging.getLogger(__name__)

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "data" / "samples" / "aerial-cars"


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


_ARGS: dict[str, Any] = {
    "out_dir": Path,
    "dataset_dir": Path,
    "n_frames": int,
    "fps": float,
    "width": int,
    "height": int,
    "blur": float,
    "noise": float,
    "seed": int,
    "codec": str,
    "name": str,
    "sequence": _parse_bool,
}


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """Parse the command's ``key=value`` arguments into :func:`render_flyover` keywords (plus ``out_dir``).

    Examples:
        >>> args = parse_args(["out_dir=out", "n_frames=5", "width=320", "sequence=true"])
        >>> args["out_dir"] == Path("out"), {k: v for k, v in args.items() if k != "out_dir"}
        (True, {'n_frames': 5, 'write_sequence': True, 'frame_wh': (320, 360)})
        >>> parse_args(["fps=10"])
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: out_dir=<folder> is required
    """
    values: dict[str, Any] = {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or key not in _ARGS:
            raise DroneVisionError(f"unknown argument {arg!r}; expected key=value with key in: {', '.join(_ARGS)}")
        try:
            values[key] = _ARGS[key](raw)
        except ValueError as e:
            raise DroneVisionError(f"{key}: bad value {raw!r} ({e})") from None
    if "out_dir" not in values:
        raise DroneVisionError("out_dir=<folder> is required")
    if "sequence" in values:
        values["write_sequence"] = values.pop("sequence")
    if "width" in values or "height" in values:
        default_w, default_h = inspect.signature(render_flyover).parameters["frame_wh"].default
        values["frame_wh"] = (values.pop("width", default_w), values.pop("height", default_h))
    return values


USAGE = (
    "usage: python -m dronevision.synth out_dir=<dir> [n_frames=120 fps=10 width=640 height=360 blur=0 noise=0 "
    "seed=0 sequence=false codec=libx264 name=flyover dataset_dir=<YOLO dataset>]"
)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dronevision.synth out_dir=<dir> [n_frames=120 fps=10 width=640 height=360 ...]``."""
    from dronevision.cli import write_summary

    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        kwargs = parse_args(argv)
        out_dir = kwargs.pop("out_dir").expanduser().resolve()
        dataset_dir = kwargs.pop("dataset_dir", DEFAULT_DATASET).expanduser().resolve()
        if not dataset_dir.exists():
            raise DroneVisionError(f"dataset not found at {dataset_dir} (pass dataset_dir=<YOLO dataset folder>)")
        result = render_flyover(out_dir, dataset_dir=dataset_dir, **kwargs)
    except DroneVisionError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    write_summary(out_dir, result)
    w, h = result["frame_wh"]
    print(
        f"dronevision synth: {result['n_frames']} frames {w}x{h} @ {result['fps']:g} fps, "
        f"{result['n_tracks']} tracks, {result['n_boxes']} boxes -> {result['video']}"
    )
