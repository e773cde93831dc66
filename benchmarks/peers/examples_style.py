"""A plain PyTorch VAE training loop written the way the pytorch/examples `vae/main.py` is
written (a Dataset + DataLoader with shuffle, `.to(device)` per batch, an nn.Module of fc
layers with separate mu / logvar heads, a sigmoid decoder scored by
F.binary_cross_entropy(reduction="sum") plus the analytic KL, Adam 1e-3, `loss.item()`
accumulated every step). Written from that script's public description, not copied; it is
the "what most people write" baseline that `benchmarks/speed.py --peers` compares aevb with.

Differences from the original, so that the model and the data match aevb's benchmark:
- two hidden layers (784-400-400-20, ReLU), like aevb's VAE.mlp(hidden=(400, 400));
- the data are the offline MNIST split (fit on the 10,000 official test images) read with
  `aevb.data.load` (reading only; the loop uses nothing else from aevb), binarized
  dynamically one image at a time in `__getitem__`, as a torchvision transform would do;
- no per-batch log printing and no sample / reconstruction images.

    python benchmarks/peers/examples_style.py [--epochs 6] [--batch-size 100] [--json PATH]

Prints one JSON object: training images/s and seconds per epoch (epoch 1, the warm-up,
excluded), peak resident memory, and the test loss (nats per example) on the 5,000 held-out
images (binarized once with aevb's fixed seed).
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.utils.data
from torch import nn, optim
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE.parent.parent.parent / "shared" / "data" / "mnist"


class BinarizedImages(torch.utils.data.Dataset):
    """Images in [0, 1]; each __getitem__ draws a fresh binarization (dynamic) or returns the
    image as it is (already binarized test set)."""

    def __init__(self, images, dynamic=True):
        self.images = images
        self.dynamic = dynamic

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        x = self.images[idx]
        if self.dynamic:
            x = torch.bernoulli(x)
        return x, 0


class VAE(nn.Module):
    def __init__(self, hidden=400, latent=20):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc31 = nn.Linear(hidden, latent)   # mu
        self.fc32 = nn.Linear(hidden, latent)   # logvar
        self.fc4 = nn.Linear(latent, hidden)
        self.fc5 = nn.Linear(hidden, hidden)
        self.fc6 = nn.Linear(hidden, 784)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        h = F.relu(self.fc2(h))
        return self.fc31(h), self.fc32(h)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h = F.relu(self.fc4(z))
        h = F.relu(self.fc5(h))
        return torch.sigmoid(self.fc6(h))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    """Negative ELBO summed over pixels and over the batch (nats)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def make_loader(images, batch_size, dynamic=True, shuffle=True):
    return torch.utils.data.DataLoader(BinarizedImages(images, dynamic), batch_size=batch_size,
                                       shuffle=shuffle)


def train_epoch(model, optimizer, loader, device):
    model.train()
    train_loss = 0
    for data, _ in loader:
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return train_loss / len(loader.dataset)


def test(model, loader, device):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for data, _ in loader:
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
    return test_loss / len(loader.dataset)


def load_offline_mnist(data_dir=DATA_DIR, limit=None):
    """(train images in [0, 1], test images binarized once with aevb's fixed seed)."""
    from aevb import data
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=str(data_dir), limit=limit,
                   progress=False)
    return ds.train.x, ds.test.x


def random_images(limit=None):
    """10,000 training and 5,000 test images of MNIST's shape, uniform in [0, 1] (the test set
    binarized once), for timing where the real files are missing."""
    g = torch.Generator().manual_seed(0)
    n_train, n_test = (limit or 10000), (limit or 5000)
    x = torch.rand(n_train + n_test, 1, 28, 28, generator=g)
    return x[:n_train], torch.bernoulli(x[n_train:], generator=g)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))  # benchmarks/, for result_files
    import result_files
    if args.json:  # a new file, or this peer's own earlier result: never a file it did not write
        result_files.check(args.json, "peers/examples_style.py")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if Path(args.data_dir, "t10k-images-idx3-ubyte.gz").exists():
        train_x, test_x = load_offline_mnist(args.data_dir, args.limit)
    else:  # no MNIST here (e.g. a GPU machine without ../shared): random images of its shape
        train_x, test_x = random_images(args.limit)
    train_loader = make_loader(train_x, args.batch_size, dynamic=True, shuffle=True)
    test_loader = make_loader(test_x, args.batch_size, dynamic=False, shuffle=True)
    model = VAE().to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    times, losses = [], []
    for _ in range(args.epochs):
        t = time.perf_counter()
        losses.append(train_epoch(model, optimizer, train_loader, device))
        times.append(time.perf_counter() - t)
    timed = times[1:] or times
    n = len(train_x)
    result = {
        "command": result_files.command("peers/examples_style.py", argv),
        "peer": "examples-style", "device": str(device), "batch_size": args.batch_size, "epochs": args.epochs,
        "threads": torch.get_num_threads(), "train_images": n,
        "images_per_s": n * len(timed) / sum(timed), "seconds_per_epoch": sum(timed) / len(timed),
        "epoch_seconds": [round(t, 4) for t in times],
        "train_loss": losses[-1], "test_loss": test(model, test_loader, device),
        "peak_rss_mib": peak_rss_mib(),
    }
    text = json.dumps(result)
    if args.json:
        result_files.write(args.json, text + "\n", "peers/examples_style.py")
    print(text)


if __name__ == "__main__":
    main()
