"""The training step's fast paths against the plain computation: LeanAdam's short step against
torch.optim.Adam / AdamW (fused), bit for bit; the stacked epoch sums against plain sums."""
import copy
import subprocess
import sys

import pytest
import torch

from aevb import config as config_mod
from aevb import data
from aevb.optim import LeanAdam, make_optimizer
from aevb.runs import _size_bound, build_model


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in [(7, 5), (7,), (3, 7), (3,)]]


def _grads(step, params):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_lean_step_equals_torch_adam(name):
    a, b = _params(), _params()
    plain = (torch.optim.Adam(a, lr=1e-2, fused=True) if name == "adam"
             else torch.optim.AdamW(a, lr=1e-2, fused=True))
    lean = make_optimizer(name, b, lr=1e-2)
    assert isinstance(lean, LeanAdam)
    for t in range(6):
        if t == 3:  # the divergence guard halves the learning rate in place
            for opt in (plain, lean):
                opt.param_groups[0]["lr"] *= 0.5
        for params in (a, b):
            for p, g in zip(params, _grads(t, params)):
                p.grad = g
        plain.step()
        lean.step()
    assert lean._lists is not None  # the short path ran
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    sa, sb = plain.state_dict(), lean.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][k][key], sb["state"][k][key])


def test_reload_and_missing_gradient_take_the_plain_path():
    a, b = _params(), _params()
    plain, lean = torch.optim.Adam(a, lr=1e-2, fused=True), LeanAdam(b, lr=1e-2)
    for t in range(2):
        for params in (a, b):
            for p, g in zip(params, _grads(t, params)):
                p.grad = g
        plain.step(), lean.step()
    lean.load_state_dict(copy.deepcopy(plain.state_dict()))  # a resumed run: new state tensors
    for t in range(2, 4):
        for params in (a, b):
            for i, (p, g) in enumerate(zip(params, _grads(t, params))):
                p.grad = None if (t == 3 and i == 1) else g  # a parameter without a gradient
        plain.step(), lean.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_stacked_epoch_sums_equal_the_plain_sums():
    from aevb.training import _Sums
    g = torch.Generator().manual_seed(0)
    batches = [{k: torch.randn(n, generator=g, dtype=torch.float64) for k in ("elbo", "rec", "kl")}
               for n in (5, 3, 7)]
    batches.append({"elbo": torch.randn(4, generator=g, dtype=torch.float64)})  # fewer terms
    sums = _Sums({}, torch.device("cpu"))
    plain, count = {}, 0
    for i, terms in enumerate(batches):
        if i == 2:  # a resumed epoch starts from the checkpoint's dict
            sums = _Sums(sums.as_dict(), torch.device("cpu"))
        sums.add(terms, len(next(iter(terms.values()))))
        for k, v in terms.items():
            plain[k] = plain.get(k, 0.0) + v.sum().item()
        count += len(next(iter(terms.values())))
    got = sums.as_dict()
    assert got.pop("n") == count == 19
    assert got.keys() == plain.keys()
    for k in plain:
        assert got[k] == pytest.approx(plain[k], rel=1e-6)


def test_compiled_step_equals_the_eager_step():
    """`compile=True` (torch.compile of the step) against the eager step: with inductor's
    `fallback_random` (eager random numbers) the same losses and weights, up to float
    rounding, through a KL warm-up (beta changes every step: no recompiles) and a last
    batch of another size."""
    from torch._dynamo.utils import counters

    from aevb import VAE, data, train
    ds = data.load("digits", binarize="dynamic", limit=250)  # 250 train images: 3 batches
    runs = []
    for compiled in (False, True):
        torch.manual_seed(1)
        model = VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        with torch._inductor.config.patch(fallback_random=True):
            counters.clear()
            runs.append(train(model, ds, epochs=2, batch_size=100, seed=3, warmup_epochs=1,
                              progress=False, tensorboard=False, compile=compiled))
    eager, comp = runs
    assert counters["stats"]["unique_graphs"] <= 3  # batch 100, batch 50, backward: not one per step
    for a, b in zip(eager.history, comp.history):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-4)
    for p, q in zip(eager.model.parameters(), comp.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_training_does_not_import_torch_dynamo(tmp_path):
    """torch's optimizers import torch._dynamo (~1 s) on the first call of their wrapped
    methods; LeanAdam calls them unwrapped. A fresh process trains, checkpoints, resumes and
    evaluates without importing it."""
    code = f"""
import sys
from aevb import VAE, data, train
ds = data.load("digits", binarize="dynamic", limit=200)
for epochs, resume in ((1, False), (2, True)):
    train(VAE.mlp(ds.shape, latent_dim=2, hidden=(8,)), ds, epochs=epochs, out={str(tmp_path / 'r')!r},
          resume=resume, progress=False, tensorboard=False)
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("settings", [
    dict(model="vae", net="mlp", hidden=[400, 400]), dict(model="vae", net="conv", hidden=[32, 64]),
    dict(model="vae", net="resconv", hidden=[16, 32]), dict(model="vae", prior="vamp", prior_components=50),
    dict(model="vae", prior="mog", prior_components=50), dict(model="vae", posterior="iaf", flow_steps=3),
    dict(model="hvae", hidden=[200, 200]), dict(model="autoencoder", net="conv", hidden=[32, 64]),
    dict(model="vae", conditional=True, activation="gated")])
def test_the_size_bound_that_spares_the_meta_build_is_above_the_real_count(settings):
    """runs._size_bound decides when a model surely fits in memory without building it on the
    meta device: it must never be below the real parameter count."""
    ds = data.load("digits", binarize="static", limit=100) if settings.get("net") != "resconv" else \
        data.Dataset("grey", data.Split(torch.rand(10, 3, 32, 32)), data.Split(torch.rand(4, 3, 32, 32)))
    cfg = config_mod.make_config(None, dataset="digits", latent_dim=6, **settings)
    model = build_model(cfg, ds)
    kw = dict(input_shape=ds.shape, num_classes=ds.num_classes if cfg.conditional else 0,
              **{k: getattr(cfg, k) for k in type(model).settings})
    n = sum(p.numel() for p in model.parameters())
    assert n <= _size_bound(kw), (n, _size_bound(kw))
