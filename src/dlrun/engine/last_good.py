"""The last finite epoch's state, kept in memory so that a diverging run can still write it.

Checkpoints go to disk every ``trainer.checkpoint_every`` epochs; when a loss turns NaN between
two of them, the epoch before it is what belongs in last.pt. Keeping it costs one device copy of
the weights and the optimizer's state per epoch: no host sync, no allocation once the optimizer
has made its state.
"""

from __future__ import annotations

import torch
from torch import nn

from dlrun import compat


class LastGood:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
    ) -> None:
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.epoch: int | None = None  # the epoch held; None: nothing newer than last.pt
        self._model = [t.detach() for t in (*model.parameters(), *model.buffers())]
        self._model_saved: list[torch.Tensor] = []
        self._optim: list[torch.Tensor] = []
        self._optim_saved: list[torch.Tensor] = []
        self._optim_size = -1
        self._rng: tuple[torch.Tensor, torch.Tensor] | None = None

    def _optimizer_tensors(self) -> list[torch.Tensor]:
        """The optimizer's state tensors, gathered again only when it made new ones."""
        if self.optimizer is None:
            return []
        size = sum(len(s) for s in self.optimizer.state.values())
        if size != self._optim_size:
            self._optim_size = size
            self._optim = [
                v.detach()
                for state in self.optimizer.state.values()
                for v in state.values()
                if isinstance(v, torch.Tensor)
            ]
            self._optim_saved = []
        return self._optim

    def keep(self, epoch: int) -> None:
        optim = self._optimizer_tensors()
        for live, saved in ((self._model, self._model_saved), (optim, self._optim_saved)):
            if saved:
                compat.foreach_copy_(saved, live)
            else:
                saved.extend(t.clone() for t in live)
        self._rng = (self.generator.get_state(), torch.get_rng_state())
        self.epoch = epoch

    def restore(self) -> int | None:
        """Put the kept state back into the model, optimizer and RNGs; returns its epoch."""
        if self.epoch is None or self._rng is None:
            return None
        kept = self._optim_saved
        optim = self._optimizer_tensors()
        with torch.no_grad():
            if self._model_saved:
                compat.foreach_copy_(self._model, self._model_saved)
            if self.optimizer is not None and not kept:
                self.optimizer.state.clear()  # kept before the optimizer's first step
                self._optim_size = -1
            elif optim and self._optim_saved is kept:
                compat.foreach_copy_(optim, kept)
            else:  # cannot happen with torch's optimizers: their state is made once
                return None
        self.generator.set_state(self._rng[0])
        torch.set_rng_state(self._rng[1])
        return self.epoch
