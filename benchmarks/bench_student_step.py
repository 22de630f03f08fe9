"""Where one training step of a recipe's student goes: its cost per image by batch size and precision, and its
self time by operator group (torch.profiler).

Why: the `cpu` recipe's 150 minutes are spent mostly in the two students' steps (docs/BENCH.md), so a longer
schedule fits only if a step gets cheaper. This shows which part of the step could: the convolutions (oneDNN),
the kernels torch.compile fuses around them (BatchNorm, SiLU, the elementwise ops), or the rest (resizing the
view, copies, the optimiser). The step is the real module's: `LesionClassifier.training_step` on the recipe's
student config, fed uint8 batches at the recipe's view size (shrunk to the student's input inside, as in
training), then backward and AdamW. Each variant is warmed up (compiled) first and timed in alternating rounds;
the median round counts. It times one fixed batch over and over with no loader running, so its per-image cost by
batch size need not hold in a real run (batch 16 was cheaper here and 1.12x dearer in a fit: docs/BENCH.md);
for a run's own breakdown set `train.profiler`. Usage:
    python benchmarks/bench_student_step.py [--recipe cpu] [--batch-sizes 16 32 64] [--rounds 5] [--input-sizes 96 112]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from bench_student_speed import make_step, median_round_seconds
from torch.profiler import ProfilerActivity, profile

from kndnet.config import load_config

# operator-name fragments -> group; the first fragment that matches names the group, anything else is "other"
GROUPS = {
    "CompiledFxGraph": "fused kernels (torch.compile: BatchNorm, SiLU, elementwise)",
    "convolution_backward": "convolution backward (oneDNN)",
    "convolution": "convolution forward (oneDNN)",
    "upsample": "resize (view -> student input)",
    "copy": "copies and layout changes",
}


def op_group(name: str) -> str:
    """The group an operator's self time counts in (GROUPS, else 'other')."""
    return next((group for fragment, group in GROUPS.items() if fragment in name), "other")


def self_time_shares(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Each group's share of the profiled steps' total self CPU time, largest first."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[op_group(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return dict(sorted(((g, t / whole) for g, t in totals.items()), key=lambda item: -item[1]))


def recipe_step(recipe: str, batch: int, overrides: dict | None = None) -> Callable[[], None]:
    """One optimiser step of `recipe`'s student (its model keys, input and view sizes), plus `overrides`."""
    data = load_config(recipe, role="student").data
    keys = {"data.image_size": data.image_size, **(overrides or {})}
    return make_step(keys, data.view_size or data.image_size, batch, recipe)


def variants(recipe: str, batch_sizes: list[int], baseline_batch: int,
             input_sizes: Sequence[int] = ()) -> dict[str, tuple[int, Callable]]:
    """name -> (batch, step): each batch size in fp32, bf16 autocast at the baseline batch, and the baseline batch
    at each smaller student input in `input_sizes` (the sizes progressive resizing trains at; the same views)."""
    steps = {f"batch {b}, fp32": (b, recipe_step(recipe, b)) for b in batch_sizes}
    steps[f"batch {baseline_batch}, bf16 autocast"] = (
        baseline_batch, recipe_step(recipe, baseline_batch, {"train.precision": "bf16-mixed"}))
    for size in input_sizes:
        steps[f"batch {baseline_batch}, {size} px input"] = (
            baseline_batch, recipe_step(recipe, baseline_batch, {"data.image_size": size}))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--input-sizes", type=int, nargs="*", default=[],
                        help="also time the baseline batch at these student input sizes (px; progressive resizing)")
    args = parser.parse_args()
    batch = load_config(args.recipe, role="student").data.batch_size
    steps = variants(args.recipe, sorted(set(args.batch_sizes) | {batch}), batch, args.input_sizes)
    seconds = median_round_seconds({name: step for name, (_, step) in steps.items()}, args.steps, args.rounds)
    per_image = {name: seconds[name] / (args.steps * b) for name, (b, _) in steps.items()}
    baseline = f"batch {batch}, fp32"
    print(f"{args.recipe} recipe's student step, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
    for name, seconds_per_image in per_image.items():
        b = steps[name][0]
        print(f"  {name:28s} {seconds_per_image * b * 1e3:7.1f} ms/step  {1 / seconds_per_image:6.1f} img/s  "
              f"({per_image[baseline] / seconds_per_image:.2f}x {baseline})")
    print(f"one {baseline} step's self CPU time by operator group ({args.profile_steps} steps, torch.profiler)")
    for group, share in self_time_shares(steps[baseline][1], args.profile_steps).items():
        print(f"  {group:60s} {share:6.1%}")


if __name__ == "__main__":
    main()
