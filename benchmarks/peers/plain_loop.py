"""The fastest simple PyTorch loop for the same VAE that we could write in ~40 lines: the
"plain tensor-slicing loop" peer of `benchmarks/speed.py --peers` (issue 18 asks aevb to be
at least 1.5x as fast as this one, so it must not be a straw man):

- the images stay in one tensor; each epoch slices batches of a random permutation (no
  Dataset, no DataLoader, no per-image Python);
- the batch is binarized dynamically by comparing it with uniform noise,
  (torch.rand_like(x) < x).float(): the same Bernoulli draws as torch.bernoulli(x), which
  on CPU took 1.1-1.4 ms per batch of 100 against 0.48 ms for this form (2 threads, 2026-12-01,
  Intel Xeon; benchmarks/README.md);
- the model is nn.Sequential of nn.Linear + ReLU (784-400-400-20, mu and logvar from one
  head), the decoder outputs logits scored with F.binary_cross_entropy_with_logits (no
  sigmoid, no clamp), the KL in closed form;
- Adam(fused=True), zero_grad(set_to_none=True), no .item() in the step (the epoch's loss
  is summed on the tensor side and read once per epoch).

    python benchmarks/peers/plain_loop.py [--epochs 6] [--batch-size 100] [--json PATH]

Prints the same JSON object as examples_style.py (its data loading and test loss are shared).
"""
import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("examples_style", HERE / "examples_style.py")
examples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(examples)


def make_model(hidden=400, latent=20):
    enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                        nn.ReLU(), nn.Linear(hidden, 2 * latent))
    dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                        nn.Linear(hidden, 784))
    return enc, dec


def loss_sum(enc, dec, x):
    """Negative ELBO summed over the batch (nats)."""
    mu, logvar = enc(x).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    rec = F.binary_cross_entropy_with_logits(dec(z), x.flatten(1), reduction="sum")
    return rec - 0.5 * torch.sum(1 + logvar - mu.square() - logvar.exp())


def train_epoch(enc, dec, opt, images, batch_size):
    total = torch.zeros(())
    perm = torch.randperm(len(images))
    for i in range(0, len(images), batch_size):
        x = images[perm[i:i + batch_size]]
        x = (torch.rand_like(x) < x).float()
        loss = loss_sum(enc, dec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return total.item() / len(images)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(examples.DATA_DIR))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))  # benchmarks/, for result_files
    import result_files
    if args.json:  # a new file, or this peer's own earlier result: never a file it did not write
        result_files.check(args.json, "peers/plain_loop.py")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if Path(args.data_dir, "t10k-images-idx3-ubyte.gz").exists():
        train_x, test_x = examples.load_offline_mnist(args.data_dir, args.limit)
    else:
        train_x, test_x = examples.random_images(args.limit)
    enc, dec = make_model()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, fused=True)
    times, losses = [], []
    for _ in range(args.epochs):
        t = time.perf_counter()
        losses.append(train_epoch(enc, dec, opt, train_x, args.batch_size))
        times.append(time.perf_counter() - t)
    timed = times[1:] or times
    with torch.no_grad():
        test_loss = sum(loss_sum(enc, dec, test_x[i:i + 1000]).item()
                        for i in range(0, len(test_x), 1000)) / len(test_x)
    n = len(train_x)
    result = {"command": result_files.command("peers/plain_loop.py", argv),
              "peer": "plain-loop", "device": "cpu", "batch_size": args.batch_size, "epochs": args.epochs,
              "threads": torch.get_num_threads(), "train_images": n,
              "images_per_s": n * len(timed) / sum(timed), "seconds_per_epoch": sum(timed) / len(timed),
              "epoch_seconds": [round(t, 4) for t in times], "train_loss": losses[-1],
              "test_loss": test_loss, "peak_rss_mib": examples.peak_rss_mib()}
    text = json.dumps(result)
    if args.json:
        result_files.write(args.json, text + "\n", "peers/plain_loop.py")
    print(text)


if __name__ == "__main__":
    main()
