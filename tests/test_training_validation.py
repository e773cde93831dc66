"""Model selection on held-out training images: `validation`, `keep_best`, `patience`
(aevb.data.hold_out, aevb.training.validate)."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from aevb import VAE, data, models
from aevb.cli import main
from aevb.data import hold_out
from aevb.objectives import objective_terms
from aevb.serialization import load_tensors
from test_training_reliability import assert_same, fit, fresh


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="dynamic")  # 1437 train images


class Worsening(VAE):
    """Every evaluation scores 1000 nats worse than the one before, so that the first epoch
    is always the best on the held-out images and later epochs never improve on it."""

    evaluations = [0]

    def objective(self, x, y=None, **kw):
        out = super().objective(x, y, **kw)
        if not self.training:
            self.evaluations[0] += 1
            out = {**out, "elbo": out["elbo"] - 1000.0 * self.evaluations[0]}
        return out

    def fused_step(self):  # its training steps are the VAE's: the same (fused) step as fresh()'s
        return self.fused_elbo_step()


def test_hold_out_is_a_fixed_disjoint_binarized_choice(digits):
    rest, val = hold_out(digits, 300)
    assert (len(rest.train), len(val)) == (len(digits.train) - 300, 300)
    assert rest.test is digits.test and rest.binarize == "dynamic"
    assert set(val.x.unique().tolist()) <= {0.0, 1.0}  # binarized once, like the test split
    again = hold_out(digits, 300)[1]
    assert torch.equal(val.x, again.x) and torch.equal(val.y, again.y)
    # a partition of the training images (on grey images, where they can be compared)
    grey = data.Dataset("grey", digits.train, digits.test)
    rest, val = hold_out(grey, 300)
    rows = lambda x: Counter(tuple(r.tolist()) for r in x.flatten(1))  # noqa: E731
    assert rows(rest.train.x) + rows(val.x) == rows(digits.train.x)
    for bad in (0, len(digits.train), -1, 2.5, True):
        with pytest.raises(ValueError, match="validation must be a number of training images"):
            hold_out(digits, bad)


def test_best_epoch_is_the_argmax_of_the_validation_bound(digits):
    run = fit(fresh(), digits, None, epochs=5, validation=300)
    vals = [r["val_elbo"] for r in run.history]
    assert all(k in r for r in run.history for k in ("val_elbo", "val_rec", "val_kl", "best_epoch"))
    for i, r in enumerate(run.history):
        assert r["best_epoch"] == 1 + max(range(i + 1), key=lambda j: (vals[j], -j))


def test_keep_best_returns_the_best_epochs_weights_and_resume_is_exact(digits, tmp_path):
    Worsening.evaluations[0] = 0
    run = fit(fresh(Worsening), digits, tmp_path / "best", epochs=3, validation=300, keep_best=True)
    assert [r["best_epoch"] for r in run.history] == [1, 1, 1]
    one = fit(fresh(), digits, None, epochs=1, validation=300)  # the same first epoch, stopped there
    for (k, a), b in zip(run.model.state_dict().items(), one.model.state_dict().values()):
        assert torch.equal(a, b), k
    tensors, _ = load_tensors(tmp_path / "best" / "checkpoint.safetensors")
    last = fit(fresh(), digits, None, epochs=3, validation=300).model.state_dict()
    for k, v in last.items():  # the checkpoint keeps the last weights too (for --resume)
        assert torch.equal(tensors[f"model.{k}"], v) and torch.equal(tensors[f"best.{k}"], one.model.state_dict()[k])
    loaded = models.load(tmp_path / "best")  # what `aevb eval RUN` scores: the best epoch
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), one.model.state_dict().values()))
    # resumed after 2 epochs, the run ends as the uninterrupted one
    Worsening.evaluations[0] = 0
    fit(fresh(Worsening), digits, tmp_path / "split", epochs=2, validation=300, keep_best=True)
    fit(fresh(Worsening), digits, tmp_path / "split", epochs=3, validation=300, keep_best=True, resume=True)
    assert_same(tmp_path / "best", tmp_path / "split")


def test_keep_best_model_scores_what_its_record_says(digits):
    run = fit(fresh(), digits, None, epochs=4, validation=300, keep_best=True)
    best = run.history[run.last["best_epoch"] - 1]
    val = hold_out(digits, 300)[1]
    score = objective_terms(run.model, val.x, seed=3)["elbo"].mean().item()
    assert score == pytest.approx(best["val_elbo"], abs=1e-4)


def test_patience_stops_and_a_resumed_run_stays_stopped(digits, tmp_path):
    Worsening.evaluations[0] = 0
    run = fit(fresh(Worsening), digits, tmp_path / "p", epochs=10, validation=300, patience=2)
    assert run.stopped == "early_stopping" and run.last["epoch"] == 3
    assert run.last["stopped"] == "early_stopping" and "stopped" not in run.history[1]
    on_disk = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert on_disk[-1]["stopped"] == "early_stopping"
    again = fit(fresh(Worsening), digits, tmp_path / "p", epochs=10, validation=300, patience=2, resume=True)
    assert again.stopped == "early_stopping" and len(again.history) == 3


def test_selection_needs_a_validation_split(digits, tmp_path, capsys):
    for kw in ({"keep_best": True}, {"patience": 3}):
        with pytest.raises(ValueError, match="set validation"):
            fit(fresh(), digits, None, **kw)
    with pytest.raises(ValueError, match="patience must be"):
        fit(fresh(), digits, None, validation=100, patience=0)
    assert main(["train", "--dataset", "digits", "--keep-best", "--out", str(tmp_path / "a")]) == 2
    assert "set validation too" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--validation", "5000", "--epochs", "1",
                 "--out", str(tmp_path / "b"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "validation must be a number of training images between 1 and" in err and len(err.splitlines()) == 1


def test_cli_keep_best_and_patience(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--validation", "200", "--keep-best",
                 "--patience", "5", "--latent-dim", "2", "--hidden", "16", "--no-figures", "-q",
                 "--out", str(out)]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and all("val_elbo" in r and "best_epoch" in r for r in records)
    config = json.loads((out / "config.json").read_text())
    assert (config["validation"], config["keep_best"], config["patience"]) == (200, True, 5)
    tensors, _ = load_tensors(out / "checkpoint.safetensors")
    assert any(k.startswith("best.") for k in tensors)
    assert main(["eval", str(out), "--nll-samples", "10"]) == 0
