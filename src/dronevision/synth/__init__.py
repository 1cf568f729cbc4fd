"""Synthetic footage and datasets with exact ground truth, for tests, benchmarks and the demo (no downloads)."""

from dronevision.synth.command import main, parse_args
from dronevision.synth.detset import write_visdrone_det_set
from dronevision.synth.flyover import (
    PAINT_PALETTE,
    aerial_mosaic,
    camera_path,
    flyover_lines,
    project_boxes,
    render_flyover,
    warp_frame,
)

__all__ = [
    "PAINT_PALETTE",
    "aerial_mosaic",
    "camera_path",
    "flyover_lines",
    "main",
    "parse_args",
    "project_boxes",
    "render_flyover",
    "warp_frame",
    "write_visdrone_det_set",
]
