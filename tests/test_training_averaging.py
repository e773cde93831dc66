"""Weight averaging, `train(ema=decay)` (aevb.averaging): the average follows its formula step
by step, leaves the training trajectory alone, is what evaluation, the returned model and a
loaded run use, resumes bit for bit, and bad settings or damaged averages are refused."""
from __future__ import annotations

import json

import pytest
import torch

from aevb import models
from aevb.averaging import WeightAverage
from aevb.cli import main
from aevb.objectives import objective_terms
from aevb.serialization import CheckpointError, load_tensors, save_tensors
from test_training_reliability import assert_same, digits, fit, fresh  # noqa: F401  (digits: a fixture)


def test_the_average_follows_its_formula():
    """avg_t = d_t avg_{t-1} + (1 - d_t) w_t with d_t = min(decay, (1 + t) / (10 + t)), computed
    plainly in float64 beside the foreach kernel."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    avg = WeightAverage(net, 0.9)
    plain = [p.detach().double().clone() for p in net.parameters()]
    for t in range(40):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        avg.update(t)
        d = min(0.9, (1 + t) / (10 + t))
        plain = [d * a + (1 - d) * p.detach().double() for a, p in zip(plain, net.parameters())]
    for a, b in zip(avg.average, plain):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    assert avg.rate(0) == pytest.approx(0.9) and avg.rate(10**6) == pytest.approx(0.1)
    own = [p.detach().clone() for p in net.parameters()]
    with avg.swapped():
        assert all(torch.equal(p, a) for p, a in zip(net.parameters(), avg.average))
    assert all(torch.equal(p, o) for p, o in zip(net.parameters(), own))


def test_training_with_an_average_keeps_the_trajectory_and_returns_the_average(digits, tmp_path):
    plain = fit(fresh(), digits, tmp_path / "plain")
    averaged = fit(fresh(), digits, tmp_path / "ema", ema=0.99)
    last = {k[6:]: v for k, v in load_tensors(tmp_path / "ema" / "checkpoint.safetensors")[0].items()
            if k.startswith("model.")}
    for name, p in fresh().named_parameters():  # the raw weights: the same steps as without averaging
        assert torch.equal(last[name], dict(plain.model.named_parameters())[name]), name
    got = dict(averaged.model.named_parameters())
    assert any(not torch.equal(got[n], last[n]) for n in got)  # the model returned is the average
    loaded = models.load(tmp_path / "ema")
    assert all(torch.equal(p, got[n]) for n, p in loaded.named_parameters())
    # the recorded test terms are the averaged weights' (same noise: the trainer's seed 3)
    test = objective_terms(loaded, digits.test.x, None, 1000, 3)
    assert averaged.last["test_elbo"] == pytest.approx(test["elbo"].mean().item(), rel=1e-5)
    assert averaged.last["test_elbo"] != pytest.approx(plain.last["test_elbo"], rel=1e-6)


def test_an_averaged_run_resumes_bit_for_bit_and_keeps_its_best_average(digits, tmp_path):
    kw = {"ema": 0.95, "validation": 300, "keep_best": True}
    fit(fresh(), digits, tmp_path / "whole", **kw)
    fit(fresh(), digits, tmp_path / "split", epochs=2, **kw)
    fit(fresh(), digits, tmp_path / "split", resume=True, **kw)
    assert_same(tmp_path / "whole", tmp_path / "split")
    tensors = load_tensors(tmp_path / "whole" / "checkpoint.safetensors")[0]
    assert any(k.startswith("ema.") for k in tensors) and any(k.startswith("best.") for k in tensors)
    # a checkpoint whose average is missing (edited, truncated) is refused on resume
    kept = {k: v for k, v in tensors.items() if not k.startswith("ema.")}
    meta = load_tensors(tmp_path / "whole" / "checkpoint.safetensors")[1]
    save_tensors(tmp_path / "whole" / "checkpoint.safetensors", kept, meta)
    with pytest.raises(CheckpointError, match="weight average"):
        fit(fresh(), digits, tmp_path / "whole", resume=True, epochs=5, **kw)


def test_bad_decays_are_refused(digits, tmp_path, capsys):
    for bad in (0, 1, 1.5, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="ema must be a decay between 0 and 1"):
            fit(fresh(), digits, None, ema=bad)
    assert main(["train", "--dataset", "digits", "--ema", "1.2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ema'" in err[0] and "between 0 and 1" in err[0]
    assert not (tmp_path / "r").exists()


def test_the_cli_trains_with_an_average_and_records_it(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--ema", "0.99", "--hidden", "16",
                 "--latent", "2", "--out", str(out), "-q", "--no-figures"]) == 0
    assert json.loads((out / "config.json").read_text())["ema"] == 0.99
    assert any(k.startswith("ema.") for k in load_tensors(out / "checkpoint.safetensors")[0])
