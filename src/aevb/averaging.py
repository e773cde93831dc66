"""Weight averaging: an exponential moving average of a model's parameters over the training
steps (Polyak averaging; Kingma & Ba 2015, section 7.2, "temporal averaging"), evaluated and
kept in place of the last weights (`train(ema=decay)`, config key `ema`).

After global step t (0-based), with the decay warming up so that the average follows the
model closely at first and does not remember its initialization:

    avg_t = d_t avg_{t-1} + (1 - d_t) w_t,    d_t = min(decay, (1 + t) / (10 + t)),
    avg_{-1} = w_{-1}, the weights before the first step.

Adam's steps at a constant learning rate keep the weights jittering around the region they
have reached; their average lies nearer its centre. On the offline MNIST split (784-400-400-20
VAE, Adam 1e-3, batch 100, 150 s) the averaged weights (decay 0.999) scored 1.35 nats of
log p(x) (2.4 of ELBO) better on held-out images than the best epoch of the raw ones
(benchmarks/README.md, issue 15's section).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .serialization import CheckpointError


def check_decay(decay) -> float:
    """`decay` as a float; a ValueError unless 0 < decay < 1."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        raise ValueError(f"ema must be a decay between 0 and 1 (e.g. 0.999) or None, got {decay!r}")
    return float(decay)


class WeightAverage:
    """The moving average of `model`'s parameters with decay `decay` (0 < decay < 1)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = check_decay(decay)
        self.names, params = zip(*model.named_parameters())
        self.params = [p.detach() for p in params]  # views: they follow the in-place optimizer steps
        self.average = [p.clone() for p in self.params]

    def rate(self, t: int) -> float:
        """1 - d_t: the weight of step t's parameters in the average."""
        return 1.0 - min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, t: int) -> None:
        """Fold in the parameters after global step t: avg += rate(t) (w - avg), one foreach
        kernel (tests/test_training_averaging.py checks it against the formula above)."""
        torch._foreach_lerp_(self.average, self.params, self.rate(t))

    @contextlib.contextmanager
    def swapped(self):
        """Within the block the model holds the averaged weights; afterwards its own again."""
        own = [p.clone() for p in self.params]
        self.set_model(self.average)
        try:
            yield
        finally:
            self.set_model(own)

    @torch.no_grad()
    def set_model(self, values=None) -> None:
        """Copy `values` (default: the average) into the model's parameters."""
        torch._foreach_copy_(self.params, self.average if values is None else values)

    def state(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.average))

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor], where) -> None:
        """Take back `state()` from a checkpoint; a missing or misshapen tensor is refused."""
        for name, avg in zip(self.names, self.average):
            got = state.get(name)
            if got is None or got.shape != avg.shape:
                raise CheckpointError(f"{where}: damaged checkpoint (the weight average of {name!r} is missing "
                                      "or misshapen); restore a good copy or start again with --overwrite")
            avg.copy_(got)
