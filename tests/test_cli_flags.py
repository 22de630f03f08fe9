"""CLI flags that set config keys are declared once with their key; each reaches the resolved config."""

from __future__ import annotations

import argparse

import pytest

from kndnet.cli import build_parser
from kndnet.commands import CONFIG_DEST, config_overrides
from kndnet.config import CHOICES, Config, load_config

CONFIG_COMMANDS = ("prepare", "train", "distill", "cache-teacher")
# Flags whose name is not their key's field name (all others: --test-fraction sets *.test_fraction).
RENAMED = {("train", "--teacher"): "model.arch", ("prepare", "--data"): "data.path",
           ("train", "--data"): "data.path", ("distill", "--data"): "data.path",
           ("cache-teacher", "--data"): "data.path"}


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _config_flags(name: str) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in _subparser(name)._actions if a.dest.startswith(CONFIG_DEST)}


def _other_value(key: str, default):
    """A valid value of the key's type that differs from its default (as the CLI would pass it)."""
    if key in CHOICES:
        return next(c for c in CHOICES[key] if c != default)
    if isinstance(default, int) and not isinstance(default, bool):
        return default + 3
    if isinstance(default, float):
        return round(default * 0.5 + 0.01, 4)
    return f"v{len(key)}"


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_every_config_flag_sets_its_key_in_the_resolved_config(command):
    """Changing any one flag moves its config key to the given value: a flag mapped to the wrong key,
    or dropped on the way, fails here."""
    flags = _config_flags(command)
    assert flags, command
    defaults = Config().to_dict()
    required = ["--out", "x"] + [arg for flag, action in flags.items() if action.required
                                 for arg in (flag, "given.ckpt")]
    for flag, action in flags.items():
        key = action.dest[len(CONFIG_DEST):]
        section, name = key.split(".")
        assert RENAMED.get((command, flag), f"{section}.{flag[2:].replace('-', '_')}") == key, flag
        value = _other_value(key, defaults[section][name])
        args = _subparser(command).parse_args(required + [flag, str(value)])
        resolved = load_config(None, config_overrides(args), role="distill").to_dict()
        assert str(resolved[section][name]) == str(value), flag


def test_unset_flags_leave_the_config_alone_and_set_pairs_are_kept():
    args = _subparser("train").parse_args(["--out", "x", "--set", "train.weight_decay=0.01"])
    overrides = config_overrides(args)
    assert load_config(None, overrides).train.weight_decay == 0.01
    assert overrides["train.epochs"] is None  # not given: load_config ignores it


def test_distill_takes_several_teachers_as_one_ensemble():
    from kndnet.config import teacher_checkpoints
    args = _subparser("distill").parse_args(["--out", "x", "--teacher", "a.ckpt", "b.ckpt"])
    cfg = load_config(None, config_overrides(args), role="distill")
    assert cfg.distill.teacher == "a.ckpt,b.ckpt" and teacher_checkpoints(cfg.distill) == ["a.ckpt", "b.ckpt"]


def test_the_recorded_command_line_carries_no_folders_of_this_machine(tmp_path):
    from kndnet.cli import portable_command_line
    argv = ["export", "--model", str(tmp_path / "runs" / "a.ckpt"), f"--out={tmp_path.parent / 'else=where'}",
            "--calib", "../data dir", "--set", "train.lr=0.1"]
    assert portable_command_line(argv, cwd=tmp_path) == (
        "kndnet export --model runs/a.ckpt --out=.../else=where --calib '../data dir' --set train.lr=0.1")
