"""Training on a CPU computes denormal floats as zero (train.flush_denormal) and gives the process its own setting
back afterwards, so that nothing else in the process (another test, the user's code) computes differently."""

from __future__ import annotations

import torch

from defocuskit.train.loop import denormals_flushed, flushed_denormals


def test_denormals_are_flushed_inside_and_restored_after() -> None:
    torch.set_flush_denormal(False)
    assert not denormals_flushed()
    with flushed_denormals(True):
        assert denormals_flushed()
        assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
    assert not denormals_flushed()
    with flushed_denormals(False):  # `train.flush_denormal: false`: IEEE arithmetic
        assert not denormals_flushed()
    torch.set_flush_denormal(True)  # a process that flushes already keeps flushing
    try:
        with flushed_denormals(False):
            assert denormals_flushed()
        assert denormals_flushed()
    finally:
        torch.set_flush_denormal(False)
