"""The optimizers and numeric precisions training can use (config keys `optimizer`,
`precision`), kept apart from the loop so that the config can check a name without
importing training."""
from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
              "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Adam / AdamW use the fused kernel (one pass over the parameters per step; measured
    faster on CPU, benchmarks/README.md) through `LeanAdam`, the others the multi-tensor
    (foreach) one."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    if name == "adam":
        return LeanAdam(params, lr=lr)
    if name == "adamw":  # torch.optim.AdamW's defaults
        return LeanAdam(params, lr=lr, decoupled=True, weight_decay=1e-2)
    return OPTIMIZERS[name](params, lr=lr, foreach=True)


def _undecorated(method):
    """torch's own implementation of an optimizer method without its torch._dynamo wrapper
    (`torch._disable_dynamo`, `_use_grad_for_differentiable`), which imports torch._dynamo on
    its first call: ~1 s before the first training step of every process (benchmarks/
    README.md). The wrapper only matters where torch.compile traces the optimizer, and aevb
    never compiles its optimizer step."""
    return getattr(method, "__wrapped__", method)


class LeanAdam(torch.optim.Adam):
    """torch.optim.Adam(fused=True) whose step skips the Python around the fused kernel.

    The plain path, `torch.optim.Adam.step`, re-collects the parameters' state, groups the
    tensors by device and dtype and checks its options on every call: ~150-250 us per step
    for the 12 tensors of the MLP VAE on CPU, against a ~600 us kernel. Once every
    parameter has its state (after the first, plain, step), and while the optimizer's
    options stay those the fused kernel takes as they are, this step makes the same two
    calls Adam makes: `_foreach_add_(steps, 1)` and `torch._fused_adam_` (or
    `_fused_adamw_`) on tensor lists kept from the last step. Anything else (a closure,
    grad scaling, a parameter without a gradient, amsgrad, several devices or dtypes, a
    changed state) takes the plain path. The state and checkpoints are torch's own; a test
    checks that both paths give the same parameters bit for bit. The methods torch wraps
    for torch.compile are called unwrapped (`_undecorated`): training with LeanAdam does
    not import torch._dynamo."""

    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    zero_grad = _undecorated(torch.optim.Optimizer.zero_grad)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)

    def __init__(self, params, lr: float = 1e-3, decoupled: bool = False, **kw):
        super().__init__(params, lr=lr, fused=True, decoupled_weight_decay=decoupled, **kw)
        self._lists = None

    def _lean_lists(self):
        """(group, params, exp_avgs, exp_avg_sqs, steps) when the lean step applies, else None."""
        if len(self.param_groups) != 1:
            return None
        g = self.param_groups[0]
        if g["amsgrad"] or g["capturable"] or g["differentiable"] or g["maximize"] or torch.is_tensor(g["lr"]):
            return None
        params = g["params"]
        states = [self.state.get(p) for p in params]
        if not all(s and "exp_avg" in s for s in states):
            return None
        if len({(p.device, p.dtype) for p in params}) != 1:
            return None
        return (g, params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states])

    @torch.no_grad()
    def step(self, closure=None, **kw):
        if closure is not None or kw:
            return super().step(closure, **kw)
        if self._lists is None or self._lists[1] is not self.param_groups[0]["params"]:
            self._lists = self._lean_lists()
        grads = None if self._lists is None else [p.grad for p in self._lists[1]]
        if grads is None or any(gr is None for gr in grads):
            self._lists = None
            return _undecorated(torch.optim.Adam.step)(self)
        g, params, exp_avgs, exp_avg_sqs, steps = self._lists
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if g["decoupled_weight_decay"] else torch._fused_adam_
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=g["lr"],
               beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"],
               eps=g["eps"], maximize=False)
        return None

    def load_state_dict(self, state_dict):
        self._lists = None
        _undecorated(torch.optim.Optimizer.load_state_dict)(self, state_dict)
