"""The `kndnet` command line: parse, call one library function, print where results went.

Every subcommand maps to one function of the package; errors of the user's input (KNDNetError)
print as one clear message and exit 2, without a traceback. So do file-system refusals (a read-only
or full disk, a file where a folder should be), naming the path.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import shlex
import signal
import sys
from pathlib import Path

from kndnet.commands import COMMANDS, app, data, deploy, evaluation, pipeline, recipe, training  # noqa: F401,I001 (registers)
from kndnet.errors import KNDNetError, one_line_warnings

# Commands whose --out names a file, not a folder (checked by the command itself).
OUT_IS_FILE = {"calibrate"}
# File-system errors that are about the user's paths, not a bug: one line, exit 2.
USER_OS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EISDIR,
                  errno.EDQUOT}


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


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an unusable --out folder before any work is done."""
    from kndnet.io import check_output_folder
    if getattr(args, "out", None):
        out = Path(args.out)
        if args.command in OUT_IS_FILE:
            if out.is_dir():
                raise KNDNetError(f"--out {out} is a folder; pass the file name to write")
            check_output_folder(out.parent, shown=out)
        else:
            check_output_folder(out)


def portable_command_line(argv: list[str], cwd: Path | None = None) -> str:
    """`kndnet ARGV` as typed, but with each absolute path made relative to the working folder, or cut to
    `.../NAME` outside it: files such as a model card quote the command without the machine's folders."""
    cwd = Path(os.path.abspath(cwd or Path.cwd()))

    def portable(token: str) -> str:
        flag, eq, value = token.partition("=") if token.startswith("--") and "=" in token else ("", "", token)
        if not Path(value).is_absolute():
            return token
        path = Path(os.path.abspath(value))  # as typed, symlinks kept
        value = str(path.relative_to(cwd)) if path.is_relative_to(cwd) else f".../{path.name}"
        return f"{flag}{eq}{value}"

    return shlex.join(["kndnet", *map(portable, argv)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    with one_line_warnings():  # kndnet's warnings print as one line, like its errors
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """The command's handler; the user's input errors and file-system refusals as one line and exit 2."""
    try:
        args.command_line = portable_command_line(argv)  # provenance, e.g. in an export's model card
        _check_out(args)
        try:
            code = args.handler(args)
        finally:
            _close_process_group()
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not as a traceback at interpreter exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():  # another pipe (a loader worker, a subprocess): a real failure
            raise
        return _quiet_exit_for_sigpipe()
    except KNDNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in USER_OS_ERRNOS:
            raise
        print(f"error: cannot write or read {err.filename or 'a file'}: {err.strerror}", file=sys.stderr)
        return 2


def _close_process_group() -> None:
    """Destroy the DDP process group a fit started, when the command is done, before the interpreter exits.

    Why: Lightning leaves the group open after `trainer.fit` (a pipeline's later fits reuse it), and a gloo group
    still alive at interpreter exit is torn down with the C++ runtime: in one of ten fresh-clone CI runs here that
    aborted rank 0 with "terminate called without an active exception" (exit -6) after training had finished and
    its summary was written. Every rank runs the command, so every rank closes its own group.
    """
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch has no group
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it: poll reports POLLERR on such a write end (Linux, macOS).
    False for anything else, including a stdout without a file descriptor (a notebook, pytest's capture)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_exit_for_sigpipe() -> int:
    """stdout's reader left (`kndnet predict DIR | head`): stop quietly, as Unix tools do, with the shell's code
    for SIGPIPE; stdout now writes to /dev/null, so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
