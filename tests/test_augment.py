import pytest
import torch

from likewise.augment import TwoViews, build_augmentation


def test_light_augmentation_changes_images_but_keeps_shape_and_range():
    x = torch.rand(4, 1, 28, 28)
    aug = build_augmentation("light")
    y = aug(x)
    assert y.shape == x.shape
    assert not torch.allclose(x, y)
    assert y.min() >= 0.0 and y.max() <= 1.0 + 1e-6


def test_two_views_are_independent_draws():
    x = torch.rand(3, 3, 32, 32)
    views = TwoViews(build_augmentation("simclr", (32, 32)))(x)
    assert views.shape == (6, 3, 32, 32)
    assert not torch.allclose(views[:3], views[3:])


def test_identity_and_errors():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(build_augmentation("none")(x), x)
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        build_augmentation("rotate")
    with pytest.raises(ValueError, match="needs image_size"):
        build_augmentation("simclr")
