"""What a new user meets first on the command line: --version, fast help that imports no
torch, help text from the config's own comments and choices, suggestions for mistyped flags,
YAML list syntax in flags."""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import aevb
from aevb import config as config_mod
from aevb.cli import PLOT_KINDS, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aevb", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_version_is_the_package_version():
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.strip() == f"aevb {version}" == f"aevb {aevb.__version__}"


def test_help_imports_neither_torch_nor_matplotlib():
    """`aevb --help` and each command's --help build the parser without torch (seconds)."""
    code = """
import sys
from aevb.cli import main
for argv in (["--help"], ["train", "--help"], ["plot", "--help"], ["sweep", "--help"],
             ["sample", "--help"], ["eval", "--help"], ["--version"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
heavy = sorted(m for m in ("torch", "matplotlib", "sklearn", "numpy") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys, aevb; print('torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
    # ... and the lazy names still resolve
    assert aevb.VAE.__name__ == "VAE" and callable(aevb.train) and aevb.evaluation.evaluate


def test_mistyped_flag_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--latnet-dim", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --latnet-dim" in err and "did you mean --latent-dim?" in err
    with pytest.raises(SystemExit):
        main(["sample", "run", "--temprature", "0.5"])
    assert "did you mean --temperature?" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing close: no suggestion, still one clear line
        main(["train", "--zzzzzz"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --zzzzzz" in err and "did you mean" not in err


def test_train_help_comes_from_the_config_comments_and_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--latent-dim LATENT_DIM, --latent LATENT_DIM size of the latent code z (default: 20)" in out
    assert "one of adam, adamw, rmsprop, adagrad, sgd; default: adam" in out
    assert "one of auto, none, static, dynamic; default: auto" in out
    helps = config_mod.help_texts()
    assert set(helps) == set(config_mod.FIELDS)
    assert all(len(h) > 10 for h in helps.values()), [k for k, h in helps.items() if len(h) <= 10]
    assert "--log-every-epoch" in out and "--quiet" in out


def test_choices_listed_in_the_config_are_the_real_ones():
    """config.CHOICES is what --help shows; it must equal what the modules accept."""
    from aevb import distributions, plots, training
    from aevb.data import BINARIZE
    from aevb.distributions.iaf import FORMS
    from aevb.models import MODELS
    from aevb.models import vae
    from aevb.nets import NETS
    from aevb.nets.mlp import ACTIVATIONS
    builtin = tuple(k for k, cls in MODELS.items() if cls.__module__.startswith("aevb."))  # not a test's
    real = {"binarize": ("auto", *BINARIZE), "model": builtin, "net": tuple(NETS),
            "activation": tuple(ACTIVATIONS), "likelihood": ("auto", *distributions.LIKELIHOODS),
            "kl": ("analytic", "mc"), "latent_family": tuple(distributions.LATENTS),
            "prior": tuple(distributions.PRIORS),
            "estimator": vae.ESTIMATORS, "baseline": vae.BASELINES, "objective": vae.OBJECTIVES, "posterior": vae.POSTERIORS,
            "flow_form": tuple(FORMS),
            "optimizer": tuple(training.OPTIMIZERS), "precision": training.PRECISIONS,
            "lr_schedule": training.LR_SCHEDULES}
    assert {k: sorted(v) for k, v in config_mod.CHOICES.items()} == {k: sorted(v) for k, v in real.items()}
    assert PLOT_KINDS == plots.KINDS


@pytest.mark.parametrize("text", ["[400,400]", "[400, 400]", "400,400", "400 400"])
def test_list_values_in_yaml_syntax(text):
    assert config_mod.coerce("hidden", text) == [400, 400]
    assert config_mod.make_config(None, hidden=text).hidden == [400, 400]


def test_list_values_keep_refusing_garbage():
    for bad in ("[a,b]", "x", "[1.5]"):
        with pytest.raises(config_mod.ConfigError, match="'hidden'"):
            config_mod.coerce("hidden", bad)
    assert config_mod.coerce("classes", "[cat, dog]") == ["cat", "dog"]
    assert config_mod.coerce("classes", "Ankle boot,Bag") == ["Ankle boot", "Bag"]
    assert config_mod.coerce("classes", "0,3") == [0, 3]


def test_sweep_set_takes_a_yaml_list(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--latent", "2", "--set", "hidden=[16,8]", "--epochs", "1",
                 "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads(next(out.glob("*/config.json")).read_text())
    assert cfg["hidden"] == [16, 8] and cfg["model_config"]["hidden"] == [16, 8]


def test_the_fid_flag_defaults_in_the_parser_are_the_library_s():
    """cli lists --fid / --domain-fid's defaults itself (building the parser imports no torch)."""
    from aevb.cli import parser
    from aevb.quality.samples import DOMAIN_N, FID_N
    args = parser().parse_args(["eval", "RUN", "--fid", "--domain-fid"])
    assert (args.fid, args.domain_fid) == (FID_N, DOMAIN_N)
