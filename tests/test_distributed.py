"""Data-parallel training for real: two CPU processes (gloo) under torchrun; device
selection and mixed precision (on the CPU: no GPU here)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import aevb
from aevb import data, distributed
from aevb.cli import main
from aevb.serialization import load_tensors
from aevb.training import TrainingError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402

needs_dist = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def torchrun(out, epochs, **kw):
    path = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]  # keep a PYTHONPATH of aevb's sources
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "ddp_worker.py"), str(out), str(epochs)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def weights(path):
    tensors, meta = load_tensors(path)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}, meta


@needs_dist
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    proc = torchrun(tmp_path / "ddp", 3)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out.decode()[-3000:]
    single = ddp_worker.run(tmp_path / "single", 3)
    ddp, meta = weights(tmp_path / "ddp" / "checkpoint.safetensors")
    one, _ = weights(tmp_path / "single" / "checkpoint.safetensors")
    assert ddp.keys() == one.keys() and any(k.startswith("ema.") for k in one)  # the weight average too
    for k in one:
        assert torch.allclose(ddp[k], one[k], atol=1e-4, rtol=1e-4), k
    # metrics were reduced over both ranks: the same numbers as one process sees
    assert meta["trainer"]["history"][-1]["test_elbo"] == pytest.approx(single.last["test_elbo"], abs=1e-3)
    assert meta["trainer"]["history"][-1]["train_elbo"] == pytest.approx(single.last["train_elbo"], abs=1e-3)
    # only rank 0 wrote files: one checkpoint, one metrics line per epoch
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 3


@needs_dist
def test_killing_one_rank_leaves_a_valid_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "run"
    proc = torchrun(out, 400)
    ckpt = out / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not (ckpt.exists() and Path(f"{out}.pid1").exists()) and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint written in time"
    time.sleep(1.0)
    os.kill(int(Path(f"{out}.pid1").read_text()), signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    model = aevb.load(ckpt)                     # loads: complete, finite
    assert all(torch.isfinite(p).all() for p in model.parameters())
    done = weights(ckpt)[1]["trainer"]["epoch"]
    assert done >= 1
    run = ddp_worker.train(model, aevb.data.load("digits", binarize="static", limit=1280), epochs=done + 1,
                           batch_size=64, lr=3e-3, out=out, resume=True, progress=False, tensorboard=False,
                           ema=ddp_worker.EMA)
    assert run.last["epoch"] == done + 1 and len(run.history) == done + 1


# ----------------------------------------------------------------------------- devices, precision
def test_auto_device_is_the_local_ranks_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU is available; use --device cpu"):
        distributed.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.pick_device("auto", local_rank=3) == torch.device("cuda:3")
    assert distributed.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        distributed.pick_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where there is no GPU")
def test_asking_for_a_missing_gpu_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(TrainingError, match="no CUDA GPU"):
        aevb.train(aevb.VAE((1, 8, 8), 2, hidden=(8,)), data.load("digits"), epochs=1,
                   device="cuda", progress=False)
    assert main(["train", "--dataset", "digits", "--device", "cuda", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "aevb train: error: device 'cuda' asked for, but no CUDA GPU is available; use --device cpu"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_to_nearly_the_fp32_model(precision):
    """Autocast (bf16; fp16 with loss scaling) on the CPU: the same run reaches nearly the
    same test ELBO as in fp32, and the weights stay fp32."""
    ds = data.load("digits", binarize="dynamic")
    elbo, computed_in = {}, {}
    for p in ("fp32", precision):
        torch.manual_seed(0)
        model = aevb.VAE(ds.shape, 4, hidden=(64,))
        def hook(module, inputs, out, p=p):  # the dtype the decoder computes in while training
            if module.training:
                computed_in.setdefault(p, out.dtype)
        model.decoder.register_forward_hook(hook)
        run = aevb.train(model, ds, epochs=8, lr=3e-3, precision=p, progress=False, tensorboard=False)
        assert all(w.dtype == torch.float32 for w in model.parameters())
        elbo[p] = run.last["test_elbo"]
    assert computed_in == {"fp32": torch.float32,
                           precision: torch.bfloat16 if precision == "bf16" else torch.float16}
    assert abs(elbo[precision] - elbo["fp32"]) < 1.0, elbo
