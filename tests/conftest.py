"""Shared fixtures. Real MNIST lives beside the project in ../shared/data/mnist (never in
the repository); tests that need it skip, saying why, where it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("AEVB_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {MNIST_DIR} (set AEVB_MNIST_DIR)")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread in the test process: the tests' tiny nets gain nothing from two,
    and on a busy 2-core machine two threads per process make every step many times slower.
    Subprocesses (CLI, torchrun) keep the library's own default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=["0", "1"], ids=["mkl", "onednn"])
def kernel(request, monkeypatch):
    """Each Linear kernel in turn: AEVB_ONEDNN=0 (F.linear) or 1 (oneDNN, no measurement)."""
    import aevb.nets.linear as L
    monkeypatch.setenv("AEVB_ONEDNN", request.param)
    monkeypatch.setattr(L, "_OK", None)
    monkeypatch.setattr(L, "_CHOICE", {})
    if request.param == "1" and not L.onednn_ok():
        pytest.skip("oneDNN's linear is not available in this torch build")
    return request.param
