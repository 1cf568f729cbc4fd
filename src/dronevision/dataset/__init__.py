"""Datasets: read sources, validate them, and hand ultralytics one YOLO dataset."""

from dronevision.dataset.yolo import (
    YoloDataset,
    label_path,
    load_yolo_dataset,
    manifest_lines,
    manifest_sha256,
    parse_label_lines,
    write_data_yaml,
)

__all__ = [
    "YoloDataset",
    "label_path",
    "load_yolo_dataset",
    "manifest_lines",
    "manifest_sha256",
    "parse_label_lines",
    "write_data_yaml",
]
