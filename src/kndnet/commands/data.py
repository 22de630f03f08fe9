"""Data commands: prepare, synth."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import command, positive_int


def data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="data folder (any supported layout) or manifest CSV"
                   + ("" if required else "; default: data.path of --config"))
    p.add_argument("--format", default=None,
                   help="auto | ham10000 | isic2018 | csv | folders (default: auto)")


def _prepare_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
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
    p.add_argument("--lesions-per-class", type=positive_int, default=12)
    p.add_argument("--image-size", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)


@command("synth", "write a small synthetic HAM10000-layout data set", _synth_args)
def _synth(args: argparse.Namespace) -> int:
    from kndnet.data.synth import write_synthetic
    table = write_synthetic(args.out, args.lesions_per_class, args.image_size, seed=args.seed)
    print(f"wrote {len(table)} images of {table['lesion_id'].nunique()} lesions to {args.out}")
    return 0
