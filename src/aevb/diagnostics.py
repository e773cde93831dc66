"""Signs that a training run has gone wrong, checked after every epoch and said loudly.

`problems(record, skipped_before, uniform_bpd)` reads one epoch's record (the trainer's
history line: "train_elbo", "test_kl", "test_bpd", cumulative "skipped_steps") and returns
one sentence per problem, each naming what it sees and what to do:

- skipped steps: steps of this epoch with a non-finite loss or gradient;
- worse than uniform: bits/dim of the ELBO (test split, else train) above twice
  `uniform_bpd` (8 for 8-bit images: the cost of coding every value uniformly), or above it
  from epoch 3 on: the model is worse than knowing nothing, e.g. an exploding Gaussian
  variance (issue 16: ELBO -1.2e10 in epoch 1);
- posterior collapse: from epoch 3 on, a test KL below `COLLAPSED_KL` nats per example
  (a few epochs of a tiny test model may legitimately sit there): the decoder ignores z
  and every reconstruction is the same image.
The trainer issues each as a `DivergenceWarning`.
"""
from __future__ import annotations

import math

#: mean KL(q(z|x) || p(z)) below this (nats per example) after an epoch: a collapsed posterior
#: (z then carries under 1 bit about an image; a CIFAR VAE with lr 2e-3 fell to 0.12 in epoch 1)
COLLAPSED_KL = 0.5


class DivergenceWarning(UserWarning):
    """Training has diverged or collapsed; the message says how it shows and what to try."""


def problems(record: dict, skipped_before: int = 0, uniform_bpd: float | None = 8.0,
             steps: int | None = None) -> list[str]:
    """The problems an epoch's record shows, as sentences (empty if none); see the module.
    Skipped steps are told when they are at most half of the epoch's `steps`: a run that
    skips more fails outright (`aevb train` exits 1 with its own one-line error)."""
    out, epoch = [], record.get("epoch", "?")
    skipped = record.get("skipped_steps", 0) - skipped_before
    if skipped > 0 and (steps is None or skipped <= steps / 2):
        out.append(f"epoch {epoch}: {skipped} training steps had a non-finite loss or gradient and "
                   f"were skipped: training is unstable; lower lr or set clip_grad (e.g. 100)")
    bpd = record.get("test_bpd", record.get("train_bpd"))  # the test split's if evaluated
    late = isinstance(epoch, int) and epoch >= 3  # the first epochs' mean includes the start
    if uniform_bpd is not None and isinstance(bpd, float) and not (
            bpd <= 2 * uniform_bpd and (bpd <= uniform_bpd or not late)):
        out.append(f"epoch {epoch}: bits/dim {bpd:.4g} is worse than a uniform guess "
                   f"({uniform_bpd:g}): the model has diverged or is not learning; use likelihood "
                   f"logistic (the default for colour images), lower lr, or set clip_grad")
    kl = record.get("test_kl")
    if late and isinstance(kl, float) and math.isfinite(kl) and kl < COLLAPSED_KL:
        out.append(f"epoch {epoch}: test KL {kl:.3g} nats per image: the posterior has collapsed "
                   f"(the decoder ignores z, reconstructions are all alike); use likelihood "
                   f"logistic, a lower lr, a KL warm-up (warmup_epochs) or a lower beta")
    return out
