"""likewise.entries: scattered matrix entries through the flat view, against advanced indexing."""

from __future__ import annotations

import pytest
import torch

from likewise import entries


def _case():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 7, generator=g, dtype=torch.float64)
    rows = torch.tensor([0, 4, 2, 2, 1])
    cols = torch.tensor([6, 0, 3, 5, 1])
    values = torch.randn(5, generator=g, dtype=torch.float64)
    return m, rows, cols, values


def test_take_put_fill_equal_advanced_indexing():
    m, rows, cols, values = _case()
    assert torch.equal(entries.take(m, rows, cols), m[rows, cols])
    assert torch.equal(entries.take(m.T, cols, rows), m.T[cols, rows])  # reads take any layout
    expected = m.clone()
    expected[rows, cols] = values
    assert torch.equal(entries.put_(m.clone(), rows, cols, values), expected)
    expected = m.clone()
    expected[rows, cols] = -1.5
    assert torch.equal(entries.fill_(m.clone(), rows, cols, -1.5), expected)


def test_add_accumulates_repeated_entries():
    m, _, _, _ = _case()
    rows, cols = torch.tensor([1, 1, 3]), torch.tensor([2, 2, 0])
    values = torch.tensor([0.5, 0.25, -2.0], dtype=torch.float64)
    expected = m.clone()
    expected.index_put_((rows, cols), values, accumulate=True)
    assert torch.equal(entries.add_(m.clone(), rows, cols, values), expected)


def test_int32_indices_and_flat_positions():
    m, rows, cols, _ = _case()
    assert torch.equal(entries.take(m, rows.int(), cols.int()), m[rows, cols])
    assert entries.flat_index(rows.int(), cols, m).dtype == torch.long
    expected = [r * 7 + c for r, c in zip(rows.tolist(), cols.tolist())]
    assert entries.flat_index(rows, cols, m).tolist() == expected


def test_writes_refuse_a_non_contiguous_matrix():
    m, rows, cols, values = _case()
    with pytest.raises(ValueError, match="writes need a contiguous matrix"):
        entries.put_(m.T, cols, rows, values)
    with pytest.raises(ValueError, match="writes need a contiguous matrix"):
        entries.fill_(m.T, cols, rows, 0.0)
