"""CPU speed settings for ultralytics training, applied from the trainer's first callback.

What ultralytics does on CPU and what :func:`tune_cpu` changes, measured with ``scripts/bench_train.py`` and
per-step timers (yolov8n from scratch, bundled aerial-cars, imgsz 416, batch 16, 2-core AMD EPYC, fp32):

- torch threads: ultralytics sets ``cpu_count - 1`` (1 of 2 cores here): 1.6 s per training step. All cores:
  1.0 s.
- memory layout: ultralytics trains channels-last only on CUDA (its ``channels_last`` argument, default auto).
  On x86 CPUs the oneDNN convolutions are faster on channels-last weights too: 0.75-0.8 s per step (forward
  -25%, backward -23%), same losses within run-to-run noise. ultralytics already runs CPU inference channels-last
  and saves checkpoints in the standard layout whatever the training layout.
- ultralytics resets the thread count whenever it loads weights (``select_device``): its final validation of
  ``best.pt`` and dronevision's evaluation after training ran on one core (evaluation 2.5 s -> 1.6 s here).

Measured and left as ultralytics has them on 2 cores: ``workers`` (ultralytics forces 0 on CPU; loading and
augmenting a batch takes ~50 ms, 6% of a step, and one or two worker processes took it off the critical path but
slowed the convolutions as much, while changing the augmentation random stream), ``cache`` (JPEG decoding is
~0.5 ms of the ~3.5 ms per image: 1% of an epoch) and OpenCV threads (``warpAffine`` is ~0.6 ms per image).
Nothing changes on GPU, where ultralytics already trains channels-last.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

log = logging.getLogger(__name__)


def want_channels_last(setting: bool | None, *, machine: str, mkldnn: bool) -> bool:
    """Whether to train channels-last on CPU, given ultralytics' ``channels_last`` argument (None: automatic).

    Automatic means yes on x86 with oneDNN (the CPUs where ultralytics' own inference goes channels-last).

    Examples:
        >>> want_channels_last(None, machine="x86_64", mkldnn=True)
        True
        >>> want_channels_last(None, machine="aarch64", mkldnn=True)
        False
        >>> want_channels_last(False, machine="x86_64", mkldnn=True)
        False
        >>> want_channels_last(True, machine="aarch64", mkldnn=False)
        True
    """
    if setting is not None:
        return bool(setting)
    return machine in {"x86_64", "AMD64"} and mkldnn


def tune_cpu(trainer: Any, *, threads: int) -> None:
    """Speed up CPU training; a no-op on any other device.

    Call it from ``on_pretrain_routine_start`` (the trainer exists, its model and dataloaders do not yet). It sets
    torch's thread count, keeps ultralytics from lowering it again, and registers :func:`use_channels_last` for
    ``on_pretrain_routine_end``, when the model, its EMA copy and the optimizer exist.

    Args:
        trainer: an ultralytics ``BaseTrainer``.
        threads: torch intra-op threads (ultralytics alone uses ``cpu_count - 1``).
    """
    import torch

    if trainer.device.type != "cpu":
        return
    keep_threads(threads)
    mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    setting = getattr(trainer.args, "channels_last", None)
    channels_last = want_channels_last(setting, machine=platform.machine(), mkldnn=mkldnn)
    if channels_last:
        trainer.add_callback("on_pretrain_routine_end", use_channels_last)
    log.info("CPU training: %d torch threads, %s weights", threads, "channels-last" if channels_last else "NCHW")


def keep_threads(threads: int) -> None:
    """Set torch's CPU threads to ``threads``, also for every later ultralytics ``select_device`` call.

    ultralytics' ``select_device`` calls ``torch.set_num_threads(NUM_THREADS)`` (``cpu_count - 1``) each time a
    validator or predictor loads weights, e.g. the final validation of ``best.pt``. Pointing its module's
    ``NUM_THREADS`` at ``threads`` keeps every later step of the process on the same count.
    """
    import torch
    import ultralytics.utils.torch_utils as torch_utils

    torch_utils.NUM_THREADS = threads
    torch.set_num_threads(threads)


def use_channels_last(trainer: Any) -> None:
    """Make the model's and the EMA's 4-D weights channels-last, so that oneDNN convolutions skip layout reorders.

    Parameters are converted in place (``Module.to`` replaces ``param.data``), so the optimizer built before this
    callback keeps training the same tensors. Activations follow the weights' layout; inputs need no change.
    """
    import torch

    trainer.model.to(memory_format=torch.channels_last)
    ema = getattr(trainer, "ema", None)
    if ema is not None:
        ema.ema.to(memory_format=torch.channels_last)
