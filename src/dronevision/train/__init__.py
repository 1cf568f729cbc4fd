"""Train a YOLO-family detector with ultralytics, tracked in one MLflow run; then evaluate, export and register it.

Run ``python -m dronevision.train key=value ...`` (or ``dronevision-train``); tests call :func:`run`.
"""

from dronevision.train.args import OWNED_ARGS, ModelSpec, resolve_model, train_overrides, ultralytics_train_args
from dronevision.train.command import main, run

__all__ = ["OWNED_ARGS", "ModelSpec", "main", "resolve_model", "run", "train_overrides", "ultralytics_train_args"]
