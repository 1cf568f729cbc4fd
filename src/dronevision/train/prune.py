"""Structured pruning of a trained YOLO detector, before the training that fine-tunes it (``prune.ratio``).

Channel pruning with torch-pruning: each group of coupled channels (a conv's outputs, the BatchNorm and every layer
that reads them, residual adds and concatenations included) is ranked by its weights' L2 norm and the lowest
``ratio`` of every group removed, the kept counts rounded to the nearest multiple of ``round_to``. The result is a
smaller dense model (fewer MACs for every runtime, unlike sparse weights); the training that follows fine-tunes it,
and its mAP says what the pruning cost. The Detect head's outputs (box distribution, class scores; those of an
end-to-end head's one-to-one branch too, YOLO26's) and the first ``keep_first`` layers keep all their channels.
Layers holding attention (YOLO11's C2PSA, YOLO26's last C3k2 with its PSABlock, ...) are left whole: torch-pruning
cannot follow their reshapes (on YOLO26 it searched for minutes, gigabytes growing, before they were left out).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dronevision.errors import DroneVisionError, first_line

log = logging.getLogger(__name__)

PRUNED_ATTR = "dronevision_prune"  # on a pruned model: its PruneReport as a dict (travels in its checkpoints)
# attention: reshapes torch-pruning can't follow; a layer holding one of these anywhere is left whole
_WHOLE_BLOCKS = ("C2PSA", "C2fPSA", "PSA", "PSABlock", "A2C2f", "C2fAttn", "AIFI")


@dataclass(frozen=True)
class PruneReport:
    """What a pruning removed: multiply-accumulates and parameters before and after, at ``imgsz``."""

    ratio: float
    round_to: int
    keep_first: int
    imgsz: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def macs_kept(self) -> float:
        return self.macs_after / self.macs_before

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "macs_kept": round(self.macs_kept, 4)}


class _SplitC2f(nn.Module):
    """A C2f (or subclass) whose ``cv1`` is two convs, one per half: torch-pruning cannot follow ``chunk(2, 1)``,
    and the halves must keep equal widths to become one ``cv1`` again (:meth:`merged`)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        c = block.c
        object.__setattr__(self, "block", block)  # not a submodule: its old cv1 is neither pruned nor counted
        self.cv0, self.cv1 = _conv_rows(block.cv1, slice(0, c)), _conv_rows(block.cv1, slice(c, 2 * c))
        self.cv2, self.m = block.cv2, block.m
        for key in ("i", "f", "type", "np"):  # what ultralytics' forward reads off each layer
            if hasattr(block, key):
                setattr(self, key, getattr(block, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    def merged(self) -> nn.Module:
        """The original block class again, its ``cv1`` the two pruned halves stacked."""
        a, b = self.cv0.conv.out_channels, self.cv1.conv.out_channels
        if a != b:
            raise DroneVisionError(f"pruning left the halves of a {type(self.block).__name__} unequal ({a} vs {b})")
        block = self.block
        block.c, block.cv2, block.m = a, self.cv2, self.m
        block.cv1 = _conv_stack(self.cv0, self.cv1)
        return block


def _conv_rows(conv: nn.Module, rows: slice) -> nn.Module:
    """A copy of an ultralytics ``Conv`` (conv + BatchNorm + activation) keeping output channels ``rows``."""
    out = copy.deepcopy(conv)
    out.conv.weight = nn.Parameter(conv.conv.weight.data[rows].clone())
    out.conv.out_channels = out.conv.weight.shape[0]
    _set_bn(out.bn, {k: getattr(conv.bn, k)[rows] for k in ("weight", "bias", "running_mean", "running_var")})
    return out


def _conv_stack(top: nn.Module, bottom: nn.Module) -> nn.Module:
    """One ``Conv`` whose output channels are ``top``'s then ``bottom``'s."""
    out = copy.deepcopy(top)
    out.conv.weight = nn.Parameter(torch.cat([top.conv.weight.data, bottom.conv.weight.data]))
    out.conv.out_channels = out.conv.weight.shape[0]
    keys = ("weight", "bias", "running_mean", "running_var")
    _set_bn(out.bn, {k: torch.cat([getattr(top.bn, k), getattr(bottom.bn, k)]) for k in keys})
    return out


def _set_bn(bn: nn.BatchNorm2d, tensors: dict[str, torch.Tensor]) -> None:
    bn.weight, bn.bias = (
        nn.Parameter(tensors["weight"].detach().clone()),
        nn.Parameter(tensors["bias"].detach().clone()),
    )
    bn.running_mean, bn.running_var = tensors["running_mean"].clone(), tensors["running_var"].clone()
    bn.num_features = bn.weight.shape[0]


def _swap(module: nn.Module, predicate: Any, make: Any) -> None:
    for name, child in module.named_children():
        if predicate(child):
            setattr(module, name, make(child))
        else:
            _swap(child, predicate, make)


def _whole(layer: nn.Module) -> bool:
    """Whether ``layer`` holds an attention block (itself or anywhere inside), so torch-pruning must leave it."""
    return any(type(m).__name__ in _WHOLE_BLOCKS for m in layer.modules())


def _ignored_layers(model: nn.Module, keep_first: int) -> list[nn.Module]:
    """Layers whose output channels stay: the head's outputs, the first ``keep_first`` layers, attention blocks."""
    from ultralytics.nn.modules import Detect

    heads = [m for m in model.modules() if isinstance(m, Detect)]
    if len(heads) != 1:
        raise DroneVisionError(f"pruning needs a YOLO detection model with one Detect head (found {len(heads)})")
    head = heads[0]
    ignored: list[nn.Module] = [head.dfl] if hasattr(head.dfl, "conv") else []
    names = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")  # one2one_*: an end-to-end head's (YOLO26, YOLOv10)
    ignored += [branch[-1] for name in names for branch in getattr(head, name, None) or ()]
    layers = list(model.model)
    ignored += [m for layer in layers[:keep_first] for m in layer.modules()]
    ignored += [m for layer in layers if _whole(layer) for m in layer.modules()]
    return ignored


def _nearest_rounding_pruner() -> type:
    import torch_pruning as tp

    class NearestRoundingPruner(tp.pruner.MagnitudePruner):
        """Kept channel counts rounded to the *nearest* multiple of ``round_to`` (torch-pruning floors them, which at
        ratio 0.1 halves a 32-channel group: 28.8 -> 16)."""

        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            kept = max(round_to, int((current_channels - n_pruned) / round_to + 0.5) * round_to)  # ties: keep more
            return max(current_channels - kept, 0)

    return NearestRoundingPruner


def _count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """MACs and parameters (torch-pruning's counter, whose warnings about its own leftovers go to stdout)."""
    import torch_pruning as tp

    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def prune_detector(model: nn.Module, *, ratio: float, round_to: int, keep_first: int, imgsz: int) -> PruneReport:
    """Prune ``model`` (an ultralytics DetectionModel) in place; returns what it removed.

    Args:
        model: the trained detector.
        ratio: share of the channels of every prunable group to remove, in (0, 1).
        round_to: kept channel counts are the nearest multiple of this (1: the exact ratio).
        keep_first: the first N layers of ``model.model`` keep their output channels.
        imgsz: square input size at which the MACs are counted.
    """
    import torch_pruning as tp
    from ultralytics.nn.modules import C2f

    if not 0.0 < ratio < 1.0:
        raise DroneVisionError(f"prune.ratio must be in (0, 1), got {ratio}")
    if round_to < 1 or keep_first < 0:
        raise DroneVisionError(f"prune.round_to must be >= 1 and prune.keep_first >= 0 (got {round_to}, {keep_first})")
    grads = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.float().eval()
    for p in model.parameters():
        p.requires_grad_(True)  # torch-pruning follows the autograd graph
    example = torch.zeros(1, 3, imgsz, imgsz)
    _swap(model, lambda m: isinstance(m, C2f) and not _whole(m), _SplitC2f)
    try:
        ignored = _ignored_layers(model, keep_first)
        macs_before, params_before = _count(model, example)
        try:
            pruner = _nearest_rounding_pruner()(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=ratio,
                round_to=round_to,
                ignored_layers=ignored,
            )
            pruner.step()
        except (RuntimeError, IndexError, ValueError, KeyError) as e:
            reason = first_line(e, limit=200)
            raise DroneVisionError(f"torch-pruning could not prune this {type(model).__name__}: {reason}") from e
        macs_after, params_after = _count(model, example)
    finally:
        _swap(model, lambda m: isinstance(m, _SplitC2f), lambda m: m.merged())
    for p, g in zip(model.parameters(), grads, strict=False):
        p.requires_grad_(g)
    model.train(training)
    report = PruneReport(ratio, round_to, keep_first, imgsz, macs_before, macs_after, params_before, params_after)
    setattr(model, PRUNED_ATTR, report.as_dict())
    return report


def prune_checkpoint(
    weights: Path, out: Path, *, ratio: float, round_to: int, keep_first: int, imgsz: int, nc: int
) -> PruneReport:
    """Prune the model of the ultralytics checkpoint ``weights`` and write it to ``out`` as a checkpoint that
    ``YOLO(out)`` loads (and dronevision's trainers fine-tune as it is, rather than rebuild from its YAML).

    Args:
        nc: the training dataset's class count; the pruned model keeps its head, so it must match.
    """
    from ultralytics.nn.tasks import torch_safe_load

    ckpt, _ = torch_safe_load(str(weights))
    model = (ckpt.get("ema") or ckpt["model"]).float()
    if int(getattr(model, "nc", nc)) != nc:
        raise DroneVisionError(
            f"{weights}: the model has {model.nc} classes, the dataset {nc}; a pruned model keeps its head, "
            "so prune weights trained on these classes"
        )
    report = prune_detector(model, ratio=ratio, round_to=round_to, keep_first=keep_first, imgsz=imgsz)
    ckpt.update(model=model.half(), ema=None, optimizer=None, updates=None, epoch=-1, best_fitness=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".pt.tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info(
        "pruned %s: %.2f -> %.2f GMACs at %d, %.2fM -> %.2fM parameters: %s",
        weights.name,
        report.macs_before / 1e9,
        report.macs_after / 1e9,
        imgsz,
        report.params_before / 1e6,
        report.params_after / 1e6,
        out,
    )
    return report


def is_pruned(model: Any) -> bool:
    """Whether ``model`` is a module pruned by :func:`prune_detector` (its architecture is in no YAML)."""
    return isinstance(model, nn.Module) and bool(getattr(model, PRUNED_ATTR, None))
