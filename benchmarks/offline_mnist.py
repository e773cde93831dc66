"""Issue 2's benchmark: MLP VAE 784-400-400-20 (ReLU, Adam 1e-3, batch 100, dynamic
binarization) trained 50 epochs on the offline MNIST split (fit on the 10,000 official
test images, evaluate on 5,000 official training images binarized once with a fixed seed).

    python benchmarks/offline_mnist.py [--data-dir DIR] [--epochs 50]

Prints `test_elbo=<nats> train_seconds=<s>` as its last line. train_seconds is the wall time
of the training loop including the per-epoch test evaluation, excluding data loading.
Run it on a quiet machine: a second busy process slows small matmuls down many times.
"""
import argparse
import time
from pathlib import Path

from aevb import runtime

runtime.prepare_process()  # what the aevb command does first: spin count (before torch) and malloc

from aevb import VAE, data, train  # noqa: E402
from aevb.evaluation import elbo_terms  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=args.data_dir)
    torch.manual_seed(args.seed)
    model = VAE.mlp(ds.shape, latent_dim=20, hidden=(400, 400), activation="relu", likelihood="bernoulli")
    t0 = time.perf_counter()
    run = train(model, ds, epochs=args.epochs, batch_size=100, lr=1e-3, optimizer="adam",
                seed=args.seed, progress=False, tensorboard=False)
    seconds = time.perf_counter() - t0
    final = elbo_terms(run.model, ds.test)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; epochs={args.epochs}; "
          f"test rec={final['rec']:.2f} kl={final['kl']:.2f}")
    print(f"test_elbo={final['elbo']:.2f} train_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
