"""Thread settings compared: the issue-2 training run (offline MNIST, MLP 784-400-400-20,
batch 100) under several OpenMP and aevb thread settings, on a quiet machine and with one
competing busy process, interleaved over repeats; medians of the training seconds.

    python benchmarks/threads.py [--epochs 6] [--repeats 3]

Each setting needs its own process: libgomp reads its variables when torch is loaded.
"""
import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXED = {"AEVB_THREADS": str(os.cpu_count() or 1)}  # all CPUs, never adapted to the load
SETTINGS = {
    "aevb default (spin 30k, threads adapt)": {},
    "spin 30k, threads fixed": FIXED,
    "spin 1k (earlier default), fixed": {"GOMP_SPINCOUNT": "1000", **FIXED},
    "libgomp default (spin 300k), fixed": {"GOMP_SPINCOUNT": "300000", **FIXED},
    "OMP_WAIT_POLICY=PASSIVE, fixed": {"OMP_WAIT_POLICY": "PASSIVE", **FIXED},
    "OMP_WAIT_POLICY=ACTIVE, fixed": {"OMP_WAIT_POLICY": "ACTIVE", **FIXED},
    "PASSIVE, 1 thread": {"OMP_WAIT_POLICY": "PASSIVE", "AEVB_THREADS": "1"},
}


def seconds(extra: dict, epochs: int) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "AEVB_THREADS")}
    env.update(extra)
    out = subprocess.run([sys.executable, str(HERE / "offline_mnist.py"), "--epochs", str(epochs)],
                         env=env, capture_output=True, text=True, timeout=900, check=True).stdout
    return float(out.strip().splitlines()[-1].split("train_seconds=")[1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            times = {name: [] for name in SETTINGS}
            for _ in range(args.repeats):
                for name, extra in SETTINGS.items():
                    times[name].append(seconds(extra, args.epochs))
        finally:
            if hog:
                hog.kill()
        print(f"\n{'with one busy process' if busy else 'quiet machine'}: training seconds for "
              f"{args.epochs} epochs (median of {args.repeats})")
        for name, t in times.items():
            print(f"  {name:<38} {statistics.median(t):6.1f}   {' '.join(f'{v:.1f}' for v in t)}")


if __name__ == "__main__":
    main()
