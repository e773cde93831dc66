"""Checkpoints written by aevb before the core redesign (no `prior` or `prior_components` in
their model config) still load, resume and evaluate, and build models with exactly the
weights they hold. The old model configs and weight names below were read from checkpoints
that the earlier version wrote (`aevb train --dataset digits --epochs 1 --hidden 16`, plain,
with `--latent-family bernoulli`, `--model autoencoder`, and `--conditional --likelihood
gaussian`); the old-format files are written here by hand, no binary is stored."""
from __future__ import annotations

import json

import pytest
import torch

from aevb import data, train
from aevb.checkpoint import load_checkpoint
from aevb.models import load
from aevb.models.base import from_config, upgrade_config
from aevb.optim import make_optimizer
from aevb.serialization import load_tensors, save_tensors

VAE_OLD = {"activation": "relu", "baseline": "learned", "beta": 1.0, "estimator": "reinforce",
           "gumbel_temperature": 0.5, "hidden": [16], "input_shape": [1, 8, 8], "iwae_k": 5,
           "kl": "analytic", "latent_dim": 20, "latent_family": "gaussian", "likelihood": "bernoulli",
           "model": "vae", "net": "mlp", "num_classes": 0, "objective": "elbo", "sigma": 1.0}
OLD = {
    "gaussian": (VAE_OLD, {"decoder.net.0.bias": [16], "decoder.net.0.weight": [16, 20],
                           "decoder.net.2.bias": [64], "decoder.net.2.weight": [64, 16],
                           "encoder.net.0.bias": [16], "encoder.net.0.weight": [16, 64],
                           "encoder.net.2.bias": [40], "encoder.net.2.weight": [40, 16]}),
    "binary": ({**VAE_OLD, "latent_family": "bernoulli"},
               {"baseline.average": [], "baseline.net.0.bias": [100], "baseline.net.0.weight": [100, 64],
                "baseline.net.2.bias": [1], "baseline.net.2.weight": [1, 100], "baseline.updates": [],
                "decoder.net.0.bias": [16], "decoder.net.0.weight": [16, 20], "decoder.net.2.bias": [64],
                "decoder.net.2.weight": [64, 16], "encoder.net.0.bias": [16],
                "encoder.net.0.weight": [16, 64], "encoder.net.2.bias": [20],
                "encoder.net.2.weight": [20, 16]}),
    "autoencoder": ({"activation": "relu", "code_momentum": 0.95, "hidden": [16], "input_shape": [1, 8, 8],
                     "latent_dim": 20, "likelihood": "bernoulli", "model": "autoencoder", "net": "mlp",
                     "num_classes": 0, "sigma": 1.0},
                    {"code_mean": [20], "code_moment": [20, 20], "code_updates": [], "decoder.net.0.bias": [16],
                     "decoder.net.0.weight": [16, 20], "decoder.net.2.bias": [64],
                     "decoder.net.2.weight": [64, 16], "encoder.net.0.bias": [16],
                     "encoder.net.0.weight": [16, 64], "encoder.net.2.bias": [20],
                     "encoder.net.2.weight": [20, 16]}),
    "conditional": ({**VAE_OLD, "likelihood": "gaussian", "num_classes": 10},
                    {"decoder.net.0.bias": [16], "decoder.net.0.weight": [16, 30], "decoder.net.2.bias": [64],
                     "decoder.net.2.weight": [64, 16], "encoder.net.0.bias": [16],
                     "encoder.net.0.weight": [16, 74], "encoder.net.2.bias": [40],
                     "encoder.net.2.weight": [40, 16]}),
}
PRIOR = {"gaussian": "standard_normal", "binary": "bernoulli_half", "conditional": "standard_normal"}


@pytest.mark.parametrize("kind", OLD)
def test_old_configs_build_models_with_the_old_weights(kind):
    config, shapes = OLD[kind]
    model = from_config(config)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == shapes
    if kind in PRIOR:  # the default prior of the latent family, as the old version had
        assert model.config["prior"] == PRIOR[kind] and upgrade_config(config)["prior"] == PRIOR[kind]


FLAGS = {"gaussian": [], "binary": ["--latent-family", "bernoulli"], "autoencoder": ["--model", "autoencoder"],
         "conditional": ["--conditional", "--likelihood", "gaussian"]}


def old_checkpoint(tmp_path, kind):
    """A run directory in the old format: trained by this version's command, then its
    checkpoint's model config and its config.json put back as the old version wrote them."""
    from aevb.cli import main
    config, _ = OLD[kind]
    out = tmp_path / kind
    assert main(["train", "--dataset", "digits", "--limit", "200", "--epochs", "1", "--hidden", "16",
                 *FLAGS[kind], "--out", str(out), "--no-progress", "--no-figures"]) == 0
    ckpt = out / "checkpoint.safetensors"
    tensors, meta = load_tensors(ckpt)
    assert upgrade_config(config) == meta["model_config"]  # the old config, upgraded, is this run's
    meta["model_config"] = config
    save_tensors(ckpt, tensors, meta)
    run_config = json.loads((out / "config.json").read_text())
    run_config = {k: v for k, v in run_config.items() if k not in ("prior", "prior_components")}
    (out / "config.json").write_text(json.dumps({**run_config, "model_config": config}))
    return data.load("digits", binarize="dynamic", limit=200), load(out), out


@pytest.mark.parametrize("kind", OLD)
def test_old_checkpoints_load_and_resume(tmp_path, kind):
    ds, loaded, out = old_checkpoint(tmp_path, kind)
    tensors, _ = load_tensors(out / "checkpoint.safetensors")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, tensors[f"model.{k}"]), k
    resumed = from_config(OLD[kind][0])
    state = load_checkpoint(out / "checkpoint.safetensors", resumed, make_optimizer("adam", resumed.parameters(), 1e-3))
    assert state["epoch"] == 1
    run = train(resumed, ds, epochs=2, batch_size=100, out=out, resume=True, progress=False, tensorboard=False)
    assert [r["epoch"] for r in run.history] == [1, 2]


def test_an_old_run_resumes_from_the_command_line(tmp_path, capsys):
    from aevb.cli import main
    _, _, out = old_checkpoint(tmp_path, "binary")
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress", "--no-figures"]) == 0
    assert main(["eval", str(out), "--nll-samples", "5", "--no-progress"]) == 0
    assert json.loads((out / "eval.json").read_text())["kl_method"] == "analytic"


def test_a_changed_config_is_still_refused_on_resume(tmp_path):
    """Upgrading old configs must not make a checkpoint of another model resumable."""
    from aevb.serialization import CheckpointError
    _, _, out = old_checkpoint(tmp_path, "gaussian")
    other = from_config({**VAE_OLD, "beta": 2.0})
    with pytest.raises(CheckpointError, match="use the same config to resume"):
        load_checkpoint(out / "checkpoint.safetensors", other, make_optimizer("adam", other.parameters(), 1e-3))
