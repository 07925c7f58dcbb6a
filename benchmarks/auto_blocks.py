"""``initscale.auto`` against anyinit on residual models: a ResNet-like CNN and a pre-LN transformer.

    python benchmarks/auto_blocks.py

For 5 seeds each, every scheme initializes the model (eval mode), then a fresh batch goes through
and the table gives the mean square of the output: median and range in eval mode (BatchNorm on its
running statistics), the median in training mode (BatchNorm on the batch), and the init time. The
input's mean square is 1, the fixed point q = 1: a scheme that holds each residual sum at q ends
near 1. Schemes: he_normal on every weight (plain rules), ``initscale.auto`` (measured mode) with
each residual rule (``residual="zero"``, the default; ``"depth"``; ``"none"``, no residual rule),
anyinit 0.4.0's analytic mode.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import initscale
from initscale.adapters.torch import reinit_

nn = torch.nn


class Block(nn.Module):
    """relu(x + BN(conv(relu(BN(conv(x)))))), 3×3 convolutions without bias."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class TBlock(nn.Module):
    """A pre-LN transformer block: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.n1, self.attn, self.n2 = nn.LayerNorm(d), nn.MultiheadAttention(d, 4, batch_first=True), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.n2(x))))


def resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), *[Block(32) for _ in range(8)])


def transformer() -> nn.Module:
    return nn.Sequential(*[TBlock(128) for _ in range(6)])


CASES: list[tuple[str, Callable[[], nn.Module], Callable[[torch.Generator], torch.Tensor]]] = [
    ("ResNet-like CNN (8 residual blocks, 32 ch)", resnet, lambda g: torch.randn(16, 3, 16, 16, generator=g)),
    ("transformer (6 pre-LN blocks, d 128)", transformer, lambda g: torch.randn(8, 16, 128, generator=g)),
]


SCHEMES = (
    "he_normal",
    "initscale.auto",
    "initscale.auto residual=depth",
    "initscale.auto residual=none",
    "anyinit.analytic",
)


def _init(scheme: str, model: nn.Module, example: torch.Tensor, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    if scheme == "he_normal":
        reinit_(model, initscale.presets.get("he_normal"), generator=generator)
    elif scheme.startswith("initscale.auto"):
        residual = scheme.partition("residual=")[2] or "zero"
        reinit_(model, initscale.auto(example, residual=residual), generator=generator)
    else:
        import anyinit

        anyinit.initialize(model, "analytic", example, seed=seed)


def rows(seeds: int = 5) -> list[dict[str, Any]]:
    out = []
    for label, build, data in CASES:
        for scheme in SCHEMES:
            squares, train, seconds, error = [], [], [], ""
            for seed in range(seeds):
                torch.manual_seed(seed)
                model = build().eval()
                x = data(torch.Generator().manual_seed(100 + seed))
                start = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        _init(scheme, model, data(torch.Generator().manual_seed(200 + seed)), seed)
                except Exception as err:  # a scheme that cannot read the model: its error is the row
                    error = f"{type(err).__name__}: {str(err)[:100]}"
                    break
                seconds.append(time.perf_counter() - start)
                with torch.no_grad():
                    squares.append(float(model(x).double().square().mean()))
                    train.append(float(model.train()(x).double().square().mean()))
            out.append(
                {
                    "model": label,
                    "scheme": scheme,
                    "error": error,
                    "squares": squares,
                    "train": train,
                    "seconds": seconds,
                }
            )
    return out


def main() -> int:
    print("| model | scheme | output mean square, eval (median) | range | train mode (median) | init s |")
    print("|---|---|---|---|---|---|")
    for r in rows():
        if r["error"]:
            print(f"| {r['model']} | {r['scheme']} | fails: {r['error']} | | | |")
            continue
        sq, s = r["squares"], r["seconds"]
        print(
            f"| {r['model']} | {r['scheme']} | {statistics.median(sq):.3g} | {min(sq):.3g} – {max(sq):.3g} | "
            f"{statistics.median(r['train']):.3g} | {statistics.median(s):.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
