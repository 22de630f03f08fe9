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
