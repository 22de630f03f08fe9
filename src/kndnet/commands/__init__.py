"""Subcommand registry: each module of this package adds its commands with @command."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: its help, its arguments and its handler."""
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (help_text, add_args, handler)
        return handler
    return register


CONFIG_DEST = "config:"  # argparse dest prefix of a flag that sets a config key


def config_flag(p: argparse.ArgumentParser, flag: str, key: str, **kwargs) -> None:
    """Add `flag` as an override of config key `key` (e.g. "--epochs" -> "train.epochs").

    Why: the flag and the key it sets are written once, here at the declaration; `config_overrides`
    collects every such flag, so no command maps flags to keys by hand.
    """
    kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    p.add_argument(flag, dest=CONFIG_DEST + key, **kwargs)


def set_flag(p: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE`: any config key, for the keys no flag of its own sets."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set train.weight_decay=0.01 (repeatable)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """{config key: value} of every config flag given (None for those not given), then `--set` pairs."""
    from kndnet.config import parse_set_options
    overrides = {name[len(CONFIG_DEST):]: value for name, value in vars(args).items()
                 if name.startswith(CONFIG_DEST)}
    overrides.update(parse_set_options(getattr(args, "set", None) or []))
    return overrides


def verbose_flag(p: argparse.ArgumentParser) -> None:
    """`-v`: the library chatter the training commands hide (kndnet.quiet) shows again."""
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show library logs and warnings (Lightning tips, deprecations)")


SPLITS = ("test", "val", "train", "all")  # the order --help shows; the splits are data.selection.SPLITS


def positive_int(text: str) -> int:
    """argparse type for counts (batch size, resamples, repeats): an integer of at least 1.

    Why: argparse reports a bad type as one line with exit code 2, before any model is loaded.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for a strength that 0 switches off (e.g. --colour-cast): a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value
