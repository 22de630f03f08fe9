"""Student training throughput on CPU: the default path (channels_last + torch.compile) vs plain eager.

One process, same model, batch and input; each path gets warm-up steps (compilation happens there)
before timing. Prints images/s of each and the ratio. Usage:
    python benchmarks/bench_student_speed.py [--image-size 224] [--batch-size 32] [--steps 6]
"""

from __future__ import annotations

import argparse
import time

import torch

from kndnet.config import load_config
from kndnet.training.module import LesionClassifier


def images_per_second(overrides: dict, image_size: int, batch: int, steps: int, warmup: int) -> float:
    cfg = load_config(role="student", overrides={"data.image_size": image_size, **overrides})
    module = LesionClassifier(cfg.to_dict(), class_counts=[1] * 7)
    module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
    batch_data = {"image": torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8),
                  "label": torch.randint(0, 7, (batch,))}
    def step() -> None:
        loss = module.training_step(batch_data, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = {
        "plain eager NCHW": {"train.channels_last": False, "train.compile": False},
        "channels_last": {"train.channels_last": True, "train.compile": False},
        "default (channels_last + compile)": {},
    }
    print(f"student training, {args.image_size} px, batch {args.batch_size}, {args.threads} threads")
    results = {}
    for name, overrides in paths.items():
        results[name] = images_per_second(overrides, args.image_size, args.batch_size, args.steps, warmup=3)
        print(f"  {name:36s} {results[name]:7.1f} img/s")
    base = results["plain eager NCHW"]
    for name in list(paths)[1:]:
        print(f"  speed-up {name:27s} {results[name] / base:5.2f}x vs plain eager")


if __name__ == "__main__":
    main()
