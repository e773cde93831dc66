"""The training step with no host synchronization, replayed as one CUDA graph.

The eager step (`aevb.training.step`) reads the loss and the gradient norm on the host after
every step (`.item()`) to skip a non-finite step, and launches every kernel of the forward
pass, the backward pass and Adam from Python. On a GPU, a small VAE's step is mostly those
launches and the waits of the two reads. `GraphedStep` runs the same step without either:

- the check stays on the device: a non-finite loss or gradient norm gives `bad` = 1, which
  the fused Adam kernel takes as its `found_inf` (it then leaves parameters and moments
  alone, as under a GradScaler); the step counters are put back, the epoch's sums leave the
  step out, device counters count skipped and consecutive-skipped steps, and every 10th
  skip in a row halves the learning rate on the device (a factor on it), as the eager loop's
  divergence guard does. The host reads the counters (one synchronization, `flush`) every
  `SYNC_EVERY` steps and at the end of an epoch; the loop then moves the halvings into the
  optimizer's lr and stops training past `max_skips`;
- the learning rate and the KL weight are device tensors, refilled before each step;
- after `WARMUP_STEPS` eager steps on a side stream, the whole step (forward, backward,
  gradient norm, clipping, Adam, the epoch sums) is captured as one CUDA graph
  (`torch.cuda.graph`) and replayed for every later batch of the same shape: one launch per
  step. The batch is copied into the graph's input tensors first; random numbers come from
  the default CUDA generator, which graph replay advances.

The plain computation is the eager step; tests/test_graphed.py checks that this body, run
eagerly (`capture=False`, what AEVB_GRAPH=eager selects on any device), gives the same
parameters, sums and skip counts as the eager loop, and tests/test_cuda.py that the captured
graph gives what the uncaptured body gives (on a GPU). Training uses it on CUDA for fp32 and
bf16 steps with Adam or AdamW outside torchrun and `compile`, where AEVB_GRAPH=1 asks for it:
it is opt-in until benchmarks/gpu.sh has run on a GPU (no session has had one so far).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings

import torch
from torch import Tensor, nn

#: eager steps of the body before it is captured (run on a side stream, as PyTorch's
#: whole-network capture example does: lazy initializations must not happen in capture)
WARMUP_STEPS = 3
#: the host reads the device's counters every this many steps (and at the end of an epoch)
SYNC_EVERY = 100


def mode(device: torch.device) -> str | None:
    """How training steps on `device` run: "graph" (AEVB_GRAPH=1, on CUDA), "eager"
    (AEVB_GRAPH=eager, any device: the same step uncaptured), or None (the eager loop:
    AEVB_GRAPH unset or 0, or 1 off CUDA)."""
    value = os.environ.get("AEVB_GRAPH", "0").strip().lower()
    if value == "eager":
        return "eager"
    return "graph" if value == "1" and device.type == "cuda" else None


class GraphedStep:
    """`step(x, y, target, beta)`: one training step of `net` (the model's forward returning
    {"loss", per-example terms}) or of `fused` (a model's `fused_step`, which writes the
    gradients itself), then `opt` (a `aevb.optim.LeanAdam`) — see the module docstring.
    `fits(x, y, target, beta)` says whether a batch can take it: the optimizer must have its
    state (one eager step first) and, once the inputs are allocated, the batch its shape
    (the epoch's last, smaller batch takes the eager step). `grad_norm` is training's
    `_GradNorm`; `clip` the clipping norm or None; `autocast` a context for the forward."""

    def __init__(self, net: nn.Module, opt, grad_norm, *, fused=None, clip: float | None = None,
                 autocast=None, capture: bool = True):
        self.net, self.opt, self.grad_norm, self.fused, self.clip = net, opt, grad_norm, fused, clip
        self.autocast = autocast or contextlib.nullcontext()
        self.capture, self.graph, self.calls, self.lists, self.failed = capture, None, 0, None, None
        self.kept: list | None = None  # after capture: the graph's gradient tensors, kept referenced
        self.inputs: dict[str, Tensor] | None = None
        self.keys: tuple | None = None
        device = opt.param_groups[0]["params"][0].device
        self.lr, self.total = torch.zeros((), device=device), None
        self.count, self.skipped, self.consecutive = (torch.zeros((), device=device) for _ in range(3))
        self.lr_factor = torch.ones((), device=device)  # 1/2 per 10 skips in a row since the last flush

    def fits(self, x: Tensor, y: Tensor | None, target: Tensor | None, beta) -> bool:
        if self.failed:
            return False
        if self.lists is None:
            self.lists = self.opt._lean_lists()
            if self.lists is None:
                return False
        given = {"x": x, "y": y, "target": target, "beta": beta}
        return self.inputs is None or all(
            (v is None) == (k not in self.inputs) and (v is None or k == "beta" or v.shape == self.inputs[k].shape)
            for k, v in given.items())

    def __call__(self, x: Tensor, y: Tensor | None, target: Tensor | None, beta) -> bool:
        """The step on this batch; False (nothing done) where the capture failed: the loop
        then takes the eager step, for this batch and every later one."""
        given = {k: v for k, v in (("x", x), ("y", y), ("target", target)) if v is not None}
        if self.inputs is None:
            self.inputs = {k: torch.empty_like(v) for k, v in given.items()}
            if beta is not None:
                self.inputs["beta"] = torch.zeros((), device=x.device)
        for k, v in given.items():
            self.inputs[k].copy_(v)
        if beta is not None:
            self.inputs["beta"].fill_(beta)
        self.lr.fill_(self.lists[0]["lr"])
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture:
            self.body()
        elif self.calls < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.body()
            torch.cuda.current_stream().wait_stream(side)
        elif not self._capture():
            return False
        self.calls += 1
        return True

    def _capture(self) -> bool:
        """Record the body as a CUDA graph and replay it once (for the batch at hand). A model
        whose step reads a value back or does what capture forbids fails here: a warning,
        and the eager step from then on."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # records the kernels without running them
                self.body()
        except RuntimeError as e:
            self.failed = str(e).splitlines()[0]
            self.grad_norm.clear()
            warnings.warn(f"this model's training step could not be captured as a CUDA graph ({self.failed}); "
                          "training goes on with the eager step (AEVB_GRAPH=0 skips the attempt)")
            return False
        self.graph = graph
        self.kept = [p.grad for p in self.lists[1]]
        graph.replay()
        return True

    def body(self) -> None:
        """The step on the input tensors, every decision on the device."""
        s = self.inputs
        kw = {k: s[k] for k in ("target", "beta") if k in s}
        if self.fused is not None:
            terms = self.fused(s["x"], **kw, on_grad=self.grad_norm.record if self.grad_norm.early else None)
        else:
            self.opt.zero_grad(set_to_none=True)  # in capture, backward's gradients come from the graph's pool
            with self.autocast:
                terms = self.net(s["x"], s.get("y"), **kw)
            terms["loss"].backward()
        loss = terms.pop("loss")
        norm = self.grad_norm()
        bad = torch.logical_not(torch.isfinite(loss) & torch.isfinite(norm)).float()
        if self.clip:
            nn.utils.clip_grads_with_norm_(self.lists[1], self.clip, norm)
        self.adam(bad)
        values = torch.stack([v.detach().float() for v in terms.values()]).sum(1)  # as training._Sums.add
        if self.keys is None:
            self.keys, self.total = tuple(terms), torch.zeros_like(values)
        self.total.add_(torch.where(bad > 0, 0.0, values))
        self.count.add_((1 - bad) * s["x"].shape[0])
        self.skipped.add_(bad)
        self.consecutive.add_(1).mul_(bad)  # (c + 1) after a skipped step, 0 after a taken one
        self.lr_factor.mul_(1 - 0.5 * bad * (self.consecutive % 10 == 0))

    def adam(self, bad: Tensor) -> None:
        """What `LeanAdam.step` does, with the learning rate as a tensor and `bad` as the
        kernel's found_inf (as torch.optim.Adam does under a GradScaler)."""
        g, params, exp_avgs, exp_avg_sqs, steps = self.lists
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if g["decoupled_weight_decay"] else torch._fused_adam_
        kernel(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=self.lr * self.lr_factor,
               beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"], eps=g["eps"],
               maximize=False, grad_scale=None, found_inf=bad)
        torch._foreach_sub_(steps, [bad] * len(steps))

    def due(self) -> bool:
        """Whether the host should read the counters now (every `SYNC_EVERY` steps)."""
        return self.calls % SYNC_EVERY == 0

    def flush(self) -> dict | None:
        """The counters since the last flush, read with one synchronization: {"sums": {term:
        sum over the taken steps' examples}, "n": examples, "skipped": skipped steps,
        "consecutive": skipped steps in a row at the end, "halvings": of the lr on the device},
        and the sums, counts and lr factor restart.
        None before the first step."""
        if self.keys is None:
            return None
        values = torch.cat([self.total, torch.stack([self.count, self.skipped, self.consecutive,
                                                     self.lr_factor])]).tolist()
        for t in (self.total, self.count, self.skipped):
            t.zero_()
        self.lr_factor.fill_(1.0)
        *sums, n, skipped, consecutive, factor = values
        return {"sums": dict(zip(self.keys, sums)), "n": int(n), "skipped": int(skipped),
                "consecutive": int(consecutive), "halvings": round(-math.log2(factor))}
