"""CPU speed settings for training: what tune_cpu changes, and that channels-last weights compute the same thing."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import ultralytics.utils.torch_utils as torch_utils

from dronevision.train.speed import keep_threads, tune_cpu, use_channels_last, want_channels_last


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    saved = torch.get_num_threads(), torch_utils.NUM_THREADS
    yield
    torch.set_num_threads(saved[0])
    torch_utils.NUM_THREADS = saved[1]


def fake_trainer(device: str, *, channels_last: bool | None = None, model: Any = None) -> SimpleNamespace:
    """What tune_cpu and use_channels_last touch on an ultralytics BaseTrainer."""
    callbacks: defaultdict[str, list] = defaultdict(list)
    return SimpleNamespace(
        device=torch.device(device),
        args=SimpleNamespace(channels_last=channels_last),
        callbacks=callbacks,
        add_callback=lambda event, fn: callbacks[event].append(fn),
        model=model,
        ema=SimpleNamespace(ema=copy.deepcopy(model)) if model is not None else None,
    )


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.SiLU(),
        torch.nn.Conv2d(8, 4, 3, stride=2),
    )


@pytest.mark.parametrize(
    ("setting", "machine", "mkldnn", "expected"),
    [
        (None, "x86_64", True, True),  # automatic: x86 with oneDNN
        (None, "AMD64", True, True),
        (None, "x86_64", False, False),
        (None, "aarch64", True, False),
        (None, "arm64", True, False),
        (False, "x86_64", True, False),  # the user's channels_last=False wins
        (True, "aarch64", False, True),  # ...and so does channels_last=True
    ],
)
def test_want_channels_last(setting: bool | None, machine: str, mkldnn: bool, expected: bool) -> None:
    assert want_channels_last(setting, machine=machine, mkldnn=mkldnn) is expected


def test_tune_cpu_leaves_gpu_training_alone() -> None:
    torch.set_num_threads(1)
    trainer = fake_trainer("cuda:0")
    tune_cpu(trainer, threads=2)
    assert torch.get_num_threads() == 1
    assert not trainer.callbacks


@pytest.mark.parametrize(("setting", "registered"), [(None, True), (False, False), (True, True)])
def test_tune_cpu_sets_threads_and_registers_channels_last(
    monkeypatch: pytest.MonkeyPatch, setting: bool | None, registered: bool
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    torch.set_num_threads(1)
    trainer = fake_trainer("cpu", channels_last=setting)
    tune_cpu(trainer, threads=2)
    assert torch.get_num_threads() == 2
    assert torch_utils.NUM_THREADS == 2
    assert (trainer.callbacks["on_pretrain_routine_end"] == [use_channels_last]) is registered
    assert set(trainer.callbacks) <= {"on_pretrain_routine_end"}


def test_keep_threads_survives_select_device() -> None:
    """ultralytics resets torch's threads whenever it loads weights; after keep_threads it resets them to ours."""
    keep_threads(2)
    torch.set_num_threads(1)  # anything in between
    torch_utils.select_device("cpu", verbose=False)
    assert torch.get_num_threads() == 2


def test_use_channels_last_converts_in_place_and_computes_the_same() -> None:
    reference = tiny_net()
    trainer = fake_trainer("cpu", model=copy.deepcopy(reference))
    params = list(trainer.model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)  # built before the callback, as in ultralytics

    use_channels_last(trainer)

    assert [id(p) for p in trainer.model.parameters()] == [id(p) for p in params]  # the optimizer's tensors
    for model in (trainer.model, trainer.ema.ema):
        weights = [p for p in model.parameters() if p.dim() == 4]
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    x = torch.rand(2, 3, 16, 16)  # inputs stay NCHW
    y_ref, y = reference(x), trainer.model(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    y_ref.square().mean().backward()
    y.square().mean().backward()
    for p_ref, p in zip(reference.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5)
    optimizer.step()  # trains the converted tensors
    assert not torch.equal(trainer.model[0].weight, reference[0].weight)
