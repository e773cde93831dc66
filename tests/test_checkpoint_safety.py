"""Checkpoint loading is total and safe: any file either loads or raises `CheckpointError`
(fuzzed with random bytes, truncations, bit flips and odd metadata), and nothing is ever
unpickled, so a malicious pickle where a checkpoint is expected never runs."""
from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aevb
from aevb import VAE, data, train
from aevb.models import load as load_model
from aevb.serialization import CheckpointError, load_tensors, save_tensors
from aevb.checkpoint import load_checkpoint
from aevb.optim import make_optimizer



def tiny():
    return VAE.mlp((1, 8, 8), latent_dim=2, hidden=(8,))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real training checkpoint (2 epochs on digits) and a scratch file path."""
    d = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    ds = data.load("digits", binarize="dynamic")
    train(tiny(), ds, epochs=2, batch_size=300, out=d / "run", progress=False, tensorboard=False)
    return Good((d / "run" / "checkpoint.safetensors").read_bytes(), d / "case.safetensors")


class Good(tuple):
    def __new__(cls, raw, path):
        return super().__new__(cls, (raw, path))

    def __repr__(self):  # keeps hypothesis' report of a failing example short
        return f"Good(<{len(self[0])} bytes>, {self[1]})"


def load_all(path: Path) -> int:
    """Try every loader on `path`; each must succeed or raise CheckpointError. Returns how
    many succeeded."""
    ok = 0
    for loader in (lambda: load_tensors(path), lambda: load_model(path), lambda: _resume(path)):
        try:
            loader()
            ok += 1
        except CheckpointError as e:
            assert str(path) in str(e) and "\n" not in str(e)
    return ok


def _resume(path):
    model = tiny()
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    load_checkpoint(path, model, opt)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def header_size(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(good, data):
    raw, path = good
    assert load_all_bytes(path, raw) == 3  # the intact file loads everywhere
    kind = data.draw(st.sampled_from(["random", "truncate", "flip-header", "flip-anywhere"]))
    if kind == "random":
        case = data.draw(st.binary(max_size=4096))
    elif kind == "truncate":
        case = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        limit = header_size(raw) if kind == "flip-header" else len(raw)
        bits = data.draw(st.lists(st.integers(0, 8 * limit - 1), min_size=1, max_size=4))
        case = bytearray(raw)
        for b in bits:
            case[b // 8] ^= 1 << (b % 8)
        case = bytes(case)
    load_all_bytes(path, case)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)


@FUZZ
@given(st.data())
def test_valid_safetensors_with_odd_contents_load_or_raise(good, data):
    """Well-formed files whose metadata or tensors are wrong: a part replaced by arbitrary
    JSON, a tensor dropped, reshaped or made non-finite."""
    raw, path = good
    tensors, meta = load_tensors_bytes(path, raw)
    what = data.draw(st.sampled_from(["meta", "trainer", "optimizer", "model_config", "drop",
                                      "reshape", "nan"]))
    key = data.draw(st.sampled_from(sorted(tensors)))
    if what == "meta":
        meta = data.draw(JSON)
    elif what in ("trainer", "optimizer", "model_config"):
        part = data.draw(st.sampled_from([None] + sorted(meta[what]) if isinstance(meta[what], dict) else [None]))
        if part is None:
            meta[what] = data.draw(JSON)
        else:
            meta[what][part] = data.draw(JSON)
    elif what == "drop":
        del tensors[key]
    elif what == "reshape":
        tensors[key] = torch.zeros(data.draw(st.lists(st.integers(0, 5), max_size=3)), dtype=tensors[key].dtype)
    elif tensors[key].is_floating_point() and tensors[key].numel():
        tensors[key] = tensors[key].clone().flatten().index_fill(0, torch.tensor([0]), float("nan")).view_as(tensors[key])
    if isinstance(meta, dict):
        save_tensors(path, tensors, meta)
    else:  # metadata that is not an object at all
        from safetensors.torch import save
        path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()},
                              metadata={"json": json.dumps(meta)}))
    load_all(path)


def load_all_bytes(path, content: bytes) -> int:
    path.write_bytes(content)
    return load_all(path)


def load_tensors_bytes(path, content: bytes):
    path.write_bytes(content)
    return load_tensors(path)


def test_a_single_nan_weight_is_refused_on_resume(good, tmp_path):
    raw, _ = good
    path = tmp_path / "checkpoint.safetensors"
    tensors, meta = load_tensors_bytes(path, raw)
    tensors["model.decoder.net.0.weight"] = tensors["model.decoder.net.0.weight"].clone()
    tensors["model.decoder.net.0.weight"][0, 0] = float("nan")
    save_tensors(path, tensors, meta)
    with pytest.raises(CheckpointError, match="non-finite"):
        _resume(path)


@pytest.mark.parametrize("kernels", [[], {"100x64x48": 1}, {"\u00b2x1x1": True}, {"100x64": True},
                                     {"1x2x3x4": False}])
def test_a_malformed_kernel_choice_is_refused_on_resume(good, tmp_path, kernels):
    """The kernel choices a checkpoint records (ROWSxINxOUT: true/false) are checked before
    resume takes them back."""
    raw, _ = good
    path = tmp_path / "checkpoint.safetensors"
    tensors, meta = load_tensors_bytes(path, raw)
    save_tensors(path, tensors, {**meta, "trainer": {**meta["trainer"], "kernels": {"100x64x48": True}}})
    _resume(path)  # a well-formed one loads
    save_tensors(path, tensors, {**meta, "trainer": {**meta["trainer"], "kernels": kernels}})
    with pytest.raises(CheckpointError, match="kernels"):
        _resume(path)


# ----------------------------------------------------------------------------- no pickles
class Payload:
    """Unpickling this creates a marker file (it could as well run os.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickles_are_refused_and_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    raw = pickle.dumps({"encoder.net.0.weight": Payload(marker)})
    pickle.loads(raw).clear()  # the payload is live: unpickling does create the marker
    assert marker.exists()
    marker.unlink()
    torch.save({"state_dict": Payload(marker)}, tmp_path / "model.pt")
    zipped = (tmp_path / "model.pt").read_bytes()  # torch.save: a zip archive holding a pickle

    run = tmp_path / "run"
    train(tiny(), data.load("digits"), epochs=0, out=run, progress=False)  # a run directory, no checkpoint yet
    saved = tiny().save(tmp_path / "saved")
    places = []
    for content in (raw, zipped):
        (run / "checkpoint.safetensors").write_bytes(content)
        (saved / "model.safetensors").write_bytes(content)
        (tmp_path / "weights.pt").write_bytes(content)
        (tmp_path / "weights.ckpt").write_bytes(content)
        places += [run, run / "checkpoint.safetensors", saved, saved / "model.safetensors",
                   tmp_path / "weights.pt", tmp_path / "weights.ckpt"]
        with monkeypatch.context() as m:
            for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
                m.setattr(mod, name, _refuse)
            for place in places[-6:]:
                with pytest.raises(CheckpointError, match="pickle") as e:
                    aevb.load(place)
                assert "never unpickles" in str(e.value) or "never loads pickled" in str(e.value)
            with pytest.raises(CheckpointError, match="pickle"):
                train(tiny(), data.load("digits"), epochs=1, out=run, resume=True, progress=False)
    assert not marker.exists()
    assert len(places) == 12


def _refuse(*a, **k):
    raise AssertionError("something tried to unpickle")


def test_safetensors_file_that_starts_like_a_pickle_still_loads(tmp_path):
    """The pickle check only words the error: a real checkpoint whose header length happens
    to begin with a pickle opcode (0x80 0x02) loads normally."""
    path = tmp_path / "x.safetensors"
    header = json.dumps({"__metadata__": {"json": json.dumps({"pad": "x"})},
                         "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (0x0280 - len(header))  # the format allows padding with spaces
    path.write_bytes((0x0280).to_bytes(8, "little") + header + torch.ones(2).numpy().tobytes())
    assert path.read_bytes()[:2] == b"\x80\x02"
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(2)) and meta["pad"].startswith("x")


@pytest.mark.parametrize("fail_at,error", [("fsync", KeyboardInterrupt), ("replace", OSError)])
def test_interrupted_save_keeps_the_old_file_and_no_temporaries(tmp_path, monkeypatch, fail_at, error):
    from aevb import serialization
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"w": torch.zeros(3)}, {"v": 1})
    old = path.read_bytes()

    def fail(*a):
        raise error(28, "No space left on device") if error is OSError else error()
    monkeypatch.setattr(serialization.os, fail_at, fail)
    with pytest.raises(error):
        save_tensors(path, {"w": torch.ones(3)}, {"v": 2})
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path, umask):
    """A file written atomically starts as an owner-only temporary; it must end with the mode
    open() would give (0o666 less the umask), so that run outputs are as readable as any."""
    from aevb.serialization import atomic_write
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "plain") == 0o666 & ~umask
