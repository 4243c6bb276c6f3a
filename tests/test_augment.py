import pytest
import torch

from likewise.augment import Views, build_augmentation


def test_light_augmentation_changes_images_but_keeps_shape_and_range():
    x = torch.rand(4, 1, 28, 28)
    aug = build_augmentation("light")
    y = aug(x)
    assert y.shape == x.shape
    assert not torch.allclose(x, y)
    assert y.min() >= 0.0 and y.max() <= 1.0 + 1e-6


def test_two_views_are_independent_draws():
    x = torch.rand(3, 3, 32, 32)
    views = Views(build_augmentation("simclr", (32, 32)))(x)
    assert views.shape == (6, 3, 32, 32)
    assert not torch.allclose(views[:3], views[3:])


def test_identity_and_errors():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(build_augmentation("none")(x), x)
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        build_augmentation("rotate")
    with pytest.raises(ValueError, match="needs image_size"):
        build_augmentation("simclr")


def test_light_parameters_bound_the_transform():
    x = torch.zeros(64, 1, 29, 29)
    x[:, :, 14, 14] = 1.0  # one bright pixel at the centre
    still = build_augmentation("light", degrees=0, scale=0, translate=0)(x)
    assert torch.allclose(still, x, atol=1e-5)
    # rotation and scale keep the centre; a translation of at most 10% moves it <= 2.9 px per axis
    turned = build_augmentation("light", degrees=90, scale=0.2, translate=0)(x)
    assert torch.all(turned[:, 0, 14, 14] > 0.5)
    shifted = build_augmentation("light", degrees=0, scale=0, translate=0.1)(x)
    rows, cols = torch.meshgrid(torch.arange(29.0), torch.arange(29.0), indexing="ij")
    mass = shifted[:, 0].sum((1, 2))
    dy = (shifted[:, 0] * rows).sum((1, 2)) / mass - 14
    dx = (shifted[:, 0] * cols).sum((1, 2)) / mass - 14
    assert dy.abs().max() <= 2.9 + 1e-3 and dx.abs().max() <= 2.9 + 1e-3
    assert dx.abs().max() > 1.0  # it does move


def test_views_are_reproducible_under_a_seed_and_check_their_input():
    x = torch.rand(5, 1, 12, 12)
    views = Views(build_augmentation("light"), views=3)
    torch.manual_seed(0)
    a = views(x)
    torch.manual_seed(0)
    assert a.shape == (15, 1, 12, 12) and torch.equal(a, views(x))
    with pytest.raises(ValueError, match="views must be a positive integer, got 0"):
        Views(build_augmentation("light"), views=0)
    with pytest.raises(ValueError, match=r"needs image batches \[B, C, H, W\], got shape \(5, 144\)"):
        views(x.reshape(5, -1))
    with pytest.raises(ValueError, match="0 <= translate < 1"):
        build_augmentation("light", translate=1.5)
