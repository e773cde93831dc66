"""End to end: the `aevb` command on small real data, as a user runs it."""
import json
import subprocess
import sys

import torch

import aevb
from aevb.cli import main


def aevb_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aevb", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_train_sample_and_resume_on_real_mnist(tmp_path, mnist_dir):
    out = tmp_path / "run"
    r = aevb_cli("train", "--dataset", "mnist-offline", "--data-dir", mnist_dir, "--limit", 600,
                 "--hidden", "64", "--latent-dim", 4, "--epochs", 2, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    for f in ("config.json", "checkpoint.safetensors", "metrics.jsonl", "elbo.png", "samples.png",
              "reconstructions.png"):
        assert (out / f).stat().st_size > 0, f
    assert list((out / "tb").glob("events.*"))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert -550 < lines[-1]["test_elbo"] < -100          # nats per 784-pixel binary image
    assert lines[-1]["test_elbo"] > lines[0]["test_elbo"] - 5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["latent_dim"] == 4 and cfg["hidden"] == [64] and cfg["model_config"]["model"] == "vae"

    r = aevb_cli("train", "--resume", "--out", out, "--epochs", 3, "--no-progress", "--no-figures")
    assert r.returncode == 0, r.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3

    r = aevb_cli("sample", out, "-n", 9, "-o", tmp_path / "s.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_yaml_config_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: digits\nhidden: [16]\nlatent_dim: 2\nepochs: 5\n")
    assert main(["train", str(cfg), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress",
                 "--no-figures"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["latent_dim"] == 2
    model = aevb.load(tmp_path / "r")
    assert model.latent_dim == 2 and model.sample(3).shape == (3, 1, 8, 8)


def test_existing_run_directory_is_refused(tmp_path, capsys):
    args = ["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--out", str(tmp_path / "r"),
            "--no-progress", "--no-figures"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_same_seed_same_numbers(tmp_path):
    args = ["--hidden", "16", "--latent-dim", "2", "--epochs", "2", "--no-progress", "--no-figures"]
    for name in "ab":
        assert main(["train", *args, "--out", str(tmp_path / name)]) == 0
    a, b = ((tmp_path / n / "metrics.jsonl").read_text().splitlines() for n in "ab")
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(a) == strip(b)
    wa, wb = (aevb.load(tmp_path / n).state_dict() for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
