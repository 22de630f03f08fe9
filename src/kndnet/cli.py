"""The `kndnet` command line: parse, call one library function, print where results went.

Every subcommand maps to one function of the package; errors of the user's input (KNDNetError)
print as one clear message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from kndnet.commands import COMMANDS, data, deploy, evaluation, pipeline, training  # noqa: F401,I001 (registers)
from kndnet.errors import KNDNetError


def build_parser() -> argparse.ArgumentParser:
    from kndnet import __version__
    parser = argparse.ArgumentParser(
        prog="kndnet", description="KNDNet: distil a large skin-lesion classifier into a tiny CNN, "
                                   "evaluate it, ship it")
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
