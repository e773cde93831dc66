"""The two-stochastic-layer model (HVAE) against math: its log-weights and importance-sampled
log p(x) on a linear-Gaussian two-layer model, where p(x) is Gaussian in closed form; the
ordering ELBO <= IWAE_K <= log p(x); training, save / load, the command line."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

import aevb
from aevb import HVAE, data, train
from aevb.cli import main
from aevb.evaluation import importance_sampling
from aevb.objectives import iwae_terms

# ----------------------------------------------------------------------------- linear-Gaussian
# z2 ~ N(0, I);  z1 | z2 ~ N(A z2 + a, diag(d1));  x | z1 ~ N(B z1 + b, s^2 I)
# => x ~ N(B a + b, B (A A^T + diag(d1)) B^T + s^2 I)


def linear_gaussian(d2: int, d1: int, p: int, seed: int = 0, inflate: float = 1.0):
    """An HVAE with linear nets holding the model above (float64), its encoder set to the
    exact posterior means and the marginal posterior variances times `inflate` (exact when
    d1 = d2 = 1 and inflate = 1); and the exact distribution of x."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    A, a, B, b = r(d1, d2), r(d1), r(p, d1), r(p)
    d1v, s = 0.3 + torch.rand(d1, generator=g, dtype=torch.float64), 0.5
    model = HVAE((1, 1, p), d2, inner_latent_dim=d1, hidden=[], inner_hidden=[], likelihood="gaussian",
                 sigma=s).double()
    s1 = A @ A.T + torch.diag(d1v)                                   # Cov z1
    lam = torch.linalg.inv(s1) + B.T @ B / s**2                      # precision of p(z1|x)
    cov1 = torch.linalg.inv(lam)
    lam2 = torch.eye(d2, dtype=torch.float64) + A.T @ torch.diag(1 / d1v) @ A  # precision of p(z2|z1)
    w2 = torch.linalg.inv(lam2) @ A.T @ torch.diag(1 / d1v)
    with torch.no_grad():
        _set(model.decoder.net[0], B, b)
        _set(model.inner_decoder[0], torch.cat([A, torch.zeros(d1, d2, dtype=torch.float64)]),
             torch.cat([a, d1v.log()]))
        _set(model.encoder.net[0], torch.cat([cov1 @ B.T / s**2, torch.zeros(d1, p, dtype=torch.float64)]),
             torch.cat([cov1 @ (torch.linalg.solve(s1, a) - B.T @ b / s**2), (inflate * cov1.diag()).log()]))
        _set(model.inner_encoder[0], torch.cat([w2, torch.zeros(d2, d1, dtype=torch.float64)]),
             torch.cat([-w2 @ a, (inflate * torch.linalg.inv(lam2).diag()).log()]))
    px = MultivariateNormal(B @ a + b, B @ s1 @ B.T + s**2 * torch.eye(p, dtype=torch.float64))
    return model.eval(), px


def _set(layer, weight, bias):
    assert layer.weight.shape == weight.shape and layer.bias.shape == bias.shape
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)


def test_log_weights_equal_log_px_when_q_is_the_exact_posterior():
    """With q(z1|x) q(z2|z1) = p(z1|x) p(z2|z1) = p(z1, z2|x) every weight is p(x): all five
    terms of log w must be right for this to hold."""
    model, px = linear_gaussian(1, 1, 3)
    x = px.sample((4,)).view(4, 1, 1, 3)
    lw = model.log_weight_terms(x, 50).total
    exact = px.log_prob(x.view(4, 3))
    assert torch.allclose(lw, exact[:, None].expand(4, 50), atol=1e-9)
    assert torch.allclose(model.log_likelihood(x, samples=3), exact, atol=1e-9)


def test_importance_sampled_log_px_converges_to_the_exact_value():
    """An approximate (diagonal, widened) posterior: the estimate rises towards log p(x) as K grows."""
    model, px = linear_gaussian(2, 3, 5, seed=1, inflate=1.5)
    x = px.sample((6,), ).view(6, 1, 1, 5)
    exact = px.log_prob(x.view(6, 5))
    err = {k: (importance_sampling(model, x, samples=k, seed=2)["log_px"] - exact).abs().max().item()
           for k in (1, 20000)}
    assert err[20000] < 0.01 < err[1], err


def test_elbo_below_iwae_below_log_px():
    model, px = linear_gaussian(2, 3, 5, seed=1, inflate=2.0)
    x = px.sample((1,)).view(1, 1, 1, 5).expand(4000, 1, 1, 5)
    exact = px.log_prob(x[0].view(5)).item()
    bound = {k: iwae_terms(model, x, k)["iwae"].mean().item() for k in (1, 5, 50)}
    assert bound[1] + 0.01 < bound[5] < bound[50] < exact + 0.002, (bound, exact)


def test_log_weights_in_chunks_equal_the_whole_and_the_decoder_sees_at_most_rows():
    torch.manual_seed(0)
    model = HVAE((1, 6, 6), 3, inner_latent_dim=4, hidden=[10], inner_hidden=[5], num_classes=3).eval()
    x, y = torch.rand(5, 1, 6, 6).bernoulli(), torch.arange(5) % 3
    torch.manual_seed(1)
    whole = model.log_weight_terms(x, 7, y)
    seen = []
    decode_x = model.decode_x
    model.decode_x = lambda z, yy: seen.append(z.shape[:-1].numel()) or decode_x(z, yy)
    torch.manual_seed(1)
    chunked = model.log_weight_terms(x, 7, y, rows=10)
    assert max(seen) <= 10 and len(seen) > 1
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-5)


def test_k5000_evaluation_goes_through_bounded_decoder_calls():
    """K = 5000 on the default (Burda) sizes: one example per batch, the decoder on at most
    `rows` samples per call, finite numbers."""
    torch.manual_seed(0)
    model = HVAE().eval()
    seen = []
    decode_x = model.decode_x
    model.decode_x = lambda z, yy: seen.append(z.shape[:-1].numel()) or decode_x(z, yy)
    x = torch.rand(2, 1, 28, 28).bernoulli()
    r = importance_sampling(model, x, samples=5000, rows=1000)
    assert max(seen) <= 1000 and len(seen) == 10 and torch.isfinite(r["log_px"]).all()
    assert (r["log_px"] >= r["elbo"]).all()


# ----------------------------------------------------------------------------- the interface
def test_the_interface_is_the_top_layer_through_the_means():
    torch.manual_seed(0)
    model = HVAE((1, 4, 4), 2, inner_latent_dim=3, hidden=[8], inner_hidden=[6]).eval()
    x = torch.rand(3, 1, 4, 4).bernoulli()
    q = model.encode(x)
    assert q.mean.shape == (3, 2) and torch.equal(model.embed(x), model.encode_top(model.encode_inner(x).mean).mean)
    z = torch.randn(2, 5, 2)
    p = model.decode(z)
    assert p.batch_shape == (2, 5) and torch.equal(p.mean, model.decode_x(model.decode_inner(z).mean).mean)
    assert model.sample(4).shape == model.sample(4, mean=False).shape == (4, 1, 4, 4)
    assert set(model.sample(50, mean=False).unique().tolist()) <= {0.0, 1.0}
    assert model.latent_layers == 2 and model.kl_method == "mc" and model.prior().sample((3,)).shape == (3, 2)
    t = model.objective(x, beta=0.5)
    assert torch.allclose(t["loss"], -(t["rec"] - 0.5 * t["kl"]).mean()) and "iwae" not in t
    t = HVAE((1, 4, 4), 2, inner_latent_dim=3, hidden=[8], objective="iwae", iwae_k=4).objective(x)
    assert t["iwae"].shape == (3,) and torch.allclose(t["loss"], -t["iwae"].mean())


def test_conv_nets_and_impossible_options():
    torch.manual_seed(0)
    model = HVAE((1, 8, 8), 2, inner_latent_dim=3, net="conv", hidden=[4], inner_hidden=[5])
    assert model.objective(torch.rand(2, 1, 8, 8).bernoulli())["elbo"].shape == (2,)
    for kw, msg in ((dict(latent_family="bernoulli"), "Gaussian latents only"),
                    (dict(prior="mog"), "prior standard_normal"), (dict(objective="x"), "objective must be"),
                    (dict(inner_latent_dim=0), "inner_latent_dim and inner_hidden sizes must be >= 1"), (dict(iwae_k=0), "iwae_k")):
        with pytest.raises(ValueError, match=msg):
            HVAE((1, 4, 4), 2, **kw)
    from aevb import imputation
    x = torch.rand(2, 1, 8, 8).bernoulli()
    with pytest.raises(ValueError, match="one stochastic layer"):
        imputation.impute(model, x, torch.zeros_like(x, dtype=torch.bool))


# ----------------------------------------------------------------------------- training
def test_training_reduces_the_loss_and_the_model_saves_and_loads(tmp_path):
    ds = data.load("digits", binarize="static", limit=500)
    torch.manual_seed(0)
    model = HVAE(ds.shape, 4, inner_latent_dim=8, hidden=[32], inner_hidden=[16], objective="iwae", iwae_k=3)
    x = ds.test.x[:200]
    before = model.log_likelihood(x, samples=20).mean().item()
    run = train(model, ds, epochs=6, batch_size=50, lr=3e-3, progress=False, tensorboard=False,
                out=tmp_path / "run")
    losses = [-m["train_iwae"] for m in run.history]  # the loss: -L_K
    after = model.log_likelihood(x, samples=20).mean().item()
    assert losses[-1] < losses[0] - 3 and after > before + 3, (losses, before, after)
    loaded = aevb.load(tmp_path / "run")
    assert type(loaded) is HVAE and loaded.config == model.config
    assert torch.allclose(loaded.log_likelihood(x[:5], samples=20), model.log_likelihood(x[:5], samples=20))
    model.save(tmp_path / "saved")
    assert torch.equal(aevb.load(tmp_path / "saved").embed(x[:5]), model.eval().embed(x[:5]))


def test_command_line_train_resume_and_eval(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["--model", "hvae", "--dataset", "digits", "--latent-dim", "3", "--inner-latent-dim", "6",
            "--hidden", "24", "--inner-hidden", "12", "--objective", "iwae", "--iwae-k", "2",
            "--no-progress", "--no-figures"]
    assert main(["train", *args, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress", "--no-figures"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    cfg = json.loads((out / "config.json").read_text())["model_config"]
    assert cfg["model"] == "hvae" and cfg["inner_latent_dim"] == 6 and cfg["inner_hidden"] == [12]
    capsys.readouterr()
    assert main(["eval", str(out), "--nll-samples", "50", "--limit", "40"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["log_px"] >= res["elbo_is"] and math.isfinite(res["log_px"]) and res["latent_dim"] == 3
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["impute", str(out), "-n", "4", "-o", str(tmp_path / "i.png")]) == 2
    assert "one stochastic layer" in capsys.readouterr().err
