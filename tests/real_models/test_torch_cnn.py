"""Hand-built torch CNNs with the layers of ResNeXt and MobileNetV3 (torchvision/timm are not
installed on the CPU machine): grouped, depthwise (multiplier 1 and 2), 1x1 and transposed
convolutions, BatchNorm, squeeze-excitation convs with biases and a Linear head, each parameter
against a hand-written table of forward fans (tests/real_models/README.md).

Conv fans: a Conv2d weight (out, in/g, kh, kw) has fan_in = in/g·kh·kw and fan_out = out/g·kh·kw
(per group; the convention of torch, Keras and initscale, whatever the stride). A ConvTranspose2d
weight (in, out/g, kh, kw) with stride s has forward fan_in = in/g·kh·kw/s² (the inputs summed
into one output: kh/s taps per axis and input channel; tests/test_torch_reinit.py counts them)
and fan_out = out/g·kh·kw.
"""

from __future__ import annotations

import functools
import warnings

import pytest
from _table import SPEC, Expect, coverage_problems, groups, match, report_problems, silent_problems

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")
nn = torch.nn


class ResNeXtBlock(nn.Module):
    """Bottleneck with a grouped 3x3 conv (cardinality 8) and a strided projection shortcut."""

    def __init__(self, cin: int = 64, width: int = 64, cout: int = 128, groups: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.down(x))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise 3x3, squeeze-excite (1x1 convs with bias), 1x1 project."""

    def __init__(self, c: int = 32, expand: int = 96, squeeze: int = 24) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(expand, expand, 3, padding=1, groups=expand, bias=False), nn.BatchNorm2d(expand), nn.Hardswish()
        )
        self.se_reduce = nn.Conv2d(expand, squeeze, 1)
        self.se_expand = nn.Conv2d(squeeze, expand, 1)
        self.project = nn.Sequential(nn.Conv2d(expand, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.depthwise(self.expand(x))
        s = torch.nn.functional.hardsigmoid(self.se_expand(torch.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        return x + self.project(y * s)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32))
        self.mb = InvertedResidual()
        self.dw2 = nn.Conv2d(32, 64, 3, padding=1, groups=32, bias=False)  # depthwise, multiplier 2
        self.block = ResNeXtBlock()
        self.up = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, groups=2)  # grouped, transposed
        self.up_bn = nn.BatchNorm2d(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        y = self.block(self.dw2(self.mb(self.stem(x))))
        return self.head(self.up_bn(self.up(y)).mean((2, 3)))


K3, K1, K4 = 9, 1, 16
CNN = (
    Expect("stem.0.weight", "weight", "(out=32, in=3, 3, 3)", (3 * K3, 32 * K3), "convs"),
    Expect("mb.expand.0.weight", "weight", "(out=96, in=32, 1, 1)", (32, 96), "convs"),
    Expect(
        "mb.depthwise.0.weight", "weight", "(out=96, in/g=1, 3, 3), groups 96", (K3, K3), "grouped and depthwise convs"
    ),
    Expect("mb.se_reduce.weight", "weight", "(out=24, in=96, 1, 1)", (96, 24), "convs"),
    Expect("mb.se_expand.weight", "weight", "(out=96, in=24, 1, 1)", (24, 96), "convs"),
    Expect("mb.project.0.weight", "weight", "(out=32, in=96, 1, 1)", (96, 32), "convs"),
    Expect(
        "dw2.weight",
        "weight",
        "(out=64, in/g=1, 3, 3), groups 32: multiplier 2",
        (K3, 2 * K3),
        "grouped and depthwise convs",
    ),
    Expect("block.conv1.weight", "weight", "(out=64, in=64, 1, 1)", (64 * K1, 64 * K1), "convs"),
    Expect(
        "block.conv2.weight",
        "weight",
        "(out=64, in/g=8, 3, 3), groups 8",
        (8 * K3, 8 * K3),
        "grouped and depthwise convs",
    ),
    Expect("block.conv3.weight", "weight", "(out=128, in=64, 1, 1)", (64, 128), "convs"),
    Expect("block.down.0.weight", "weight", "(out=128, in=64, 1, 1)", (64, 128), "convs"),
    Expect(
        "up.weight", "weight", "(in=128, out/g=32, 4, 4), groups 2, stride 2", (64 * K4 / 4, 32 * K4), "transposed conv"
    ),
    Expect("head.weight", "weight", "(out=10, in=64)", (64, 10), "Linear"),
    Expect("*bn*.weight", "norm_scale", "(c,)", None, "BatchNorm"),
    Expect("*bn*.bias", "norm_offset", "(c,)", None, "BatchNorm"),
    Expect("*.[1].weight", "norm_scale", "(c,) BatchNorm in a Sequential", None, "BatchNorm"),
    Expect("*.[1].bias", "norm_offset", "(c,) BatchNorm in a Sequential", None, "BatchNorm"),
    Expect("mb.se_*.bias", "bias", "(out,)", None, "biases"),
    Expect("up.bias", "bias", "(out,)", None, "biases"),
    Expect("head.bias", "bias", "(out,)", None, "biases"),
)


@functools.cache
def _run():
    torch.manual_seed(0)
    net = Net()
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 10)  # the forward pass the table describes
    names = [n for n, _ in net.named_parameters(remove_duplicate=False)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dry = ist.reinit_(net, SPEC, dry_run=True)
    before = {n: p.detach().clone().numpy() for n, p in net.named_parameters()}
    real = ist.reinit_(net, SPEC, generator=torch.Generator().manual_seed(1))
    after = {n: p.detach().numpy() for n, p in net.named_parameters()}
    return names, dry, " ".join(str(w.message) for w in caught), real, before, after


def test_table_covers_every_parameter() -> None:
    problems = coverage_problems(CNN, _run()[0])
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("group", groups(CNN))
def test_report_and_draws_match_the_table(group: str) -> None:
    names, dry, warned, real, before, after = _run()
    mine = [n for n in names if any(e.group == group for e in match(CNN, n))]
    problems = report_problems(CNN, group, dry, mine)
    problems += silent_problems([e for e in CNN if e.group == group], [r for r in dry if r.name in mine], warned)
    problems += [f"real call: {p}" for p in report_problems(CNN, group, real, mine, after, before)]
    assert not problems, "\n" + "\n".join(problems)
