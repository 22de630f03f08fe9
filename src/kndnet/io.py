"""Atomic file writing: nothing half-written is ever left behind.

Every result file is written to a temporary sibling and renamed into place, so an interrupted
run leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should read like any new file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def check_output_folder(path: str | Path, option: str = "--out", shown: str | Path | None = None) -> Path:
    """Check that `path` is, or can be made, a folder we can write to; raise a KNDNetError saying why not.

    Why: a file, a read-only folder or a path under a file used to surface as a traceback from
    whichever library wrote first, sometimes after minutes of work. Nothing is created here.
    """
    from kndnet.errors import ConfigError
    path = Path(path)
    shown = Path(shown or path)  # what the user passed (a file's name, when `path` is its folder)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        where = "is a file" if existing == shown else f"is under {existing}, which is a file"
        raise ConfigError(f"{option} {shown} {where}; pass a {'folder' if shown == path else 'path in a folder'}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{option} {shown}: cannot write in {existing} ({err.strerror}); pass a folder you "
                          "can write to") from err
    return path


# atomic_path's temporaries: "." + the target's name + mkstemp's 8 random characters + ".tmp"
STALE_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
RUN_SUBFOLDERS = ("cache", "checkpoints", "teacher_cache", "bench", "export", "eval")


def clean_stale_temporaries(folder: str | Path, subfolders: tuple[str, ...] = RUN_SUBFOLDERS) -> list[Path]:
    """Remove `atomic_path` temporaries a killed run left in `folder` and its known result subfolders.

    Call only while holding `run_lock(folder)`: then no live writer can own them. Not recursive
    beyond `subfolders`, so a run directory given as `.` never sweeps a whole home folder.
    """
    folder = Path(folder)
    removed = []
    for place in [folder, *(folder / name for name in subfolders)]:
        if not place.is_dir():
            continue
        for stale in place.iterdir():
            if STALE_TEMPORARY.match(stale.name) and stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _lock_holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _try_lock(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return True


def ddp_rank() -> int:
    """0 for the process of global DDP rank 0 (the process a user started), else a rank above 0: Lightning's
    launcher re-runs the command in a process per further device with LOCAL_RANK set, and on other nodes NODE_RANK
    is set; launchers that start every rank (torchrun) set RANK. The first of those that is not 0 is returned."""
    ranks = (int(os.environ.get(name) or 0) for name in ("RANK", "NODE_RANK", "LOCAL_RANK"))
    return next((rank for rank in ranks if rank), 0)


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[bool]:
    """Hold `folder/.lock` (holding our PID) for the block; refuse while a live process holds it.

    Yields True when this call took the lock, False when this process (or its parent) already held it.
    A lock whose PID is dead (a killed run) is stale and taken over. A lock held by this process or
    its parent is ours: Lightning's DDP launcher re-runs the same command in child processes. Those (DDP
    ranks above 0) never take a lock: one that reaches a stage's folder first would lock rank 0 out of it.
    """
    from kndnet.errors import BusyError
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    owned = False
    while not owned and not ddp_rank():
        if _try_lock(lock):
            owned = True
            break
        holder = _lock_holder(lock)
        if holder in (os.getpid(), os.getppid()):
            break
        if holder is not None and _pid_alive(holder):
            raise BusyError(f"{folder} is in use by another kndnet process (PID {holder}); wait for it to "
                            f"finish or stop it, or use another --out. If PID {holder} is not kndnet, "
                            f"delete {lock}")
        lock.unlink(missing_ok=True)  # stale: its process is gone
    try:
        yield owned
    finally:
        if owned:
            lock.unlink(missing_ok=True)


COMPLETE_MARKER = ".complete"


def is_complete(folder: str | Path) -> bool:
    """True when `folder` was finished by `staged_folder` (its completion marker is written last)."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


STAGING_PREFIX = ".staged.partial-"


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a staging folder inside `folder`; on success move its files into `folder`, then mark it complete.

    Why: a stage killed half-way must never leave a folder that looks finished (metrics.json without
    predictions.csv, an fp32 model without its card). The completion marker is removed before the
    first file moves and written after the last, so `is_complete` is true only for a whole result;
    a failure leaves the folder as it was (other files in it are never touched).
    """
    import shutil
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(folder)
    tmp = folder / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (folder / COMPLETE_MARKER).unlink(missing_ok=True)
        for item in sorted(tmp.iterdir()):
            target = folder / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
        (folder / COMPLETE_MARKER).write_text("written last by kndnet: every file of this result is here\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_dead_staging(folder: Path) -> None:
    """Staging folders of killed processes (their PID is in the name) are stale."""
    import shutil
    for stale in folder.glob(f"{STAGING_PREFIX}*"):
        pid = stale.name[len(STAGING_PREFIX):]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
