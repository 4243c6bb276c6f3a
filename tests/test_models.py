import pytest
import torch
from torch import nn

from likewise.models import GeM, GlobalPool, build_model


@pytest.mark.parametrize("trunk", ["mlp", "convnet", "resnet18", "resnet34", "resnet50"])
def test_models_embed_to_unit_vectors(trunk):
    model = build_model(trunk, (1, 16, 16), embedding_dim=12).eval()
    z = model(torch.randn(3, 1, 16, 16))
    assert z.shape == (3, 12)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_pooling_kinds_match_their_definitions():
    x = torch.rand(2, 3, 4, 5) + 0.1
    torch.testing.assert_close(GlobalPool("avg")(x), x.flatten(2).mean(-1))
    torch.testing.assert_close(GlobalPool("max")(x), x.flatten(2).max(-1).values)
    torch.testing.assert_close(GlobalPool("sum")(x), x.flatten(2).sum(-1))
    gem = GeM(p=3.0)
    rows = [[(x[b, c] ** 3).mean() ** (1 / 3) for c in range(3)] for b in range(2)]
    expected = torch.stack([torch.stack(r) for r in rows])
    torch.testing.assert_close(gem(x), expected)
    assert gem.p.requires_grad
    # GeM with p=1 is average pooling
    torch.testing.assert_close(GeM(p=1.0)(x), x.flatten(2).mean(-1))


def test_user_trunk_and_errors():
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(6, 5))
    model = build_model(trunk, embedding_dim=4, trunk_features=5, normalize=False)
    assert model(torch.randn(2, 6)).shape == (2, 4)
    with pytest.raises(ValueError, match="cannot tell the trunk's output width"):
        build_model(nn.Sequential(nn.Flatten(), nn.ReLU()))
    with pytest.raises(ValueError, match="unknown trunk 'vgg'"):
        build_model("vgg", (1, 8, 8))
    with pytest.raises(ValueError, match="needs image inputs"):
        build_model("convnet", (64,))
    with pytest.raises(ValueError, match="unknown pooling"):
        GlobalPool("median")


def test_projection_head_and_small_input_stem():
    model = build_model("resnet18", (3, 32, 32), embedding_dim=16, projection_dim=8).eval()
    assert model.project(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    # small images keep the 3x3 stride-1 stem (no initial down-sampling)
    assert model.trunk.stem[0].stride == (1, 1)
    big = build_model("resnet18", (3, 96, 96), embedding_dim=16)
    assert big.trunk.stem[0].stride == (2, 2)


def test_embed_features_trains_the_head_and_embeds_the_pooled_features():
    torch.manual_seed(0)
    m = build_model(
        "mlp", (5,), embedding_dim=3, trunk_kwargs={"hidden": [7]}, embed="features", projection_dim=2
    ).eval()
    x = torch.randn(4, 5)
    f = m.features(x)
    assert torch.allclose(m(x), f / f.norm(dim=1, keepdim=True))
    assert torch.allclose(m.train_output(x), m.projection(m.head(f)))
    raw = build_model(
        "mlp", (5,), embedding_dim=3, trunk_kwargs={"hidden": [7]}, embed="features", normalize=False
    ).eval()
    assert torch.allclose(raw(x), raw.features(x))
    with pytest.raises(ValueError, match="embed must be one of head, features, got 'pooled'"):
        build_model("mlp", (5,), embed="pooled")
