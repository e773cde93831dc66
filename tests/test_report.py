"""The HTML report (self-contained, with the expected sections, rendered by a real headless
browser), `aevb eval` / `aevb report` / `aevb train` writing it, and `aevb sweep`."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from aevb import cli, report, sweep

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ('id="numbers"', 'id="curves"', 'id="figures"', 'id="config"', 'id="fig-samples"',
            'id="fig-recon"', 'id="fig-manifold"', 'id="fig-latent"', 'id="fig-interpolate"',
            'id="fig-denoise"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small real run on the embedded digits: `aevb train` writes the report at its end."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--latent", "2", "--hidden", "32",
                     "--out", str(out), "--no-progress"]) == 0
    return out


def images_in(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_train_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    for section in SECTIONS:
        assert section in page
    assert len(images_in(page)) == 7  # curves + six figures of a 2-D Gaussian VAE
    # nothing is fetched from elsewhere: no external images, scripts or style sheets
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "The last epoch of metrics.jsonl" in page and "test_elbo" in page
    assert (run_dir / "figures" / "manifold.png").exists()


def test_report_shows_eval_numbers_once_evaluated(run_dir, capsys):
    assert cli.main(["eval", str(run_dir), "--nll-samples", "50", "--limit", "100",
                     "--denoise", "0.1,0.3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "log p(x), IS K=50" in printed and "active units" in printed
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["n"] == 100 and ev["nll_samples"] == 50 and ev["dataset"] == "digits"
    assert ev["log_px"] > ev["elbo_is"]
    assert [d["rate"] for d in ev["denoising"]] == [0.1, 0.3]
    out = report.write_report(run_dir, out=run_dir / "full.html", tsne=False)
    page = out.read_text()
    assert "importance sampled, K = 50" in page and "active units" in page
    assert "Denoising error against the noise rate" in page
    assert f"{ev['log_px']:.3f}".rstrip("0").rstrip(".") in page


def test_report_without_the_data_keeps_what_it_can(run_dir, tmp_path):
    cfg = json.loads((run_dir / "config.json").read_text())
    moved = tmp_path / "run"
    moved.mkdir()
    for f in ("checkpoint.safetensors", "metrics.jsonl"):
        (moved / f).write_bytes((run_dir / f).read_bytes())
    cfg["dataset"] = "mnist"
    cfg["data_dir"] = str(tmp_path / "nowhere")
    (moved / "config.json").write_text(json.dumps(cfg))
    page = report.write_report(moved, fast=True).read_text()
    assert "Dataset not available" in page
    assert 'id="fig-samples"' in page and 'id="fig-manifold"' in page
    assert "needs the test images" in page  # recon, latent, ... say why they are missing


def test_cli_report_command(run_dir, capsys):
    assert cli.main(["report", str(run_dir), "--fast", "-o", str(run_dir / "r.html")]) == 0
    assert capsys.readouterr().out.strip().endswith("r.html")
    assert 'id="numbers"' in (run_dir / "r.html").read_text()


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    html_file = run_dir / "report.html"
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,2000", html_file.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = mpimg.imread(str(shot))
    assert img.shape[:2] == (2000, 1200)
    rgb = img[..., :3]
    assert rgb.std() > 0.1, "the screenshot is blank"
    # the page's top shows text and the training curves: a good share of non-white pixels,
    # and the images (dark MNIST-style grids) further down
    assert (rgb.mean(axis=2) < 0.5).mean() > 0.02


def test_sweep_trains_one_run_per_value_and_plots_them(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--latent", "2,3", "--dataset", "digits", "--epochs", "1", "--set", "hidden=16",
            "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    info = json.loads((out / "sweep.json").read_text())
    assert info["key"] == "latent_dim" and info["values"] == [2, 3]
    for d in ("latent_dim-2", "latent_dim-3"):
        cfg = json.loads((out / d / "config.json").read_text())
        assert cfg["hidden"] == [16] and cfg["model_config"]["latent_dim"] == int(d[-1])
    assert (out / "latent_dim-3" / "report.html").exists()
    img = mpimg.imread(str(out / "samples.png"))
    assert img[..., :3].std() > 0.05
    capsys.readouterr()
    # a second call reuses the complete runs; the generic form is the same sweep
    assert cli.main(["sweep", "--key", "latent_dim", "--values", "2,3", "--dataset", "digits",
                     "--epochs", "1", "--set", "hidden=16", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("reused") == 2
    assert cli.main(["plot", str(out), "latent-sweep", "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


def test_beta_sweep_plots_the_reconstruction_kl_tradeoff(tmp_path):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--beta", "0.5,4", "--dataset", "digits", "--epochs", "3", "--set",
                     "hidden=32", "--set", "latent_dim=4", "--out", str(out), "--no-progress"]) == 0
    last = {b: json.loads((out / f"beta-{b}" / "metrics.jsonl").read_text().splitlines()[-1])
            for b in ("0.5", "4")}
    assert last["4"]["test_kl"] < last["0.5"]["test_kl"]      # a larger beta buys a smaller KL
    assert last["4"]["test_rec"] < last["0.5"]["test_rec"]    # with a worse reconstruction
    assert mpimg.imread(str(out / "tradeoff.png"))[..., :3].std() > 0.05


def test_sweep_refuses_bad_requests(tmp_path, capsys):
    assert cli.main(["sweep", "--out", str(tmp_path)]) == 2
    assert "exactly one sweep" in capsys.readouterr().err
    assert cli.main(["sweep", "--key", "latnt_dim", "--values", "2", "--out", str(tmp_path)]) == 2
    assert "latent_dim" in capsys.readouterr().err  # did you mean
    assert cli.main(["sweep", "--latent", "2,x", "--out", str(tmp_path)]) == 2


def test_a_signal_stops_a_sweep_with_its_exit_status_and_the_same_command_goes_on(tmp_path, capsys,
                                                                                 monkeypatch):
    import aevb.runs
    real, calls = aevb.runs.train_config, []

    def stopped_second_run(cfg, **kw):  # as if SIGTERM arrived during the second run
        run, ds = real(cfg, **kw)
        calls.append(cfg.latent_dim)
        if len(calls) == 2:
            run.stopped = "SIGTERM"
        return run, ds

    monkeypatch.setattr(aevb.runs, "train_config", stopped_second_run)
    args = ["sweep", "--latent", "2,3,4", "--dataset", "digits", "--epochs", "1", "--set", "hidden=8",
            "--out", str(tmp_path), "--no-progress"]
    assert cli.main(args) == 143
    assert "stopped by SIGTERM; run the same command again" in capsys.readouterr().out
    assert calls == [2, 3] and not (tmp_path / "sweep.json").exists()
    monkeypatch.setattr(aevb.runs, "train_config", real)
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "sweep.json").read_text())["values"] == [2, 3, 4]
