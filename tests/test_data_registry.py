"""The registry: the embedded default dataset, the listing helpers, unknown names."""
import pytest
import torch

from aevb import data
from aevb.data import DataError


def test_digits_is_the_embedded_default():
    ds = data.load()
    assert ds.name == "digits" and ds.shape == (1, 8, 8) and ds.num_classes == 10
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert 0.0 == ds.train.x.min() and ds.train.x.max() == 1.0
    assert sorted(set(ds.test.y.tolist())) == list(range(10))


def test_available_and_describe():
    names = data.available()
    assert {"digits", "mnist", "fashion-mnist", "mnist-offline", "cifar10"} <= set(names)
    assert names[-2:] == ["folder:PATH", "npz:PATH"]
    text = data.describe().splitlines()
    assert len(text) == len(names)
    line = next(t for t in text if t.startswith("cifar10 "))
    assert "binary version" in line and "32x32" in line


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(DataError, match="unknown dataset 'mnits'; available: cifar10, digits"):
        data.load("mnits")
