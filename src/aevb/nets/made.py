"""MADE (Germain et al. 2015): a network whose outputs for unit i of z depend only on the
units before i in a given order, by masking the weights; with a context vector h added to
its first hidden layer (Kingma et al. 2016), the autoregressive network of one IAF step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedLinear(nn.Linear):
    """y = x (W * mask)^T + b: nn.Linear with the connections `mask` (out, in) forbids cut."""

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def degrees(order: Tensor, hidden) -> list[Tensor]:
    """MADE's degrees: input unit `order[r]` gets degree r + 1 (1..D); hidden unit k of a
    layer gets k mod D (0..D-1), so that degree-0 units see the context only and feed the
    outputs of the first unit in the order."""
    d = order.numel()
    first = torch.empty_like(order)
    first[order] = torch.arange(1, d + 1, device=order.device)
    return [first] + [torch.arange(n, device=order.device) % d for n in hidden]


class MADE(nn.Module):
    """(z (..., D), context (N, C) broadcasting with z's leading shape) -> (m, s), each
    (..., D), where m_i and s_i depend on z only through the units before i in `order`
    (and on the context). Hidden layers `hidden` with ELU between them; the context enters
    the first hidden layer through an unmasked linear map (0 context units: none).

    The output layer starts at zero weights, m's bias 0 and s's bias `s_bias`: at
    initialization m = 0 and s = s_bias whatever z and h are."""

    def __init__(self, order: Tensor, hidden=(128, 128), context_dim: int = 0, s_bias: float = 0.0):
        super().__init__()
        d, hidden = order.numel(), [int(h) for h in hidden]
        deg = degrees(order, hidden)
        layers = [MaskedLinear((deg[i + 1][:, None] >= deg[i][None, :]).float()) for i in range(len(hidden))]
        self.hidden = nn.ModuleList(layers)
        out_mask = (deg[0][:, None] > deg[-1][None, :]).float()
        self.out = MaskedLinear(torch.cat([out_mask, out_mask]))  # rows: m (D), then s (D)
        self.context = nn.Linear(context_dim, hidden[0], bias=False) if context_dim else None
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.copy_(torch.cat([torch.zeros(d), torch.full((d,), float(s_bias))]))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.hidden[0](z)
        if self.context is not None and context is not None:
            a = a + self.context(context)
        for layer in self.hidden[1:]:
            a = layer(F.elu(a))
        return self.out(F.elu(a)).chunk(2, dim=-1)
