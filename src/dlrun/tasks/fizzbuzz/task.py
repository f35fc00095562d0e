"""FizzBuzz (tutorial 001): an MLP learns the game from the binary digits of 101..1023, then plays
1..100, numbers it never saw.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlrun import plots
from dlrun.tasks.base import Task, classification_metrics
from dlrun.tasks.fizzbuzz import FizzBuzzConfig

WORDS = ("{}", "fizz", "buzz", "fizzbuzz")


def binary(numbers: torch.Tensor, digits: int) -> torch.Tensor:
    """Each number as its `digits` binary digits, least significant first (the tutorial's order)."""
    return ((numbers[:, None] >> torch.arange(digits, device=numbers.device)) & 1).float()


def classes(numbers: torch.Tensor) -> torch.Tensor:
    """0: the number, 1: fizz, 2: buzz, 3: fizzbuzz."""
    fizz = (numbers % 3 == 0).long()
    buzz = (numbers % 5 == 0).long()
    return fizz + 2 * buzz


def say(number: int, cls: int) -> str:
    return WORDS[cls].format(number)


class FizzBuzz(Task):
    objective = "accuracy"
    maximize = True
    criterion = "cross_entropy"

    cfg: FizzBuzzConfig

    def __init__(self, cfg: FizzBuzzConfig, data: Any, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        train = torch.arange(cfg.train_from, 2**cfg.num_digits, device=device)
        self.train_data = (self.encode(train), classes(train))
        self.numbers = torch.arange(1, cfg.play_to + 1, device=device)
        self.play_x = self.encode(self.numbers)
        self.play_y = classes(self.numbers)

    def encode(self, numbers: torch.Tensor) -> torch.Tensor:
        bits = binary(numbers, self.cfg.num_digits)
        return 2 * bits - 1 if self.cfg.encoding == "signed" else bits

    def build_model(self) -> nn.Module:
        model = nn.Sequential(
            nn.Linear(self.cfg.num_digits, self.cfg.hidden),
            nn.ReLU(),
            nn.Linear(self.cfg.hidden, 4),
        )
        return self.for_impl(model)

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        return dict(classification_metrics(model(self.play_x), self.play_y))

    def report(self, model: nn.Module) -> str:
        predicted = model(self.play_x).argmax(1).tolist()
        truth = self.play_y.tolist()
        said = [
            say(n, c) + ("" if c == t else "(x)")
            for n, c, t in zip(self.numbers.tolist(), predicted, truth, strict=True)
        ]
        correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
        return (
            f"played 1..{self.cfg.play_to}: {correct}/{len(truth)} correct "
            f"((x) marks a mistake)\n" + " ".join(said)
        )

    def figures(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        predicted = model(self.play_x).argmax(1).cpu().numpy()
        truth = self.play_y.cpu().numpy()
        numbers = self.numbers.cpu().numpy()
        fig, ax = plots.figure(width=10, height=3.2)
        ax.scatter(numbers, truth, s=60, facecolors="none", edgecolors="tab:gray", label="true")
        wrong = predicted != truth
        ax.scatter(numbers[~wrong], predicted[~wrong], s=14, color="tab:green", label="predicted")
        ax.scatter(
            numbers[wrong],
            predicted[wrong],
            s=30,
            color="tab:red",
            marker="x",
            label="predicted (wrong)",
        )
        ax.set_yticks(range(4), ["number", "fizz", "buzz", "fizzbuzz"])
        ax.set(xlabel="n", title=f"FizzBuzz 1..{len(numbers)}: {int((~wrong).sum())} correct")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return {"fizzbuzz": fig}
