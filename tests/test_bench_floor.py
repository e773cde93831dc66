"""benchmarks/floor.py's ceiling: the per-pixel work it times must compute what a step
needs (the Bernoulli log-likelihood), and a short run reports the ceiling and the plain
loop's share."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import floor  # noqa: E402


def test_ceiling_candidates_compute_the_bernoulli_likelihood():
    """The ceiling times the cheapest of these; each must be the negative Bernoulli
    log-likelihood, checked against the float64 formula."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 784, generator=g) * 4
    x = (torch.rand(50, 784, generator=g) < 0.3).float()
    p = torch.sigmoid(logits.double())
    want = -(x * p.log() + (1 - x) * (1 - p).log()).sum().item()
    for f in floor.likelihood_candidates(logits, x):
        assert abs(f().item() - want) < 1e-4 * abs(want)


def test_a_short_run_reports_the_ceiling_and_the_plain_loop(tmp_path):
    out = tmp_path / "floor.json"
    p = subprocess.run([sys.executable, str(BENCH / "floor.py"), "--steps", "2", "--blocks", "2", "--peer",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (r,) = json.loads(out.read_text())["results"]
    assert len(r["required_ms"]) == len(r["plain_ms"]) == len(r["step_ms"]) == 2
    assert 0 < r["median_ceiling"] < 1 and r["median_plain_share"] > 0
    assert "ceiling" in p.stdout and "aevb / plain loop" in p.stdout
