"""`time_limit`: training stops after the step that crosses the wall-clock budget, saves a
checkpoint, says why in its history and `run.stopped`, and a resumed run continues exactly."""
from __future__ import annotations

import json
import types

import pytest
import torch

from aevb import data, training
from aevb.cli import main
from aevb.config import ConfigError, make_config
from aevb.serialization import load_tensors
from test_training_reliability import assert_same, before_each_step, fit, fresh


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="dynamic")  # 1437 train images: 15 batches of 100


CLOCK = [0.0]


@pytest.fixture
def fake_clock(monkeypatch):
    """training.time.perf_counter reads a fake clock that each training step advances by one
    second (the model stays the plain VAE, so the step is the one a real run takes)."""
    CLOCK[0] = 0.0
    before_each_step(monkeypatch, lambda: CLOCK.__setitem__(0, CLOCK[0] + 1.0))
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: CLOCK[0]))


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_time_limit_stops_mid_epoch_and_resume_is_exact(digits, tmp_path, fake_clock, schedule):
    # KL warm-up, the lr schedule and input noise use the step / RNG
    opts = {"warmup_epochs": 1.5, "noise": 0.1, "lr_schedule": schedule}
    whole = fit(fresh(), digits, tmp_path / "whole", **opts)
    assert whole.stopped is None
    run = fit(fresh(), digits, tmp_path / "cut", time_limit=22.5, **opts)
    # 15 steps per epoch: the 23rd step (epoch 2, step 8) is the first at or past 22.5 s
    assert run.stopped == "time_limit"
    assert [r["epoch"] for r in run.history] == [1, 2]
    last = run.last
    assert last["stopped"] == "time_limit" and last["steps"] == 8 and "stopped" not in run.history[0]
    assert last["seconds"] == 23 and all(k in last for k in ("train_elbo", "test_elbo"))
    on_disk = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert on_disk[-1]["stopped"] == "time_limit"
    _, meta = load_tensors(tmp_path / "cut" / "checkpoint.safetensors")
    assert (meta["trainer"]["epoch"], meta["trainer"]["step"], meta["trainer"]["global_step"]) == (1, 8, 23)
    rest = fit(fresh(), digits, tmp_path / "cut", resume=True, **opts)
    assert [r["epoch"] for r in rest.history] == [1, 2, 3, 4]  # the partial record was replaced
    assert_same(tmp_path / "whole", tmp_path / "cut")


def test_time_limit_crossed_on_an_epochs_last_step_ends_after_that_epoch(digits, tmp_path, fake_clock):
    run = fit(fresh(), digits, tmp_path / "r", time_limit=15)
    assert run.stopped == "time_limit"
    assert len(run.history) == 1 and run.last["stopped"] == "time_limit" and "steps" not in run.last
    rest = fit(fresh(), digits, tmp_path / "r", resume=True)
    assert [r["epoch"] for r in rest.history] == [1, 2, 3, 4]  # a whole epoch is kept on resume
    whole = fit(fresh(), digits, tmp_path / "whole")
    for p, q in zip(whole.model.parameters(), rest.model.parameters()):
        assert torch.equal(p, q)


def test_time_limit_on_the_real_clock(digits):
    run = fit(fresh(), digits, None, time_limit=1e-9)  # crossed by the first step
    assert run.stopped == "time_limit" and run.last["steps"] == 1
    assert fit(fresh(), digits, None, epochs=1, time_limit=3600).stopped is None


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_bad_time_limit_is_refused(digits, bad):
    with pytest.raises(ValueError, match="time_limit must be a positive number"):
        fit(fresh(), digits, None, time_limit=bad)
    with pytest.raises(ConfigError, match="'time_limit'"):
        make_config(time_limit=bad)


def test_cli_time_limit(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "3",
            "--out", str(out), "--no-progress", "--no-figures", "-q"]
    assert main(args + ["--time-limit", "1e-9"]) == 0
    assert "stopped at the time limit (1e-09 s) in epoch 1; checkpoint saved. Continue with: aevb train " \
           f"--resume --out {out}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["time_limit"] == 1e-9
    assert main(["train", "--resume", "--out", str(out), "--time-limit", "3600", "--no-progress",
                 "--no-figures", "-q"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and not any("stopped" in r for r in lines)
    assert main(args + ["--overwrite", "--time-limit", "0"]) == 2
    assert "time_limit" in capsys.readouterr().err



def test_cosine_schedule_values_and_effect(digits, tmp_path):
    """The factor is (1 + cos(pi t / T)) / 2: 1 at the first step, 1/2 halfway, ~0 at the
    last; the optimizer ends the run at lr times the last step's factor, and the weights
    differ from a constant lr's."""
    f = training.lr_factor("cosine", 60)
    assert (f(0), f(30), f(60)) == (1.0, pytest.approx(0.5), pytest.approx(0.0, abs=1e-15))
    assert training.lr_factor("constant", 60) is None
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'; choose one of constant, cosine"):
        training.lr_factor("step", 60)
    for schedule in ("constant", "cosine"):  # 2 epochs of 15 steps
        fit(fresh(), digits, tmp_path / schedule, lr_schedule=schedule, epochs=2)
    a, _ = load_tensors(tmp_path / "constant" / "checkpoint.safetensors")
    b, meta = load_tensors(tmp_path / "cosine" / "checkpoint.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    last = training.lr_factor("cosine", 30)(29)
    assert meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3 * last, rel=1e-12)
