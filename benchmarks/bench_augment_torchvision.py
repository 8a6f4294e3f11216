"""The PyTorch side of benchmarks/bench_augment.py: torchvision's policies on PIL images
through a DataLoader with 2 workers, as a PyTorch user runs them. Runs in its own virtual
environment (torchvision does not import beside torch 2.13):

    python -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pillow numpy
    /tmp/tvenv/bin/python benchmarks/bench_augment_torchvision.py IMAGES.npy POLICY BATCHES

Prints one JSON line: {"policy", "size", "images_per_s", "seconds", "images"}.
"""

import json
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms


def build(policy: str):
    if policy == "augmix":
        # the same settings as ours: severity 3, width 3, random depth 1..3, alpha 1, 9-op list
        aug = transforms.AugMix(
            severity=3, mixture_width=3, chain_depth=-1, alpha=1.0, all_ops=False
        )
    elif policy == "autoaugment":
        aug = transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)
    elif policy == "randaugment":
        aug = transforms.RandAugment(num_ops=2, magnitude=9)
    elif policy == "trivialaugment":
        aug = transforms.TrivialAugmentWide()
    else:
        raise ValueError(f"unknown policy {policy!r}")
    return transforms.Compose([aug, transforms.ToTensor()])


class Images(torch.utils.data.Dataset):
    def __init__(self, array, transform, length):
        self.array, self.transform, self.length = array, transform, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.array[i % len(self.array)]))


def main(path: str, policy: str, batches: int, batch_size: int = 256):
    """Time ``batches`` full batches from the moment the loader starts (worker start-up, about
    0.1 s, included): timing only later batches would credit the workers' prefetching."""
    array = np.load(path)
    torch.set_num_threads(1)
    data = Images(array, build(policy), batch_size * batches)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=2)
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.shape[0]
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "policy": policy,
                "size": int(array.shape[1]),
                "images_per_s": n / seconds,
                "seconds": seconds,
                "images": n,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
