"""Memory bank: first / evenly spaced / latest selection, per-environment histories."""

import numpy as np
import pytest
import torch

from simulator_service.memory_bank import MemoryBank, select_indices


def test_select_indices():
    assert select_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert select_indices(5, 1).tolist() == [4]
    assert select_indices(7, 2).tolist() == [0, 6]
    assert select_indices(1, 3).tolist() == [0, 0, 0]
    assert select_indices(2, 3).tolist() == [0, 0, 1] or select_indices(2, 3).tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        select_indices(0, 2)


def test_bank_histories():
    bank = MemoryBank(3)
    bank.reset(torch.zeros(2, 1, 4, 4))
    for t in range(1, 10):
        bank.append(torch.full((2, 1, 4, 4), float(t)))
    sel = bank.select()
    assert sel.shape == (2, 3, 1, 4, 4)
    assert sel[:, :, 0, 0, 0].tolist() == [[0, 4, 9], [0, 4, 9]] or sel[:, :, 0, 0, 0].tolist() == [
        [0, 5, 9],
        [0, 5, 9],
    ]
    assert torch.equal(bank.latest(), torch.full((2, 1, 4, 4), 9.0))
    assert bank.lengths() == [10, 10]
    idx = select_indices(10, 3)
    assert sel[0, :, 0, 0, 0].tolist() == idx.astype(float).tolist()


def test_bank_context_frames_and_errors():
    bank = MemoryBank(2)
    ctx = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(2, 3, 1, 2, 2)
    bank.reset(ctx)
    assert bank.select()[:, :, 0, 0, 0].tolist() == [[0, 2], [0, 2]]
    with pytest.raises(ValueError, match="environments"):
        bank.append(torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match="frames are"):
        bank.append(torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="empty"):
        MemoryBank(2).select()
    assert np.isclose(float(bank.latest().sum()), 2 * 2 * 4)
