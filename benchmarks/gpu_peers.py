"""aevb's training loop against the pytorch/examples-style loop on one device, in interleaved
rounds (not part of the tests; run by benchmarks/gpu.sh).

    python benchmarks/gpu_peers.py --device cuda --rounds 3 [--batch-size 100] [--json PATH]

Each round runs, one after the other and each in its own process, aevb.train on the MLP
VAE 784-400-400-20 with AEVB_GRAPH=1 (on CUDA its step replayed as a CUDA graph,
aevb.graphed), the same with AEVB_GRAPH=0 (the eager step), and benchmarks/peers/examples_style.py with the same data,
batch size and epochs; images/s of the epochs after the first. The ratios aevb / peer and
aevb / aevb without the graph are taken within each round and their medians reported. Data: the offline MNIST split where ../shared is
beside the checkout, else random images of its shape (said in the output).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

import result_files  # noqa: E402

DATA_DIR = HERE.parent.parent / "shared" / "data" / "mnist"


def aevb_worker(device: str, batch_size: int, epochs: int) -> dict:
    """Train with aevb.train; images/s over epochs 2.. (the per-epoch test pass excluded)."""
    import torch

    from aevb import VAE, data, train
    from examples_style import random_images
    if (DATA_DIR / "t10k-images-idx3-ubyte.gz").exists():
        ds, source = data.load("mnist-offline", binarize="dynamic", data_dir=str(DATA_DIR)), "mnist-offline"
    else:
        tr, te = random_images()
        ds, source = data.Dataset("random", data.Split(tr), data.Split(te[:1]), "dynamic"), "random"
    ds = data.Dataset(ds.name, ds.train, ds.test[:1], ds.binarize)  # test pass: one image
    torch.manual_seed(0)
    model = VAE(ds.shape, latent_dim=20, hidden=(400, 400))
    marks = []

    def tick(run, record):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    train(model, ds, epochs=epochs, batch_size=batch_size, device=device, progress=False,
          tensorboard=False, callbacks=[tick])
    per_epoch = [b - a for a, b in zip(marks, marks[1:])]
    return {"program": "aevb", "data": source, "images_per_s": len(ds.train) / statistics.median(per_epoch)}


def run(cmd: list[str], **env) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(aevb_worker(a.device, a.batch_size, a.epochs)))
        return 0
    if a.json:
        result_files.check(a.json, "gpu_peers.py")
    common = ["--device", a.device, "--batch-size", str(a.batch_size), "--epochs", str(a.epochs)]
    rounds = []
    for i in range(a.rounds):
        ours = run([sys.executable, __file__, "--worker", *common], AEVB_GRAPH="1")  # the CUDA graph
        eager = run([sys.executable, __file__, "--worker", *common], AEVB_GRAPH="0")
        peer = run([sys.executable, str(HERE / "peers" / "examples_style.py"), *common])
        rounds.append({"aevb": ours["images_per_s"], "aevb_no_graph": eager["images_per_s"],
                       "examples_style": peer["images_per_s"], "ratio": ours["images_per_s"] / peer["images_per_s"],
                       "graph_gain": ours["images_per_s"] / eager["images_per_s"], "data": ours["data"]})
        print(f"round {i + 1}: aevb {ours['images_per_s']:,.0f} images/s (AEVB_GRAPH=0: "
              f"{eager['images_per_s']:,.0f}), examples-style {peer['images_per_s']:,.0f}: "
              f"{rounds[-1]['ratio']:.2f}x ({ours['data']} data)", flush=True)
    res = {"command": result_files.command("gpu_peers.py", argv),
           "device": a.device, "batch_size": a.batch_size, "rounds": rounds,
           "median_ratio": statistics.median(r["ratio"] for r in rounds),
           "median_graph_gain": statistics.median(r["graph_gain"] for r in rounds)}
    print(f"aevb / examples-style on {a.device}, batch {a.batch_size}: {res['median_ratio']:.2f}x; "
          f"aevb / aevb without the CUDA graph: {res['median_graph_gain']:.2f}x (medians of {a.rounds} rounds)")
    if a.json:
        result_files.write(a.json, json.dumps(res, indent=2) + "\n", "gpu_peers.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
