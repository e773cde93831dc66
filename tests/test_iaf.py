"""The inverse autoregressive flow posterior (posterior: iaf) against math: its log density
against the base density minus log |det J| with J computed by autograd; a flow that does
nothing (zero MADE outputs, gates open) equals the diagonal Gaussian exactly; the MADE is
autoregressive in the order of each step; the density by inversion agrees with the density
that comes with a sample; its importance-sampled log p(x) estimates the same p(x) as the
plain posterior's; and the model trains, saves, loads, runs from the command line, and
refuses impossible combinations with one line."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from aevb import VAE, data, train
from aevb.cli import main
from aevb.distributions import DiagonalNormal, IAFNormal, InverseAutoregressiveFlow, sample_with_log_prob
from aevb.distributions.iaf import FORMS, GatedStep
from aevb.evaluation import importance_sampling
from aevb.models import load
from aevb.models.base import load_state
from aevb.nets.made import MADE
from aevb.objectives import elbo, iwae_terms, log_weight_terms
from aevb.serialization import CheckpointError

SHAPE = (1, 8, 8)


def randomize(family: InverseAutoregressiveFlow, scale: float = 0.5, seed: int = 0):
    """Every weight of the flow random (the output layer starts at zero: a flow that does
    nothing would pass tests it should fail)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in family.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return family


def flow_posterior(d=3, steps=2, hidden=(6, 5), n=4, seed=0, context=True,
                   form="affine") -> tuple[InverseAutoregressiveFlow, IAFNormal]:
    torch.manual_seed(seed)
    fam = randomize(InverseAutoregressiveFlow(d, steps, hidden, context, form).double(), seed=seed)
    out = torch.randn(n, 2 * d + fam.context_dim, dtype=torch.float64)
    return fam, fam(out)


# ----------------------------------------------------------------------------- against math
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("steps,context", [(1, True), (2, True), (3, True), (2, False)])
def test_log_density_is_the_base_density_minus_the_log_determinant_of_the_autograd_jacobian(steps, context, form):
    fam, q = flow_posterior(d=4, steps=steps, context=context, form=form)
    torch.manual_seed(1)
    z, log_q = q.rsample_and_log_prob()
    # the same noise again: z_0 = mu + sigma eps, then the flow as a plain function of z_0
    torch.manual_seed(1)
    z0 = q.base.rsample()
    for i in range(z0.shape[0]):
        def f(v, i=i):
            return IAFNormal(DiagonalNormal(q.base.base_dist.loc[i], q.base.logvar[i]),
                             None if q.context is None else q.context[i], fam.steps, fam.form).flow(v)[0]
        J = jacobian(f, z0[i])
        assert torch.allclose(f(z0[i]), z[i], atol=1e-12)
        expected = q.base.log_prob(z0)[i] - torch.linalg.slogdet(J)[1]
        assert torch.allclose(log_q[i], expected, atol=1e-10), (log_q[i], expected)
        assert abs(torch.linalg.slogdet(J)[1]) > 1e-3  # the flow does change the density here


def test_the_made_is_autoregressive_in_its_order_and_sees_the_context():
    d, order = 5, torch.tensor([3, 0, 4, 1, 2])
    made = MADE(order, hidden=(7, 6), context_dim=3).double()
    with torch.no_grad():
        for p in made.parameters():
            p.normal_()
    z, h = torch.randn(d, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    rank = torch.empty(d, dtype=torch.long)
    rank[order] = torch.arange(d)
    for k in range(2):  # m, then s
        J = jacobian(lambda v: made(v, h)[k], z)        # J[i, j] = d out_i / d z_j
        P = J[order][:, order]                          # rows and columns in the order
        assert torch.equal(P.triu(), torch.zeros_like(P))  # strictly lower triangular
        assert (P.tril(-1).abs() > 0).sum() == d * (d - 1) // 2  # and every allowed link is used
        Jh = jacobian(lambda c: made(z, c)[k], h)
        assert (Jh.abs().sum(1) > 0).all()  # every output, the first in the order included, sees h


def test_steps_reverse_the_order():
    fam = InverseAutoregressiveFlow(4, steps=3, hidden=(6,))
    randomize(fam.double())
    z, h = torch.randn(4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    firsts = []
    for step in fam.steps:
        J = jacobian(lambda v, step=step: step(v, h)[0], z)
        firsts.append(int((J.abs().sum(1) == 0).nonzero()))  # the output that sees no z
    assert firsts == [0, 3, 0]


def test_an_untrained_affine_flow_is_exactly_the_diagonal_gaussian():
    """At initialization every MADE gives m = 0 and s = 0: each affine step is the identity,
    so sample and density are the base Gaussian's, bit for bit."""
    d = 3
    fam = InverseAutoregressiveFlow(d, 2, (8, 8)).double()
    out = torch.randn(5, 2 * d, dtype=torch.float64)
    torch.manual_seed(3)
    z, log_q = fam(out).rsample_and_log_prob((7,))
    torch.manual_seed(3)
    base = DiagonalNormal(out[:, :d], out[:, d:])
    z_base = base.rsample((7,))
    assert torch.equal(z, z_base) and torch.equal(log_q, base.log_prob(z_base))
    assert torch.equal(fam(out).log_prob(z), base.log_prob(z))


def test_an_untrained_gated_flow_is_exactly_a_diagonal_gaussian():
    """At initialization every MADE gives m = 0 and s = GatedStep.start: z_T = c z_0 with
    c = sigmoid(start)^T, so q = N(c mu, c^2 sigma^2) exactly; with the gates open
    (s -> infinity: sigmoid(s) = 1 in floating point) q is the base Gaussian itself."""
    d, steps = 3, 2
    fam = InverseAutoregressiveFlow(d, steps, (8, 8), form="gated").double()
    out = torch.randn(5, 2 * d + fam.context_dim, dtype=torch.float64)
    q = fam(out)
    mu, logvar = out[:, :d], out[:, d:2 * d]
    c = torch.sigmoid(torch.tensor(GatedStep.start, dtype=torch.float64)) ** steps
    scaled = DiagonalNormal(c * mu, logvar + 2 * c.log())
    z, log_q = q.rsample_and_log_prob((7,))
    assert torch.allclose(log_q, scaled.log_prob(z), atol=1e-12)
    assert torch.allclose(q.log_prob(z), scaled.log_prob(z), atol=1e-12)
    with torch.no_grad():
        for step in fam.steps:
            step.out.bias[d:] = 1e4  # gates fully open: the flow is the identity
    torch.manual_seed(3)
    z, log_q = fam(out).rsample_and_log_prob((7,))
    torch.manual_seed(3)
    base = DiagonalNormal(mu, logvar)
    z_base = base.rsample((7,))
    assert torch.equal(z, z_base) and torch.equal(log_q, base.log_prob(z_base))


@pytest.mark.parametrize("form", FORMS)
def test_the_density_by_inversion_equals_the_density_of_the_sample(form):
    _, q = flow_posterior(d=5, steps=3, n=6, form=form)
    z, log_q = q.rsample_and_log_prob((4,))
    assert torch.allclose(q.log_prob(z), log_q, atol=1e-10)
    assert torch.allclose(q.invert(q.flow(q.base.base_dist.loc)[0]), q.base.base_dist.loc, atol=1e-10)
    # a point that is no sample: log q integrates to one (d = 1, by quadrature)
    fam = randomize(InverseAutoregressiveFlow(1, 2, (4,), form=form).double(), scale=1.0)
    q1 = fam(torch.randn(1, 2 + fam.context_dim, dtype=torch.float64))
    grid = torch.linspace(-30, 30, 60001, dtype=torch.float64)[:, None, None]
    assert abs(torch.trapezoid(q1.log_prob(grid)[:, 0].exp(), grid[:, 0, 0]).item() - 1) < 1e-6


def test_the_objectives_take_the_flows_density_through_one_path():
    """The plain sample's log density (evaluation: no gradient wanted) comes from the same
    pass as the sample; with gradients on, it is the inverted density (the score function's)."""
    _, q = flow_posterior()
    with torch.no_grad():
        z, log_q = sample_with_log_prob(q, (3,), reparameterized=False)
        assert torch.allclose(q.log_prob(z), log_q, atol=1e-10)
    z, log_q = sample_with_log_prob(q, (3,), reparameterized=False)
    assert not z.requires_grad and log_q.requires_grad
    assert torch.allclose(q.log_prob(z), log_q, atol=1e-10)


def model(**kw):
    torch.manual_seed(0)
    m = VAE(SHAPE, 2, hidden=[16], posterior="iaf", flow_hidden=[8, 8], **kw).double()
    randomize(m.latent, scale=0.3)
    return m


def test_kl_is_monte_carlo_even_when_analytic_is_asked_for():
    m = model(kl="analytic")
    assert m.kl_method == "mc" and m.config["kl"] == "analytic"
    x = torch.rand(6, *SHAPE, dtype=torch.float64).bernoulli()
    torch.manual_seed(2)
    t = elbo(m, x, kl=m.kl_method)
    torch.manual_seed(2)
    z, log_q = m.encode(x).rsample_and_log_prob()
    assert torch.allclose(t["kl"], log_q - m.prior().log_prob(z))
    assert torch.allclose(t["rec"], m.decode(z).log_prob(x))


def broad_model(form):
    """A 2-D flow model whose posterior is broad (small encoder and decoder weights, gates
    near open or affine steps that stretch, random MADEs with the encoder's context):
    importance sampling converges within a test's budget."""
    m = model(flow_context=True, flow_form=form)
    with torch.no_grad():
        m.encoder.net[-1].weight.mul_(0.2)
        for step in m.latent.steps:
            step.out.bias[2:] += {"gated": 2.0, "affine": 0.3}[form]
    return m


def exact_log_px(m, x, half_width=10.0, n=401):
    """log p(x) = log integral p(x|z) p(z) dz as a sum over a fine grid (2-D latent; the integrand is smooth and negligible past the edges)."""
    g = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = m.decode(z[:, None].expand(-1, len(x), 2)).log_prob(x) + m.prior().log_prob(z)[:, None]
    return torch.logsumexp(lp, 0) + 2 * math.log(g[1] - g[0])


@pytest.mark.parametrize("form", FORMS)
def test_importance_sampled_log_px_with_the_flows_density_converges_to_the_exact_value(form):
    """log p(x) by quadrature over a 2-D latent; the estimate with the flow as the proposal
    reaches it, while the same weights without the log-determinant (the base density used
    as log q) miss it: the test sees a wrong log q(z|x). And E[ELBO] <= E[L_5] <= log p(x)
    (Burda et al.)."""
    m = broad_model(form)
    x = torch.rand(3, *SHAPE, dtype=torch.float64).bernoulli()
    exact = exact_log_px(m, x)
    est = importance_sampling(m, x, samples=5000, seed=0)
    assert torch.allclose(est["log_px"], exact, atol=0.03), (est["log_px"], exact)
    with torch.no_grad():
        q = m.encode(x)
        z0 = q.base.sample((5000,))
        z, log_det = q.flow(z0)
        log_joint = m.decode(z.transpose(0, 1)).log_prob(x[:, None]).T + m.prior().log_prob(z)
        wrong = torch.logsumexp(log_joint - q.base.log_prob(z0), 0) - math.log(5000)
        right = torch.logsumexp(log_joint - q.base.log_prob(z0) + log_det, 0) - math.log(5000)
    assert torch.allclose(right, exact, atol=0.03) and ((wrong - exact).abs() > 0.2).all(), (wrong, exact)
    torch.manual_seed(0)
    with torch.no_grad():
        lw = log_weight_terms(m, x.repeat(400, 1, 1, 1), 5).total.view(400, 3, 5)
    elbo_, l5 = lw.mean((0, 2)), (torch.logsumexp(lw, 2) - math.log(5)).mean(0)
    assert (elbo_ < l5 - 0.02).all() and (l5 < exact + 0.01).all(), (elbo_, l5, exact)
    t = iwae_terms(m, x, 5)
    assert t["iwae"].requires_grad and torch.isfinite(t["iwae"]).all()


# ----------------------------------------------------------------------------- the model
def test_training_lowers_the_loss_and_the_model_saves_and_loads(tmp_path):
    ds = data.load("digits", binarize="static", limit=300)
    torch.manual_seed(0)
    m = VAE(ds.shape, 2, hidden=[32], posterior="iaf", flow_steps=2, flow_hidden=[16, 16])
    before = [p.detach().clone() for p in m.latent.parameters()]
    run = train(m, ds, epochs=4, lr=3e-3, out=tmp_path / "run", progress=False, tensorboard=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 1
    assert all(not torch.equal(a, b) for a, b in zip(before, m.latent.parameters()))  # the flow learned
    again = load(tmp_path / "run")
    assert again.config["posterior"] == "iaf" and again.config["flow_steps"] == 2
    x = ds.test.x[:5]
    assert torch.equal(again.embed(x), m.eval().embed(x))
    assert torch.allclose(again.log_likelihood(x, samples=30, seed=0), m.log_likelihood(x, samples=30, seed=0))
    with pytest.raises(CheckpointError, match="does not fit"):  # a flow's weights are not a plain VAE's
        load_state(VAE(ds.shape, 2, hidden=[32]), again.state_dict(), "x")


def test_embed_and_reconstruct_use_the_flow_at_zero_noise():
    m = model()
    x = torch.rand(4, *SHAPE, dtype=torch.float64).bernoulli()
    q = m.encode(x)
    code = q.flow(q.base.base_dist.loc)[0]
    assert torch.equal(m.embed(x), code) and not torch.allclose(code, q.base.base_dist.loc)
    assert torch.equal(m.reconstruct(x), m.decode(code).mean)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_learned_priors_take_the_flow_posterior(prior):
    """The VampPrior of a flow model is the mixture of the base Gaussians q0(z|u_k) of its
    pseudo-inputs (a mixture of flow densities would need an inversion per density)."""
    m = model(prior=prior, prior_components=3)
    x = torch.rand(4, *SHAPE, dtype=torch.float64).bernoulli()
    terms = m.objective(x)
    assert torch.isfinite(terms["loss"]) and m.kl_method == "mc"
    if prior == "vamp":
        z = torch.randn(5, 2, dtype=torch.float64)
        q0 = m.latent.base(m.encoder(m.prior.pseudo_inputs_images()))
        direct = torch.logsumexp(q0.log_prob(z[:, None]), 1) - math.log(3)
        assert torch.allclose(m.prior().log_prob(z), direct)
    assert torch.isfinite(m.log_likelihood(x, samples=20)).all()


def test_command_line_train_and_eval(tmp_path):
    out = tmp_path / "iaf"
    assert main(["train", "--dataset", "digits", "--limit", "200", "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--posterior", "iaf", "--flow-steps", "3", "--flow-hidden", "8",
                 "--out", str(out), "--no-progress", "--no-figures"]) == 0
    assert load(out).config["flow_steps"] == 3 and len(load(out).latent.steps) == 3
    assert main(["eval", str(out), "--nll-samples", "20", "--limit", "30", "--no-progress"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["kl_method"] == "mc" and math.isfinite(res["log_px"]) and res["log_px"] >= res["elbo_is"]


@pytest.mark.parametrize("flags, message", [
    (["--latent-family", "bernoulli"], "needs latent_family 'gaussian'"),
    (["--flow-steps", "0"], "flow_steps must be an integer >= 1"),
    (["--flow-hidden", "[]"], "flow_hidden must be one or more layer sizes"),
    (["--flow-form", "spline"], "flow_form must be one of affine, gated"),
    (["--model", "autoencoder"], "has no posterior to choose"),
])
def test_impossible_combinations_are_refused_in_one_line(tmp_path, capsys, flags, message):
    args = ["train", "--dataset", "digits", "--limit", "50", "--epochs", "1", "--posterior", "iaf",
            "--out", str(tmp_path / "r"), "--no-progress", "--no-figures", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


def test_unknown_posterior_is_refused():
    with pytest.raises(ValueError, match="posterior must be one of diagonal, iaf"):
        VAE(SHAPE, 2, posterior="flow")


def test_flow_context_is_off_by_default_and_old_iaf_models_keep_theirs(tmp_path):
    """Without a context the encoder gives 2 D numbers and the MADEs see z only; a model
    saved before `flow_context` existed (all had the context) loads with it, and one saved
    before `flow_form` (all were gated) loads gated."""
    plain, with_h = VAE(SHAPE, 2, hidden=[16], posterior="iaf"), VAE(SHAPE, 2, hidden=[16], posterior="iaf",
                                                                     flow_context=True)
    assert plain.latent.context_dim == 0 and with_h.latent.context_dim == 128
    assert all(step.context is None for step in plain.latent.steps)
    old = {k: v for k, v in with_h.config.items() if k != "flow_context"}
    assert VAE.upgrade_config(old)["flow_context"] is True
    assert VAE.upgrade_config({k: v for k, v in plain.config.items() if k != "flow_context"}
                              | {"posterior": "diagonal"})["flow_context"] is False
    with_h.save(tmp_path / "m.safetensors")
    from aevb.models import load
    assert load(tmp_path / "m.safetensors").latent.context_dim == 128
    assert plain.config["flow_form"] == "affine" and plain.latent.form is FORMS["affine"]
    assert VAE.upgrade_config({k: v for k, v in plain.config.items() if k != "flow_form"})["flow_form"] == "gated"
    assert VAE.upgrade_config({"posterior": "diagonal"})["flow_form"] == "affine"  # no flow: the default
    gated = VAE(SHAPE, 2, hidden=[16], posterior="iaf", flow_form="gated")
    gated.save(tmp_path / "g.safetensors")
    assert load(tmp_path / "g.safetensors").latent.form is GatedStep
