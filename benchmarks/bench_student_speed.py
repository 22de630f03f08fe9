"""Student training throughput on CPU: the default path (channels_last + torch.compile) vs plain eager.

Also the opt-in bf16 path, the Shades-of-Gray colour-constancy layer the `cpu` recipe's students carry, and the
MobileNet block (`model.student_block: mobilenet`: a BatchNorm and SiLU after each depthwise conv).

One process, same model, batch and input. Each path is built and warmed up first (compilation
happens there); then the paths are timed in alternating rounds and the median round is reported, so
a slow spell of the machine hits every path alike. Usage:
    python benchmarks/bench_student_speed.py [--image-size 224] [--batch-size 32] [--steps 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _common import print_rates

from kndnet.config import load_config
from kndnet.training.module import LesionClassifier

PATHS = {
    "plain eager NCHW": {"train.channels_last": False, "train.compile": False},
    "channels_last": {"train.channels_last": True, "train.compile": False},
    "default (channels_last + compile)": {},
    "opt-in: + bf16 autocast (--precision bf16-mixed)": {"train.precision": "bf16-mixed"},
    # the cpu recipe's students white-balance every image inside the model: what does that layer cost a step?
    "default + Shades-of-Gray layer (model.color_constancy)": {"model.color_constancy": "shades_of_gray"},
    "default + MobileNet block (model.student_block)": {"model.student_block": "mobilenet"},
}


def make_step(overrides: dict, image_size: int, batch: int, recipe: str | None = None) -> Callable[[], None]:
    """One optimiser step of the real training module on a fixed uint8 batch of image_size px (the student's
    input, or the recipe's view size, which the step shrinks to data.image_size), from `recipe`'s student
    config (None: the defaults) with `overrides`."""
    cfg = load_config(recipe, role="student", overrides={"data.image_size": image_size, **overrides})
    module = LesionClassifier(cfg.to_dict(), class_counts=[1] * 7)
    module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
    data = {"image": torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8),
            "label": torch.randint(0, 7, (batch,))}
    bf16 = cfg.train.precision == "bf16-mixed"
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(data, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step.module = module  # type: ignore[attr-defined]  # what the step trains, for inspection
    return step


def timed(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def median_round_seconds(steps: dict[str, Callable[[], None]], per_round: int, rounds: int) -> dict[str, float]:
    """Each step warmed up (compiled) first, then all timed `per_round` times in alternating rounds, so a slow
    spell of the machine hits every path alike: name -> the median round's seconds."""
    for step in steps.values():
        timed(step, 3)  # warm-up and compilation
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            seconds[name].append(timed(step, per_round))
    return {name: statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {name: make_step(o, args.image_size, args.batch_size) for name, o in PATHS.items()}
    seconds = median_round_seconds(steps, args.steps, args.rounds)
    rate = {name: args.batch_size * args.steps / s for name, s in seconds.items()}
    print(f"student training, {args.image_size} px, batch {args.batch_size}, {args.threads} threads, "
          f"median of {args.rounds} alternating rounds")
    print_rates(rate, "plain eager NCHW", 50, "plain eager")


if __name__ == "__main__":
    main()
