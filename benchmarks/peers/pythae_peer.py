"""The same VAE (784-400-400-20, ReLU, Bernoulli likelihood) trained with the `pythae`
library (pip package `pythae`, 0.1.2), written from pythae's public documentation: custom
`BaseEncoder` / `BaseDecoder` classes returning `ModelOutput`s (`pythae_models.build`), `VAEConfig` with
reconstruction_loss="bce", `BaseTrainerConfig` (batch 100, Adam, lr 1e-3) and a
`TrainingPipeline`. Run it with the python of a virtual environment that has pythae:

    /work/venvs/pythae/bin/python benchmarks/peers/pythae_peer.py [--epochs 6] [--json PATH]

(see benchmarks/README.md for the environment). Data: the offline MNIST split (fit on the
10,000 official test images), read with `aevb.data.load` and binarized dynamically, one
image at a time, in the dataset's `__getitem__` (pythae has no dynamic binarization).

Throughput is timed with a pythae `TrainingCallback`: from the start of each epoch's
training loop (`on_train_step_begin`, which pythae calls once per epoch) to its last
optimizer step (`on_train_step_end`, once per batch), so pythae's end-of-epoch model copy
and the final save are not counted; epoch 1 (warm-up) is excluded. Prints one JSON object.
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from pythae_models import build  # the model and its encoder / decoder, shared with quality.py

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE.parent.parent.parent / "shared" / "data" / "mnist"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))  # benchmarks/, for result_files
    import result_files
    if args.json:  # a new file, or this peer's own earlier result: never a file it did not write
        result_files.check(args.json, "peers/pythae_peer.py")
    if args.threads:
        torch.set_num_threads(args.threads)

    import pythae
    from pythae.data.datasets import BaseDataset, DatasetOutput
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    from aevb import data  # reading the same files only

    ds = data.load("mnist-offline", binarize="dynamic", data_dir=args.data_dir, limit=args.limit,
                   progress=False)

    class DynamicallyBinarized(BaseDataset):
        def __init__(self, images):
            super().__init__(images, torch.zeros(len(images)))

        def __getitem__(self, index):
            return DatasetOutput(data=torch.bernoulli(self.data[index]), labels=self.labels[index])

    class Timer(TrainingCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_train_step_begin(self, training_config, **kwargs):  # once per epoch
            self.begin.append(time.perf_counter())
            self.end.append(None)

        def on_train_step_end(self, training_config, **kwargs):   # once per batch
            self.end[-1] = time.perf_counter()

    torch.manual_seed(args.seed)
    model = build("VAE")
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(output_dir=out, num_epochs=args.epochs, learning_rate=1e-3,
                                   per_device_train_batch_size=args.batch_size,
                                   per_device_eval_batch_size=args.batch_size, optimizer_cls="Adam",
                                   keep_best_on_train=True, no_cuda=True, seed=args.seed)
        pipeline = TrainingPipeline(model=model, training_config=config)
        t0 = time.perf_counter()
        pipeline(train_data=DynamicallyBinarized(ds.train.x), callbacks=[timer])
        total = time.perf_counter() - t0
    times = [e - b for b, e in zip(timer.begin, timer.end)]
    timed = times[1:] or times
    n = len(ds.train)
    model.eval()
    with torch.no_grad():
        test_loss = sum(float(model(DatasetOutput(data=ds.test.x[i:i + 1000])).loss) * len(ds.test.x[i:i + 1000])
                        for i in range(0, len(ds.test), 1000)) / len(ds.test)
    result = {
        "command": result_files.command("peers/pythae_peer.py", argv),
        "peer": "pythae", "pythae_version": getattr(pythae, "__version__", _dist_version()),
        "torch": torch.__version__, "batch_size": args.batch_size, "epochs": args.epochs,
        "threads": torch.get_num_threads(), "train_images": n,
        "images_per_s": n * len(timed) / sum(timed), "seconds_per_epoch": sum(timed) / len(timed),
        "epoch_seconds": [round(t, 4) for t in times], "pipeline_seconds": total,
        "test_loss": test_loss, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    text = json.dumps(result)
    if args.json:
        result_files.write(args.json, text + "\n", "peers/pythae_peer.py")
    print(text)


def _dist_version():
    from importlib.metadata import version
    try:
        return version("pythae")
    except Exception:  # noqa: BLE001
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
