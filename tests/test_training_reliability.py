"""The training loop under trouble, in-process: resume is exact (also mid-epoch after a
signal), the divergence guard skips / counts / halves the learning rate / stops and never
writes a non-finite checkpoint, and run-directory problems are reported before training."""
from __future__ import annotations

import errno
import os
import signal
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from aevb import VAE, data, train
from aevb.serialization import load_tensors
from aevb.rundir import RunDirError
from aevb.training import TrainingError, _GradNorm

SHAPE = (1, 8, 8)



@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="dynamic")  # 1437 train images: 15 batches of 100


def fresh(cls=VAE, **kw):
    torch.manual_seed(1)
    return cls(SHAPE, latent_dim=2, hidden=(16,), **kw)


def fit(model, ds, out, **kw):
    kw = {"epochs": 4, "batch_size": 100, "lr": 3e-3, "seed": 3, "progress": False,
          "tensorboard": False, **kw}
    return train(model, ds, out=out, **kw)


def assert_same(run_dir_a: Path, run_dir_b: Path):
    (a, ma), (b, mb) = (load_tensors(d / "checkpoint.safetensors") for d in (run_dir_a, run_dir_b))
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ma["trainer"].pop("history")) == strip(mb["trainer"].pop("history"))
    assert ma["trainer"] == mb["trainer"]


def test_resume_equals_uninterrupted_training(digits, tmp_path):
    whole = fit(fresh(), digits, tmp_path / "whole")
    first = fit(fresh(), digits, tmp_path / "split", epochs=2)
    assert len(first.history) == 2
    rest = fit(fresh(), digits, tmp_path / "split", resume=True)
    assert [r["epoch"] for r in rest.history] == [1, 2, 3, 4]
    for p, q in zip(whole.model.parameters(), rest.model.parameters()):
        assert torch.equal(p, q)
    assert_same(tmp_path / "whole", tmp_path / "split")
    assert (tmp_path / "split" / "metrics.jsonl").read_text().count("\n") == 4


def test_resume_takes_back_the_kernel_choices(digits, tmp_path, monkeypatch):
    """The measured Linear kernel (oneDNN or MKL, aevb.nets.linear) is saved with the
    checkpoint and taken back on resume: a resumed process that would have measured the
    other kernel still continues bit for bit. Without taking it back it would not (the two
    kernels round differently)."""
    import aevb.nets.linear as L
    from aevb import training
    monkeypatch.delenv("AEVB_ONEDNN", raising=False)
    monkeypatch.setattr(L, "_OK", None)
    if not L.onednn_ok():
        pytest.skip("oneDNN's linear is not available in this torch build")

    def process(measures_onednn: bool):  # a fresh process whose measurement picks one kernel
        monkeypatch.setattr(L, "_CHOICE", {})
        monkeypatch.setattr(L, "_measure", lambda *shape: measures_onednn)

    def model():  # 64 -> 48 -> ...: layers of more than 32 inputs, whose kernel is measured
        torch.manual_seed(1)
        return VAE(SHAPE, latent_dim=2, hidden=(48,))
    process(True)
    fit(model(), digits, tmp_path / "whole")
    kernels = load_tensors(tmp_path / "whole" / "checkpoint.safetensors")[1]["trainer"]["kernels"]
    assert kernels and all(kernels.values()) and "100x64x48" in kernels
    for restore, name in ((True, "split"), (False, "forgot")):
        process(True)
        fit(model(), digits, tmp_path / name, epochs=2)
        process(False)
        if not restore:
            monkeypatch.setattr(training.linear, "restore_choices", lambda saved: None)
        fit(model(), digits, tmp_path / name, resume=True)
    assert_same(tmp_path / "whole", tmp_path / "split")
    with pytest.raises(AssertionError):
        assert_same(tmp_path / "whole", tmp_path / "forgot")


def before_each_step(monkeypatch, action):
    """Calls `action()` before every training step. The model stays the plain VAE, so the
    steps are those an unpatched run takes."""
    from aevb import training
    real = training.step

    def step(loop, x, y):
        action()
        return real(loop, x, y)
    monkeypatch.setattr(training, "step", step)


def signal_at(monkeypatch, at: int, sig):
    """Training sends itself `sig` before its step `at` (counted over training steps)."""
    calls = [0]

    def action():
        if calls[0] == at:
            os.kill(os.getpid(), sig)
        calls[0] += 1
    before_each_step(monkeypatch, action)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_mid_epoch_and_resume_is_exact(digits, tmp_path, sig, monkeypatch):
    opts = {"warmup_epochs": 1.5, "noise": 0.1}  # KL warm-up and input noise use the step / RNG
    whole = fit(fresh(), digits, tmp_path / "whole", **opts)
    old = signal.getsignal(sig)
    with monkeypatch.context() as m:
        signal_at(m, 22, sig)
        run = fit(fresh(), digits, tmp_path / "cut", **opts)
    assert signal.getsignal(sig) is old  # handlers restored
    assert run.stopped == signal.Signals(sig).name and len(run.history) == 1
    _, meta = load_tensors(tmp_path / "cut" / "checkpoint.safetensors")
    assert (meta["trainer"]["epoch"], meta["trainer"]["step"], meta["trainer"]["global_step"]) == (1, 8, 23)
    fit(fresh(), digits, tmp_path / "cut", resume=True, **opts)
    assert_same(tmp_path / "whole", tmp_path / "cut")
    assert whole.stopped is None


# ----------------------------------------------------------------------------- divergence
class Flaky(VAE):
    """A non-finite loss on the training steps in `nan_loss`, a finite loss with non-finite
    gradients on those in `nan_grad`, weights set to inf on the step in `poison`."""

    def __init__(self, *a, nan_loss=(), nan_grad=(), poison=(), **kw):
        super().__init__(*a, **kw)
        self.nan_loss, self.nan_grad, self.poison, self.calls = set(nan_loss), set(nan_grad), set(poison), 0

    def objective(self, x, y=None, **kw):
        i = self.calls if self.training else -1
        self.calls += self.training
        if i in self.poison:
            with torch.no_grad():
                next(self.parameters()).fill_(float("inf"))
        terms = super().objective(x, y, **kw)
        if i in self.nan_loss:
            terms["loss"] = terms["loss"] * float("nan")
        if i in self.nan_grad:  # sqrt'(0) = inf: the loss stays finite, gradients become NaN
            terms["loss"] = terms["loss"] + torch.sqrt(0 * next(self.parameters()).sum())
            assert torch.isfinite(terms["loss"])
        return terms


def adam_steps(run_dir) -> float:
    tensors, meta = load_tensors(run_dir / "checkpoint.safetensors")
    return float(tensors["optim.0.step"]), meta["optimizer"]["param_groups"][0]["lr"]


def test_non_finite_steps_are_skipped_and_counted(digits, tmp_path):
    run = fit(fresh(Flaky, nan_loss={3, 4}, nan_grad={17}), digits, tmp_path / "r", epochs=2)
    assert [r["skipped_steps"] for r in run.history] == [2, 3]
    steps, lr = adam_steps(tmp_path / "r")
    assert steps == 30 - 3  # the optimizer took no step on the skipped batches
    assert lr == 3e-3  # a few isolated skips leave the learning rate alone
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(torch.isfinite(torch.tensor(v)) for r in run.history for k, v in r.items())


def test_gradient_norm_taken_during_backward_equals_the_norm_after_it(digits, tmp_path):
    model = fresh()
    params = list(model.parameters())
    with _GradNorm(params, early=True) as early:
        model.objective(digits.train.x[:100])["loss"].backward()
        got = early()
    assert torch.allclose(got, torch.nn.utils.get_total_norm([p.grad for p in params]), rtol=1e-6)
    assert got > 0 and not early.norms  # each norm used once
    run = fit(fresh(), digits, tmp_path / "r", epochs=1, clip_grad=0.5)
    assert all(not p._post_accumulate_grad_hooks for p in params + list(run.model.parameters()))


def test_repeated_skips_halve_the_learning_rate(digits, tmp_path):
    model = fresh(Flaky, nan_loss=set(range(2, 14)), nan_grad=set(range(20, 30)))
    with pytest.warns(UserWarning, match="10 non-finite steps in a row; learning rate halved") as w:
        run = fit(model, digits, tmp_path / "r", epochs=3)
    assert len([x for x in w if "halved" in str(x.message)]) == 2
    assert run.history[-1]["skipped_steps"] == 22
    steps, lr = adam_steps(tmp_path / "r")
    assert (steps, lr) == (45 - 22, 3e-3 / 4)


def test_too_many_skips_stop_with_a_clear_error_keeping_the_last_good_checkpoint(digits, tmp_path):
    saved = {}
    snapshot = lambda run, rec: saved.__setitem__(  # noqa: E731
        rec["epoch"], (run.dir / "checkpoint.safetensors").read_bytes())
    model = fresh(Flaky, nan_loss=set(range(20, 100)))
    with pytest.warns(UserWarning), pytest.raises(TrainingError) as e:
        fit(model, digits, tmp_path / "r", epochs=4, max_skips=15, callbacks=[snapshot])
    msg = str(e.value)
    assert msg.startswith("training diverged: 16 steps with non-finite loss or gradients (epoch 3)")
    assert "lower the learning rate" in msg and str(tmp_path / "r") in msg and "\n" not in msg
    assert sorted(saved) == [1, 2]
    assert (tmp_path / "r" / "checkpoint.safetensors").read_bytes() == saved[2]
    tensors, meta = load_tensors(tmp_path / "r" / "checkpoint.safetensors")
    assert meta["trainer"]["epoch"] == 2 and meta["trainer"]["skipped"] == 10
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_non_finite_weights_are_never_written(digits, tmp_path):
    saved = {}
    snapshot = lambda run, rec: saved.__setitem__(  # noqa: E731
        rec["epoch"], (run.dir / "checkpoint.safetensors").read_bytes())
    model = fresh(Flaky, poison={20})  # weights become inf in epoch 2; every later step is skipped
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match="refusing to write a checkpoint "
                                                  "with non-finite weights"):
        fit(model, digits, tmp_path / "r", epochs=3, callbacks=[snapshot])
    assert sorted(saved) == [1]
    assert (tmp_path / "r" / "checkpoint.safetensors").read_bytes() == saved[1]


def test_nan_in_the_data_skips_those_batches(tmp_path):
    ds = data.load("digits")  # intensities, no binarization
    ds.train.x[5, 0, 3, 3] = float("nan")  # one bad image: one bad batch per epoch
    torch.manual_seed(1)
    model = VAE(SHAPE, latent_dim=2, hidden=(16,), likelihood="gaussian", sigma=0.3)
    run = fit(model, ds, tmp_path / "r", epochs=3)
    assert [r["skipped_steps"] for r in run.history] == [1, 2, 3]
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert torch.isfinite(torch.tensor(run.last["test_elbo"]))


# ----------------------------------------------------------------------------- run directory
class Counting(VAE):
    calls = 0

    def objective(self, x, y=None, **kw):
        Counting.calls += 1
        return super().objective(x, y, **kw)


def test_full_disk_is_reported_before_training(digits, tmp_path, monkeypatch):
    import aevb.rundir
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(aevb.rundir.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 5000, 5000))
    Counting.calls = 0
    with pytest.raises(RunDirError, match=r"only 0\.0 MiB free at .* a checkpoint needs about"):
        fit(fresh(Counting), digits, tmp_path / "r")
    assert Counting.calls == 0
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


def test_read_only_run_directory_is_reported_before_training(digits, tmp_path, monkeypatch):
    """Tests run as root, for whom chmod does not stop writes: a read-only file system is
    simulated (EROFS from the write probe), and a path below a file gives a real ENOTDIR."""
    import aevb.rundir

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    Counting.calls = 0
    with monkeypatch.context() as m:
        m.setattr(aevb.rundir.tempfile, "mkstemp", erofs)
        with pytest.raises(RunDirError, match="is not writable .Read-only file system.; choose another"):
            fit(fresh(Counting), digits, tmp_path / "r")
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="is not writable .Not a directory."):
        fit(fresh(Counting), digits, tmp_path / "file" / "r")
    assert Counting.calls == 0


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(digits, tmp_path):
    out = tmp_path / "r"
    fit(fresh(), digits, out, epochs=0)  # what a kill during epoch 1 leaves: config.json only
    assert not (out / "checkpoint.safetensors").exists()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')  # ... maybe a metrics line too
    (out / ".checkpoint.safetensors.abc12345.tmp").write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="starting it from the beginning"):
        fit(fresh(), digits, out, epochs=2, resume=True)
    fit(fresh(), digits, tmp_path / "ref", epochs=2)
    assert_same(out, tmp_path / "ref")
    assert (out / "metrics.jsonl").read_text().count("\n") == 2
    assert not list(out.glob(".*.tmp"))


def test_existing_directories_are_protected(digits, tmp_path):
    out = tmp_path / "r"
    fit(fresh(), digits, out, epochs=1)
    with pytest.raises(RunDirError, match="already exists; pass --resume .* or --overwrite"):
        fit(fresh(), digits, out, epochs=1)
    fit(fresh(), digits, out, epochs=1, overwrite=True)  # a run directory may be replaced
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(RunDirError, match="not an aevb run directory"):
        fit(fresh(), digits, other, epochs=1, overwrite=True)
    assert (other / "keep.txt").read_text() == "precious"
    with pytest.raises(RunDirError, match="not an aevb run directory"):
        fit(fresh(), digits, tmp_path / "absent", resume=True)


def test_wrong_image_shape_is_a_clear_error(digits):
    with pytest.raises(TrainingError, match=r"model expects images of shape \(1, 28, 28\) but dataset "
                                            r"'digits' has \(1, 8, 8\)"):
        train(VAE((1, 28, 28), latent_dim=2, hidden=(8,)), digits, epochs=1, progress=False)
