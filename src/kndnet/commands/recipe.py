"""`kndnet config`: a recipe as every command resolves it, or what differs between two recipes.

Why: a recipe may `extends:` another and set only a few keys, and a role's section overrides `common`, so what a
stage will train is not what any one file says; this prints it, and `--diff` answers "what changed from cpu_v6
to cpu" key by key, for each role.
"""

from __future__ import annotations

import argparse

from kndnet.commands import command, config_overrides


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="a packaged recipe's name (cpu, cpu_v6, method, demo, ...) or a YAML file")
    p.add_argument("--role", choices=["teacher", "student", "distill"], action="append",
                   help="the stage(s) to show (repeatable; default: all three)")
    p.add_argument("--diff", metavar="OTHER", help="print only the keys whose value differs from recipe OTHER, "
                   "as OTHER's value -> RECIPE's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of RECIPE (not of OTHER), e.g. --set train.epochs=3 (repeatable)")


@command("config", "print a recipe resolved for each stage, or its differences from another recipe", _config_args)
def _config(args: argparse.Namespace) -> int:
    import yaml

    from kndnet.config import OPERATIONAL_KEYS, ROLES, config_differences, load_config
    roles = args.role or list(ROLES)
    overrides = config_overrides(args)
    configs = {role: load_config(args.recipe, overrides, role=role) for role in roles}
    if not args.diff:
        print(yaml.safe_dump({role: {k: v for k, v in cfg.to_dict().items() if k != "role"}
                              for role, cfg in configs.items()}, sort_keys=False), end="")
        return 0
    lines = [f"{role}  {key}: {old!r} -> {new!r}" + ("  (how it runs, not what it trains)"
                                                     if key in OPERATIONAL_KEYS else "")
             for role, cfg in configs.items()
             for key, (old, new) in config_differences(load_config(args.diff, role=role), cfg).items()]
    print("\n".join(lines) if lines else f"no differences between {args.diff} and {args.recipe}")
    return 0
