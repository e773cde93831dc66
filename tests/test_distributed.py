"""Data-parallel training for real: two CPU processes (gloo) under torchrun."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import aevb
from aevb.serialization import load_tensors

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def torchrun(out, epochs, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "ddp_worker.py"), str(out), str(epochs)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def weights(path):
    tensors, meta = load_tensors(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, meta


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    proc = torchrun(tmp_path / "ddp", 3)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out.decode()[-3000:]
    single = ddp_worker.run(tmp_path / "single", 3)
    ddp, meta = weights(tmp_path / "ddp" / "checkpoint.safetensors")
    one, _ = weights(tmp_path / "single" / "checkpoint.safetensors")
    assert ddp.keys() == one.keys()
    for k in one:
        assert torch.allclose(ddp[k], one[k], atol=1e-4, rtol=1e-4), k
    # metrics were reduced over both ranks: the same numbers as one process sees
    assert meta["trainer"]["history"][-1]["test_elbo"] == pytest.approx(single.last["test_elbo"], abs=1e-3)
    assert meta["trainer"]["history"][-1]["train_elbo"] == pytest.approx(single.last["train_elbo"], abs=1e-3)
    # only rank 0 wrote files: one checkpoint, one metrics line per epoch
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 3


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
                           batch_size=64, lr=3e-3, out=out, resume=True, progress=False, tensorboard=False)
    assert run.last["epoch"] == done + 1 and len(run.history) == done + 1
