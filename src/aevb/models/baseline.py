"""The baseline of the score-function (REINFORCE) estimator for binary latent codes."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ScoreBaseline(nn.Module):
    """A baseline b(x) for the score-function estimator (Mnih & Gregor 2014): a moving
    average c of the learning signal ("mean"), plus, for "learned", a small MLP regressing
    the signal's residual from x (trained by squared error; its loss is added to the
    model's, and its input is detached, so it never changes the encoder or decoder)."""

    def __init__(self, kind: str, in_features: int, hidden: int = 100, momentum: float = 0.9):
        super().__init__()
        self.kind, self.momentum = kind, momentum
        self.register_buffer("average", torch.zeros(()))
        self.register_buffer("updates", torch.zeros(()))
        self.net = None
        if kind == "learned":
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.net[-1].weight)  # starts as the plain moving average
            nn.init.zeros_(self.net[-1].bias)

    def constant(self) -> Tensor:
        """The bias-corrected moving average (0 before the first update)."""
        if self.updates == 0:
            return self.average
        return self.average / (1 - self.momentum ** self.updates)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(c, r(x)): the constant part and the learned part (None unless "learned")."""
        c = self.constant()
        if self.net is None:
            return c, None
        h = x.detach().flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], 1)
        return c, self.net(h).squeeze(1)

    @torch.no_grad()
    def update(self, signal: Tensor) -> None:
        self.average.mul_(self.momentum).add_((1 - self.momentum) * signal.mean())
        self.updates.add_(1)
