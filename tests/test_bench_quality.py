"""benchmarks/quality.py end to end (tiny budget), and its pythae adapter: a pythae model's
weights turned into an aevb model (benchmarks/peers/pythae_models.py) score the same ELBO as
pythae's own loss. The adapter test runs in pythae's environment (benchmarks/README.md;
AEVB_PYTHAE_PYTHON, default /work/venvs/pythae/bin/python) and is skipped without it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHAE_PYTHON = os.environ.get("AEVB_PYTHAE_PYTHON", "/work/venvs/pythae/bin/python")

ADAPTER_CHECK = r"""
import json, math, sys, torch
sys.path.insert(0, "benchmarks/peers")
import pythae_models as pm
from aevb import data
from aevb.objectives import objective_terms
from pythae.data.datasets import DatasetOutput
ds = data.load("mnist-offline", binarize="dynamic", data_dir=sys.argv[1], limit=1000, progress=False)
x = ds.test.x[:300]
out = {}
for kind in ("VAE", "VAMP", "VAE_IAF"):
    torch.manual_seed(0)
    m = pm.build(kind, components=10)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for i in range(60):  # trained a little, so that the KL and the flow matter
        x = torch.bernoulli(ds.train.x[(i % 10) * 100:(i % 10 + 1) * 100])
        opt.zero_grad()
        m(DatasetOutput(data=x)).loss.backward()
        opt.step()
    own = -pm.own_loss(m, x, batch_size=1, seed=1)  # per image, pythae's -loss = its ELBO estimate
    mine = objective_terms(pm.as_aevb(m, kind), x, seed=2)  # aevb's, with independent noise
    d = mine["elbo"] - own  # paired by image: only the sampling noise remains
    out[kind] = {"pythae": own.mean().item(), "adapter": mine["elbo"].mean().item(), "diff": d.mean().item(),
                 "diff_se": d.std().item() / math.sqrt(len(d)), "kl": mine["kl"].mean().item()}
print(json.dumps(out))
"""


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def test_pythae_adapter_elbo_matches_pythaes_own_loss(mnist_dir):
    if not Path(PYTHAE_PYTHON).exists():
        pytest.skip(f"no pythae environment at {PYTHAE_PYTHON} (benchmarks/README.md)")
    r = subprocess.run([PYTHAE_PYTHON, "-c", ADAPTER_CHECK, str(mnist_dir)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for kind, v in json.loads(r.stdout.splitlines()[-1]).items():
        assert abs(v["diff"]) < 4 * v["diff_se"] and v["diff_se"] < 1, (kind, v)  # within noise
        assert v["kl"] > 1 and -400 < v["adapter"] < -100, (kind, v)  # a trained model, not a trivial one


def test_quality_benchmark_end_to_end(tmp_path, mnist_dir):
    r = subprocess.run([sys.executable, "benchmarks/quality.py", "--budget", "1", "--eval-n", "20", "--k", "10",
                        "--probe", "2", "--models", "aevb-vae,aevb-vamp,aevb-hvae", "--data-dir", str(mnist_dir),
                        "--out", str(tmp_path), "--pythae-python", str(tmp_path / "none")],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "quality.json").read_text())["results"]
    for key in ("aevb-vae", "aevb-vamp"):
        v = res[key]
        assert v["n"] == 20 and v["nll_samples"] == 10 and v["epochs"] > 0 and v["train_seconds"] >= 1
        assert v["log_px"] > v["elbo_is"] - 1e-9 and -800 < v["log_px"] < -50  # L_K >= mean log w, per image
        assert v["probe_seconds_per_image"] > 0 and 0 <= v["active_units"] <= 20
    hvae = res["aevb-hvae"]
    assert "log_px" in hvae or "refuses" in hvae["skipped"]
    md = (tmp_path / "quality.md").read_text()
    assert "| aevb VAE | " in md and "python benchmarks/quality.py --budget 1" in md and "Projected" in md


def test_heldout_benchmark_scores_the_held_out_images(mnist_dir):
    r = subprocess.run([sys.executable, "benchmarks/heldout.py", '{"prior": "mog", "activation": "gated"}',
                        "--budget", "1", "--k", "5", "--validation", "200", "--components", "3",
                        "--data-dir", str(mnist_dir)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["images"] == 200 and res["k"] == 5 and 1 <= res["best_epoch"] <= res["epochs"]
    assert -800 < res["heldout_elbo"] <= res["heldout_log_px"] + 5 and res["heldout_log_px"] < -50


def test_quality_seeds_combines_the_pairs_over_seeds(tmp_path):
    """benchmarks/quality_seeds.py: per-seed differences, their mean and its standard error
    over seeds (sd / sqrt(n)), and the verdict, from quality.json files."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    files = []
    for seed, (a, b) in enumerate([(-98.0, -97.0), (-97.0, -97.5), (-99.0, -98.5)]):
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({"command": f"python benchmarks/quality.py --seed {seed}",
                                 "results": {"aevb-vae": {"log_px": a}, "pythae-vae": {"log_px": b},
                                             "aevb-iaf": {"error": "worker exited"}}}))
        files.append(str(f))
    out = tmp_path / "seeds.md"
    r = subprocess.run([sys.executable, str(bench / "quality_seeds.py"), *files, "--out", str(out)],
                       capture_output=True, text=True, check=True)
    # differences -1.0, +0.5, -0.5: mean -0.33, sd 0.764, s.e. 0.44
    assert "seed 0: -1.00" in r.stdout and "seed 1: +0.50" in r.stdout and "seed 2: -0.50" in r.stdout
    assert "-0.33 ± 0.44 | NOT met (within noise)" in r.stdout
    assert "aevb-iaf" not in r.stdout  # a pair with no result on any seed is left out
    assert out.read_text().startswith("# quality.py's same-model pairs")
    bad = subprocess.run([sys.executable, str(bench / "quality_seeds.py"), str(tmp_path / "missing.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    refused = subprocess.run([sys.executable, str(bench / "quality_seeds.py"), *files, "--out", str(mine)],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "not written by benchmarks/quality_seeds.py" in refused.stderr
    assert mine.read_text() == "my notes\n"
    subprocess.run([sys.executable, str(bench / "quality_seeds.py"), *files, "--out", str(out)], check=True)  # its own file


def test_quality_seeds_takes_named_pairs_and_refuses_repeats(tmp_path):
    """RUN.json:PAIRS takes only those pairs from a run; the same pair twice at one seed, or
    an unknown pair, is refused in one line (exit 2)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"command": "python benchmarks/quality.py",
                               "results": {"aevb-vae": {"log_px": -99.0}, "pythae-vae": {"log_px": -97.0},
                                           "aevb-iwae": {"log_px": -95.0}, "pythae-iwae": {"log_px": -96.0}}}))
    new.write_text(json.dumps({"command": "python benchmarks/quality.py --seed 0",
                               "results": {"aevb-vae": {"log_px": -97.5}, "pythae-vae": {"log_px": -97.0}}}))

    def run(*args):
        return subprocess.run([sys.executable, str(bench / "quality_seeds.py"), *map(str, args)],
                              capture_output=True, text=True)
    both = run(old, new)
    assert both.returncode == 2 and "pair vae at seed 0 is in both" in both.stderr and "Traceback" not in both.stderr
    picked = run(f"{old}:iwae", new)
    assert picked.returncode == 0, picked.stderr
    assert "seed 0: -0.50 (-97.50 vs -97.00)" in picked.stdout and "seed 0: +1.00 (-95.00 vs -96.00)" in picked.stdout
    assert "-99.00" not in picked.stdout  # the old run's VAE pair was not taken
    unknown = run(f"{old}:vea")
    assert unknown.returncode == 2 and "unknown pair vea" in unknown.stderr
