"""`kndnet config`: a recipe as every command resolves it, or what differs between two recipes or models.

Why: a recipe may `extends:` another and set only a few keys, and a role's section overrides `common`, so what a
stage will train is not what any one file says; this prints it, and `--diff` answers "what changed from cpu_v6
to cpu", or "how was this checkpoint trained, against the recipe", key by key, for each stage.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kndnet.commands import command, config_overrides

if TYPE_CHECKING:
    from kndnet.config import Config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="a packaged recipe's name (cpu, cpu_v6, method, demo, ...), a YAML file, a run's "
                   "saved config.yaml or a checkpoint (.ckpt: the config it was trained with)")
    p.add_argument("--role", choices=["teacher", "student", "distill"], action="append",
                   help="the stage(s) of a recipe to show (repeatable; default: all three)")
    p.add_argument("--diff", metavar="OTHER", help="print only the keys whose value differs from OTHER (any of the "
                   "above), as OTHER's value -> RECIPE's, for the stages both have")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of RECIPE (not of OTHER), e.g. --set train.epochs=3 (repeatable)")


def configs_of(source: str, roles: list[str], overrides: dict | None = None) -> dict[str, Config]:
    """{role: Config} of a recipe's wanted stages, or the one stage a checkpoint or a run's config.yaml holds."""
    from kndnet.checkpoint import load_config_from_checkpoint
    from kndnet.config import file_layer, flatten_keys, load_config, recipe_path
    if source.endswith(".ckpt"):
        saved = load_config_from_checkpoint(source)
        keys = {**flatten_keys(saved.to_dict()), **(overrides or {})}
        return {saved.role: load_config(None, keys, role=saved.role)}
    saved_role = file_layer(recipe_path(source), "student").get("role")  # only a flat config names its role
    if saved_role:
        return {saved_role: load_config(source, overrides, role=saved_role)}
    return {role: load_config(source, overrides, role=role) for role in roles}


def _difference_lines(configs: dict[str, Config], other: dict[str, Config]) -> list[str]:
    from kndnet.config import OPERATIONAL_KEYS, config_differences
    return [f"{role}  {key}: {old!r} -> {new!r}" + ("  (how it runs, not what it trains)"
                                                    if key in OPERATIONAL_KEYS else "")
            for role, cfg in configs.items() if role in other
            for key, (old, new) in config_differences(other[role], cfg).items() if key != "role"]


@command("config", "print a recipe resolved for each stage, or its differences from another recipe or model",
         _config_args)
def _config(args: argparse.Namespace) -> int:
    import yaml

    from kndnet.config import ROLES
    from kndnet.errors import ConfigError
    roles = args.role or list(ROLES)
    configs = configs_of(args.recipe, roles, config_overrides(args))
    if not args.diff:
        print(yaml.safe_dump({role: {k: v for k, v in cfg.to_dict().items() if k != "role"}
                              for role, cfg in configs.items()}, sort_keys=False), end="")
        return 0
    other = configs_of(args.diff, list(configs))
    if not set(configs) & set(other):
        raise ConfigError(f"{args.recipe} holds the {', '.join(configs)} stage(s) and {args.diff} the "
                          f"{', '.join(other)} stage(s): nothing to compare; pass --role or a matching model")
    lines = _difference_lines(configs, other)
    print("\n".join(lines) if lines else f"no differences between {args.diff} and {args.recipe}")
    return 0
