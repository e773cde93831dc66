"""Importing aevb changes nothing in the process: in a fresh interpreter, `import aevb` and
every one of its modules leave os.environ, PyTorch's thread count and default dtype, the RNG,
torch.distributions' argument validation, glibc's malloc settings (no mallopt call) and
matplotlib's backend as they were. The speed settings apply only to aevb's own work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CHECK = """
    import ctypes, json, os, sys
    calls = []
    class Spy(ctypes.CDLL):  # records any mallopt call made through ctypes
        def __getattr__(self, name):
            if name == "mallopt":
                calls.append(name)
            return super().__getattr__(name)
    ctypes.CDLL = Spy
    import matplotlib, torch
    def state():
        return {"environ": dict(os.environ), "threads": torch.get_num_threads(),
                "interop": torch.get_num_interop_threads(),
                "validate_args": torch.distributions.Distribution._validate_args,
                "dtype": str(torch.get_default_dtype()), "grad": torch.is_grad_enabled(),
                "rng": torch.get_rng_state().sum().item(), "backend": repr(matplotlib.rcParams._get("backend"))}
    before = state()
    import aevb
    after_package = state()
    import importlib
    for name in MODULES:
        importlib.import_module(name)
    from aevb import VAE, train, load, data  # the lazily imported names too
    after = state()
    print(json.dumps({"before": before, "after_package": after_package, "after": after,
                      "mallopt": calls}))
"""
MODULES = ["aevb.anomaly", "aevb.checkpoint", "aevb.cli", "aevb.config", "aevb.data", "aevb.distributed",
           "aevb.distributions", "aevb.evaluation", "aevb.imputation", "aevb.models", "aevb.nets",
           "aevb.objectives", "aevb.optim", "aevb.plots", "aevb.report", "aevb.runs", "aevb.runtime",
           "aevb.samplers", "aevb.serialization", "aevb.sweep", "aevb.training", "aevb.__main__"]


def run_fresh(code: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "AEVB_THREADS", "AEVB_NO_TUNING")}
    out = subprocess.run([sys.executable, "-c", f"MODULES = {MODULES!r}\n" + textwrap.dedent(code)],
                         env={**clean, **env}, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_aevb_changes_nothing():
    res = run_fresh(CHECK)
    assert res["before"] == res["after_package"] == res["after"], {
        k: (res["before"][k], res["after"][k]) for k in res["before"] if res["before"][k] != res["after"][k]}
    assert res["before"]["validate_args"] is True  # torch's own default, left on for everyone else
    assert res["mallopt"] == []


def test_import_aevb_changes_nothing_with_aevb_threads_set():
    """AEVB_THREADS is read when aevb works (train, evaluation, the command), not at import."""
    res = run_fresh(CHECK, AEVB_THREADS="1")
    assert res["before"]["threads"] == res["after"]["threads"]
    assert res["before"] == res["after"]


def test_the_check_sees_a_change():
    """Negative control: the same comparison notices a module that sets a thread count, an
    environment variable, the validation switch and calls mallopt when imported."""
    code = CHECK.replace("    import aevb\n", textwrap.indent(textwrap.dedent("""
        torch.set_num_threads(1 if torch.get_num_threads() > 1 else 2)
        os.environ["GOMP_SPINCOUNT"] = "1"
        torch.distributions.Distribution.set_default_validate_args(False)
        getattr(ctypes.CDLL(None), "mallopt")
        import aevb
    """), "    "))
    res = run_fresh(code)
    changed = {k for k in res["before"] if res["before"][k] != res["after_package"][k]}
    assert changed == {"environ", "threads", "validate_args"} and res["mallopt"] == ["mallopt"]


def test_import_aevb_does_not_load_torch():
    """`import aevb` alone imports nothing heavy, so that the aevb command can set the spin
    count before torch (and libgomp) load."""
    out = subprocess.run([sys.executable, "-c", "import sys, aevb; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
