"""Plain-torch trunks (no torchvision): MLP, a small ConvNet and ResNet-18/34/50.

Convolutional trunks return a feature map ``[B, C, h, w]`` (pooled later, see
``pooling.py``); the MLP flattens its input and returns ``[B, F]``. Each trunk
has an ``out_features`` attribute. ResNet (He et al. 2016) takes ``small_input``:
a 3x3 stride-1 stem without max-pooling for small images (MNIST, CIFAR), instead
of the 7x7 stride-2 stem + max-pool meant for 224 px images.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """``x -> flatten -> [Linear -> BatchNorm -> ReLU] * len(hidden)``; ``[B, ...] -> [B, hidden[-1]]``."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        if in_features < 1 or not hidden:
            raise ValueError("MLP needs in_features >= 1 and at least one hidden layer")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            width = h
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class ConvNet(nn.Module):
    """A small VGG-like ConvNet: per stage two 3x3 conv-BN-ReLU, then 2x2 max-pool.

    ``[B, C_in, H, W] -> [B, widths[-1], H / 2^(S-1), W / 2^(S-1)]`` (no pool after the last stage).
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers += _conv_bn(cin, w) + _conv_bn(w, w)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Conv1dNet(nn.Module):
    """1-D ConvNet for signals ``[B, L]`` or ``[B, C, L]``: strided ``Conv1d -> ReLU`` layers, flattened.

    The defaults are the MNIST-1D encoder of Greydanus (2020): three layers of 25
    channels, kernels 5 / 3 / 3, stride 2, padding 1; for ``L = 40`` the output is
    ``25 x 5 = 125`` features. ``batch_norm`` adds a BatchNorm1d after each convolution.
    """

    def __init__(
        self,
        length: int,
        in_channels: int = 1,
        channels: int = 25,
        kernels: Sequence[int] = (5, 3, 3),
        stride: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, n = in_channels, int(length)
        for k in kernels:
            layers.append(nn.Conv1d(cin, channels, k, stride=stride, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm1d(channels))
            layers.append(nn.ReLU())
            cin, n = channels, (n + 2 - k) // stride + 1
        if n < 1:
            raise ValueError(f"signals of length {length} are too short for kernels {tuple(kernels)}")
        self.layers = nn.Sequential(*layers, nn.Flatten())
        self.in_channels = in_channels
        self.out_features = channels * n

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x[:, None] if x.dim() == 2 else x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(cin, width, stride),
            nn.Conv2d(width, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(cin, width, 1, kernel=1),
            *_conv_bn(width, width, stride),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


RESNET_LAYOUT: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet-18/34/50 trunk returning the last feature map ``[B, 512 * expansion, h, w]``."""

    def __init__(
        self,
        depth: str = "resnet18",
        in_channels: int = 3,
        *,
        small_input: bool = False,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUT:
            raise ValueError(f"unknown ResNet {depth!r}; expected one of {', '.join(RESNET_LAYOUT)}")
        block, counts = RESNET_LAYOUT[depth]
        if small_input:
            self.stem = nn.Sequential(*_conv_bn(in_channels, base_width, 1))
        else:
            self.stem = nn.Sequential(
                *_conv_bn(in_channels, base_width, 2, kernel=7), nn.MaxPool2d(3, stride=2, padding=1)
            )
        stages: list[nn.Module] = []
        cin = base_width
        for i, n in enumerate(counts):
            width = base_width * 2**i
            for j in range(n):
                stages.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.out_features = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))
