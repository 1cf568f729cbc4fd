"""The detector as an MLflow python-function model: what ``mlflow.pyfunc.load_model("models:/<name>@<alias>")``
returns for a model that ``dronevision.train`` registered.

- Input: a pandas DataFrame with an ``image`` column of image file paths (JPEG, PNG, ... anything OpenCV reads);
  when served, the same as ``dataframe_split`` or ``dataframe_records`` JSON.
- Output: a DataFrame with one row per detection: ``image_index`` (the input's row), ``image`` (its path), ``x1``,
  ``y1``, ``x2``, ``y2`` (pixels of the original image), ``confidence``, ``class_id`` and ``class_name``. An image
  without detections has no row.

The model's one artifact is the detector file (the training's ONNX export, or its .pt without one); it runs through
:func:`dronevision.infer.load_detector`, so dronevision must be installed where the model is loaded (the model's
requirements pin the versions it was logged with). ``model_config`` holds ``load_detector``'s settings with its
defaults (``runtime``, ``conf``, ``iou``, ``max_det``, ``threads``, ...); override them when loading::

    model = mlflow.pyfunc.load_model("models:/dronevision-detector@candidate", model_config={"conf": 0.5})
    boxes = model.predict(pd.DataFrame({"image": ["frame_0001.jpg"]}))

The model's metadata (``MLmodel``) holds the class names, the image size and the training run.

The model is logged as code (MLflow's "models from code", no pickle): a copy of this file goes into the model, and
MLflow runs it on loading; its last line hands MLflow the model. This module imports MLflow: only
:mod:`dronevision.mlflow_run` imports it, to log a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

FLAVOR_MODEL_TYPE = "object-detection"
IMAGE_COLUMN = "image"
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
OUTPUT_COLUMNS = ("image_index", IMAGE_COLUMN, *BOX_COLUMNS, "confidence", "class_id", "class_name")
DETECTOR_SETTINGS = frozenset({"runtime", "imgsz", "conf", "iou", "max_det", "threads", "device", "precision"})
# What the model imports where it is loaded; the installed versions are pinned (nothing is resolved at log time).
REQUIREMENTS = ("dronevision", "numpy", "pandas", "opencv-python-headless", "onnxruntime", "openvino")
TORCH_REQUIREMENTS = ("torch", "torchvision", "ultralytics-opencv-headless")


# --- pure core -------------------------------------------------------------------------------------------------


def image_paths(model_input: Any) -> list[str]:
    """The image paths of a model input: a DataFrame's ``image`` column.

    Examples:
        >>> image_paths(pd.DataFrame({"image": ["a.jpg", "b.png"]}))
        ['a.jpg', 'b.png']
        >>> image_paths(["a.jpg"])
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: the input is a list: give a DataFrame with an 'image' column of paths
    """
    if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
        kind = type(model_input).__name__
        raise DroneVisionError(f"the input is a {kind}: give a DataFrame with an '{IMAGE_COLUMN}' column of paths")
    return [str(p) for p in model_input[IMAGE_COLUMN]]


def detections_frame(detections: Sequence[Detections], images: Sequence[str], names: Mapping[int, str]) -> pd.DataFrame:
    """One row per detection, in image order (see :data:`OUTPUT_COLUMNS`).

    Examples:
        >>> det = Detections(xyxy=[[1, 2, 3, 4]], class_id=[0], confidence=[0.9])
        >>> frame = detections_frame([det, Detections.empty(with_confidence=True)], ["a.jpg", "b.jpg"], {0: "car"})
        >>> frame.to_dict("records")
        [{'image_index': 0, 'image': 'a.jpg', 'x1': 1.0, 'y1': 2.0, 'x2': 3.0, 'y2': 4.0, 'confidence': 0.9, \
'class_id': 0, 'class_name': 'car'}]
        >>> list(detections_frame([], [], {}).columns) == list(OUTPUT_COLUMNS)
        True
    """
    counts = [len(d) for d in detections]
    xyxy = np.concatenate([d.xyxy for d in detections]) if detections else np.zeros((0, 4))
    class_id = np.concatenate([d.class_id for d in detections]) if detections else np.zeros(0, np.int64)
    confidence = [d.confidence if d.confidence is not None else np.full(len(d), np.nan) for d in detections]
    frame = pd.DataFrame(
        {
            "image_index": np.repeat(np.arange(len(counts), dtype=np.int64), counts),
            IMAGE_COLUMN: pd.Series(np.repeat(np.asarray(images, dtype=object), counts), dtype=object),
            **{c: xyxy[:, i].astype(np.float64) for i, c in enumerate(BOX_COLUMNS)},
            "confidence": np.concatenate(confidence).astype(np.float64) if detections else np.zeros(0),
            "class_id": class_id.astype(np.int64),
            "class_name": pd.Series([names.get(int(c), str(int(c))) for c in class_id], dtype=object),
        }
    )
    return frame[list(OUTPUT_COLUMNS)]


def detector_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``model_config`` keys that :func:`dronevision.infer.load_detector` takes; others are an error.

    Examples:
        >>> detector_settings({"runtime": "ort-cpu", "conf": 0.5})
        {'runtime': 'ort-cpu', 'conf': 0.5}
        >>> detector_settings({"confidence": 0.5})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: model_config: unknown setting 'confidence' (known: conf, device, \
imgsz, iou, max_det, precision, runtime, threads)
    """
    config = dict(config or {})
    for key in config:
        if key not in DETECTOR_SETTINGS:
            known = ", ".join(sorted(DETECTOR_SETTINGS))
            raise DroneVisionError(f"model_config: unknown setting '{key}' (known: {known})")
    return config


# --- I/O adapters ----------------------------------------------------------------------------------------------


def read_images(paths: Sequence[str]) -> list[np.ndarray]:
    """The images as (H, W, 3) uint8 BGR arrays; one that cannot be read is a :class:`DroneVisionError`."""
    import cv2

    images = []
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise DroneVisionError(f"{path}: cannot be read as an image")
        images.append(image)
    return images


def default_config() -> dict[str, Any]:
    """``load_detector``'s defaults for :data:`DETECTOR_SETTINGS`: the model_config keys a loader may override
    (MLflow ignores keys a model was not logged with)."""
    import inspect

    from dronevision.infer import load_detector

    parameters = inspect.signature(load_detector).parameters
    return {name: parameters[name].default for name in sorted(DETECTOR_SETTINGS) if name in parameters}


def requirements(model_file: Path) -> list[str]:
    """The pinned installed versions of what the model imports (no resolving, no network)."""
    packages = [*REQUIREMENTS, *(TORCH_REQUIREMENTS if model_file.suffix == ".pt" else ())]
    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            log.debug("%s is not installed: not a requirement of the model", package)
    return pinned


class DetectorModel(PythonModel):
    """The python-function flavour: image paths in, one row per detection out (see the module's docstring)."""

    def load_context(self, context: Any) -> None:
        """Open the detector file of the model's artifacts with the ``model_config`` settings."""
        from dronevision.infer import load_detector

        settings = detector_settings(context.model_config)
        self.detector = load_detector(Path(context.artifacts["model"]), **settings)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Detections of every image of ``model_input`` as a DataFrame of :data:`OUTPUT_COLUMNS`."""
        paths = image_paths(model_input)
        detections = self.detector.predict(read_images(paths)) if paths else []
        return detections_frame(detections, paths, self.detector.names)


def signature() -> Any:
    """The model's input (an ``image`` path column) and output (:data:`OUTPUT_COLUMNS`) schemas."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = {"image_index": "long", IMAGE_COLUMN: "string", "class_id": "long", "class_name": "string"}
    outputs = [ColSpec(types.get(c, "double"), c) for c in OUTPUT_COLUMNS]
    return ModelSignature(inputs=Schema([ColSpec("string", IMAGE_COLUMN)]), outputs=Schema(outputs))


def save_detector_model(
    path: Path,
    model_file: Path,
    *,
    example_images: Sequence[Path],
    metadata: Mapping[str, Any] | None = None,
    mlflow_model: Any = None,
) -> Path:
    """Write the MLflow model of ``model_file`` (an .onnx, .pt or OpenVINO IR folder) into the new folder ``path``.

    The signature is given and the requirements are pinned, so nothing is inferred, resolved or downloaded; the
    model's code is a copy of this file.

    Args:
        path: the folder to create.
        model_file: the detector, copied into the model's artifacts.
        example_images: images of the input example (their paths are recorded, not their pixels).
        metadata: recorded in ``MLmodel`` (class names, image size, training run, ...).
        mlflow_model: the ``mlflow.models.Model`` to fill in (a logged model's ids); None for a bare one.
    """
    import mlflow.pyfunc

    mlflow.pyfunc.save_model(
        str(path),
        python_model=Path(__file__),
        artifacts={"model": str(model_file)},
        signature=signature(),
        input_example=pd.DataFrame({IMAGE_COLUMN: [str(p) for p in example_images]}),
        pip_requirements=requirements(model_file),
        metadata=dict(metadata or {}),
        model_config=default_config(),
        mlflow_model=mlflow_model,
    )
    return path


set_model(DetectorModel())  # the model MLflow gets when it runs this file's copy in a logged model
