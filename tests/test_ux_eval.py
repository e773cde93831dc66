"""What `aevb eval` says: which ELBO the gap is taken from, the spread of the effective
sample size, how the test images were binarized, and a report that follows."""
import json
from pathlib import Path

import pytest
import torch

from aevb import data, evaluation
from aevb.cli import main
from aevb.data import transforms
from aevb.models import VAE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result():
    ds = data.load("digits", binarize="dynamic")
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=3, hidden=(16,)).eval()
    res = evaluation.evaluate(model, ds.test, nll_samples=64, limit=40, seed=3)
    direct = evaluation.importance_sampling(model, data.subset(ds.test, 40).x, samples=64, seed=3)
    return res, direct


def test_gap_is_log_px_minus_the_elbo_of_the_same_samples(result):
    res, direct = result
    assert res["gap"] == pytest.approx((direct["log_px"] - direct["elbo"]).mean().item())
    assert res["gap"] == pytest.approx(res["log_px"] - res["elbo_is"])
    assert res["gap"] != pytest.approx(res["log_px"] - res["elbo"], abs=1e-6)  # not the headline ELBO
    table = evaluation.format_table(res)
    assert "ELBO of the same K=64 samples" in table and "gap: log p(x) - that ELBO" in table
    assert "ELBO, 1 sample per image [nats]" in table


def test_effective_sample_size_mean_median_minimum(result):
    res, direct = result
    ess = direct["ess"]
    assert (res["ess"], res["ess_median"], res["ess_min"]) == pytest.approx(
        (ess.mean().item(), ess.median().item(), ess.min().item()))
    assert 1 <= res["ess_min"] <= res["ess_median"] <= 64
    row = next(x for x in evaluation.format_table(res).splitlines() if "median / minimum" in x)
    assert f"{res['ess_median']:.1f} / {res['ess_min']:.3f}" in row


def test_test_binarization_is_recorded_and_reproducible():
    """The documented recipe (seed 1234, transforms.binarize over the whole test split)
    makes exactly the test images that `load` gives."""
    info = data.eval_binarization("dynamic")
    assert info["seed"] == 1234 and "transforms.binarize" in info["method"]
    assert data.eval_binarization("none") is None
    gray = data.load("digits", binarize="none").test.x
    made = transforms.binarize(gray, torch.Generator().manual_seed(info["seed"]))
    assert torch.equal(made, data.load("digits", binarize="dynamic").test.x)
    readme = (ROOT / "README.md").read_text()
    assert "seed 1234" in readme and "transforms.binarize" in readme


def test_eval_refreshes_the_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--out", str(run),
                 "--quiet"]) == 0
    before = (run / "report.html").read_text()
    assert "<code>aevb eval RUN</code> for the importance-sampled" in before
    assert main(["eval", str(run), "--nll-samples", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"report updated: {run / 'report.html'}" in out
    after = (run / "report.html").read_text()
    assert "aevb eval RUN" not in after and "importance sampled, K = 20" in after
    ev = json.loads((run / "eval.json").read_text())
    assert ev["test_binarization"]["seed"] == 1234
    assert f"{ev['log_px']:.3f}".rstrip("0").rstrip(".") in after
    assert after.count("<img") == before.count("<img") > 0  # the figures kept, none redrawn
    assert main(["eval", str(run), "--nll-samples", "5", "--no-progress", "-o",
                 str(tmp_path / "other.json")]) == 0  # elsewhere: the report keeps eval.json's
    assert "report updated" not in capsys.readouterr().out
    assert (run / "report.html").read_text() == after
