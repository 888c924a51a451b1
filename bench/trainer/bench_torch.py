"""The PyTorch side of bench/trainer: the same model (built from fedc's
expanded spec by examples/pytorch/fedc_torch.py), batch size, optimizer
(SGD, momentum 0.9) and thread count on Fashion-MNIST.

    /usr/bin/python3 bench_torch.py SPEC_TEXT [--threads N] [--epochs N]
                                    [--batch N] [--lr X]

Prints one line of key=value pairs like fedc-bench-trainer.

torch.set_num_threads covers torch's own OpenMP threads only. Debian's
build runs nn.Linear through OpenBLAS, so threadpoolctl limits OpenBLAS's
thread pool to the same count, as fedc does for itself.
"""

import argparse
import gzip
import os
import resource
import sys
import time

import numpy as np
import torch

try:
    import threadpoolctl
except ImportError:  # the thread count then covers OpenMP only
    threadpoolctl = None

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "examples", "pytorch"))
import fedc_torch  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist/"


def load(split):
    with gzip.open(FMNIST + split + "-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(FMNIST + split + "-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = torch.from_numpy(x.reshape(len(y), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(y.astype(np.int64))


def blas_name():
    """Returns the BLAS that torch and numpy load, as "openblas-KERNELS"."""
    if threadpoolctl is None:
        return "unknown"
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas":
            return "%s-%s" % (pool.get("internal_api"),
                              pool.get("architecture"))
    return "none"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(args.threads, user_api="blas")
    torch.manual_seed(1)
    x, y = load("train")
    test_x, test_y = load("t10k")
    model = fedc_torch.build_model(args.spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    start = time.perf_counter()
    cpu_start = time.process_time()
    model.train()
    for _ in range(args.epochs):
        loss_sum = 0.0
        for idx in torch.randperm(len(x)).split(args.batch):
            optimizer.zero_grad()
            loss = model.loss(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start

    model.eval()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("impl=torch threads=%d batch=%d epochs=%d epoch_seconds=%.2f "
          "epoch_cpu_seconds=%.2f train_loss=%.4f test_accuracy=%.4f "
          "peak_rss_mib=%.1f blas=%s conv=%s" %
          (args.threads, args.batch, args.epochs, elapsed / args.epochs,
           cpu / args.epochs, loss_sum / len(x), accuracy, rss, blas_name(),
           "onednn" if torch.backends.mkldnn.is_available() else "aten"))


if __name__ == "__main__":
    main()
