"""Seconds per training epoch: student alone vs KD with cached teacher views vs KD with an online teacher,
and the `cpu` recipe's function matching (online teacher on mixed views; in PyTorch, or in ONNX Runtime in
fp32 or int8, the int8 teachers also as one call on all threads instead of a slice of the batch per thread:
`distill.teacher_split_batch`) vs its own student alone.

Same data subset, image size, batch and recipe in one process; each teacher is an ImageNet
EfficientNet-Lite (offline weights) with a new head: its accuracy does not matter for timing. The first
three rows use `--teacher`; the `cpu` recipe's rows use the recipe's own teachers (`model.arch` and each
`model.ensemble` member, at its teacher size), so their ratio is the recipe's real cost. Each
mode trains 2 epochs; the second epoch's training time is reported (the first includes compilation).
The teacher cache's one-off build time is printed separately. Usage:
    python benchmarks/bench_distill.py [--images 640] [--image-size 128] [--teacher tf_efficientnet_lite2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import data_arg, subset, time_int8_teachers_only

from kndnet.checkpoint import ModelSpec, save_model_checkpoint
from kndnet.config import DataConfig, ensemble_archs, load_config
from kndnet.data.manifest import build_manifest, write_csv_atomic
from kndnet.distill.build import cache_teacher_for_config
from kndnet.models import create_model
from kndnet.training.fit import fit

COMMON = {"train.epochs": 2, "train.progress_bar": False, "data.num_workers": 1}


def epoch_seconds(run_dir: Path) -> float:
    return float(pd.read_csv(run_dir / "metrics.csv")["train_seconds"].iloc[-1])


def make_teacher(arch: str, image_size: int, path: Path) -> Path:
    cfg = load_config(role="teacher", overrides={"model.arch": arch, "model.pretrained": "lite-pypi",
                                                 "data.image_size": image_size})
    return save_model_checkpoint(create_model(cfg.model), ModelSpec.from_config(cfg), cfg, path)


def main() -> None:
    time_int8_teachers_only()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arg(parser)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--teacher", default="tf_efficientnet_lite2")
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    manifest, _, _ = build_manifest(DataConfig(path=args.data))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = subset(manifest, args.images)
        n_train = int(((rows["split"] == "train")).sum())
        write_csv_atomic(rows, tmp / "manifest.csv")
        base = {**COMMON, "data.path": str(tmp / "manifest.csv"), "data.image_size": args.image_size,
                "data.cache_dir": str(tmp / "images")}
        teacher = make_teacher(args.teacher, args.image_size, tmp / "teacher.ckpt")
        kd = {**base, "distill.teacher": str(teacher), "distill.views": args.views}
        start = time.perf_counter()
        cache_teacher_for_config(load_config(role="distill", overrides=kd), tmp / "tcache")
        cache_seconds = time.perf_counter() - start
        runs = {
            "student alone": ("student", base),
            "KD, cached teacher views": ("distill", {**kd, "distill.teacher_cache": str(tmp / "tcache")}),
            "KD, online teacher": ("distill", kd),
        }
        seconds = {name: train_epoch(load_config(role=role, overrides=overrides), tmp / name)
                   for name, (role, overrides) in runs.items()}
        recipe, recipe_teachers = function_matching_runs(base, tmp)
        recipe_seconds = {name: train_epoch(cfg, tmp / name) for name, cfg in recipe.items()}
    print(f"{n_train} training images at {args.image_size} px, teacher {args.teacher}, {args.views} views")
    report(seconds, "student alone")
    print(f"  teacher cache build (one-off): {cache_seconds:.1f} s")
    print(f"cpu recipe (mixup/CutMix, EMA, views cut at the teachers' size; teachers {' + '.join(recipe_teachers)} "
          "online in PyTorch, bf16 where the CPU has it natively, or in ONNX Runtime fp32 or int8):")
    report(recipe_seconds, "student alone, cpu recipe")


def train_epoch(cfg, run_dir: Path) -> float:
    fit(cfg, run_dir)
    return epoch_seconds(run_dir)


def function_matching_runs(base: dict, tmp: Path) -> tuple[dict, list[str]]:
    """The `cpu` recipe's student alone and function-matching KD from the recipe's teachers, on one subset."""
    student = load_config("cpu", role="student", overrides=base)
    teacher_cfg = load_config("cpu", role="teacher")
    archs = [teacher_cfg.model.arch, *ensemble_archs(teacher_cfg.model)]
    teachers = [make_teacher(arch, teacher_cfg.data.image_size, tmp / f"teacher_{arch}.ckpt") for arch in archs]
    kd = {**base, "distill.teacher": ",".join(str(path) for path in teachers)}
    runs = {"student alone, cpu recipe": student,
            "KD, function matching": load_config("cpu", role="distill",
                                                 overrides={**kd, "distill.teacher_runtime": "torch",
                                                            "distill.teacher_int8": False}),
            "KD, f.m., ORT teacher": load_config("cpu", role="distill",
                                                 overrides={**kd, "distill.teacher_runtime": "onnxruntime",
                                                            "distill.teacher_int8": False}),
            "KD, f.m., ORT int8": load_config("cpu", role="distill",
                                              overrides={**kd, "distill.teacher_runtime": "onnxruntime",
                                                         "distill.teacher_int8": True}),
            "KD, f.m., ORT int8, 1 call": load_config("cpu", role="distill",
                                                      overrides={**kd, "distill.teacher_runtime": "onnxruntime",
                                                                 "distill.teacher_int8": True,
                                                                 "distill.teacher_split_batch": False})}
    return runs, archs


def report(seconds: dict[str, float], baseline: str) -> None:
    for name, value in seconds.items():
        print(f"  {name:27s} {value:6.1f} s/epoch  ({value / seconds[baseline]:4.2f}x {baseline})")


if __name__ == "__main__":
    main()
