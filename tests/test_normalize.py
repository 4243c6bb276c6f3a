"""l2_normalize: F.normalize's values with a written-out gradient."""

import pytest
import torch
import torch.nn.functional as F

from likewise.normalize import l2_normalize


@pytest.mark.parametrize("dim", [0, 1])
def test_values_and_gradient_equal_f_normalize(dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    x[2] = 0.0  # a zero row: the norm is clamped at eps
    x[:, 3] = 0.0  # a zero column
    weights = torch.randn(7, 5, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    (l2_normalize(a, dim=dim) * weights).sum().backward()
    (F.normalize(b, dim=dim) * weights).sum().backward()
    torch.testing.assert_close(l2_normalize(x, dim=dim), F.normalize(x, dim=dim), rtol=0, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    # (the clamped regime, |x| <= eps, is within gradcheck's step: checked against F.normalize above)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: l2_normalize(t, dim=1), (x,))
    assert torch.autograd.gradcheck(lambda t: l2_normalize(t, dim=0), (x,))


def test_no_autograd_gives_a_plain_tensor():
    x = torch.randn(3, 2)
    y = l2_normalize(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("dim", [0, 1])
def test_scaled_values_and_gradient_equal_scale_times_f_normalize(dim):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    x[2] = 0.0
    x[:, 3] = 0.0
    x[4] = 1e-14  # below eps: scaled by 1 / eps, not normalised
    weights = torch.randn(7, 5, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    (l2_normalize(a, dim=dim, scale=64.0) * weights).sum().backward()
    (64.0 * F.normalize(b, dim=dim) * weights).sum().backward()
    torch.testing.assert_close(l2_normalize(x, dim=dim, scale=64.0), 64.0 * F.normalize(x, dim=dim))
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    y = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: l2_normalize(t, dim=dim, scale=3.5), (y,))
