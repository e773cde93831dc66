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
