"""`kndnet run` / `kndnet demo`: the whole method, stage by stage, resumable.

Stages: prepare -> teacher -> teacher views cache -> student alone -> distillation (warm start from
the student, cached teacher views) -> evaluation of all three on the held-out test split (+ TTA)
-> int8 export -> bench -> report.md. A finished stage leaves its marker file and is skipped on a
re-run; an interrupted training stage resumes from its last checkpoint.

A pipeline recipe is a YAML with a `common` section (keys of the Config object, shared by every
stage, e.g. the data split) and one section per role (`teacher`, `student`, `distill`) whose keys
override `common` for that stage. Student and KD share one recipe unless a section says otherwise,
which is what makes the ablation honest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from kndnet.config import Config, flatten_keys, load_config
from kndnet.errors import KNDNetError

ROLES = ("teacher", "student", "distill")
RECIPES = Path(__file__).parent / "recipes"


def recipe_path(name_or_path: str) -> Path:
    """A recipe file path, or the name of a packaged recipe (demo, cpu, method)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = RECIPES / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    raise KNDNetError(f"recipe {name_or_path!r} not found; pass a YAML file or one of "
                      + ", ".join(p.stem for p in sorted(RECIPES.glob("*.yaml"))))


def stage_configs(recipe: str | Path, data: str, overrides: dict[str, Any] | None = None) -> dict[str, Config]:
    """One resolved Config per role from a pipeline recipe."""
    raw = yaml.safe_load(Path(recipe).read_text()) or {}
    unknown = set(raw) - {"common", *ROLES}
    if unknown:
        raise KNDNetError(f"{recipe}: unknown section(s) {', '.join(sorted(unknown))}; use common, "
                          + ", ".join(ROLES))
    common = flatten_keys(raw.get("common") or {})
    return {role: load_config(role=role, overrides={**common, **flatten_keys(raw.get(role) or {}),
                                                    **(overrides or {}), "data.path": data})
            for role in ROLES}


def _done(marker: Path) -> bool:
    return marker.is_file()


def run_pipeline(recipe: str | Path, data: str, out: str | Path, log=print) -> dict[str, Any]:
    """Run every stage into `out`; returns the final comparison summary."""
    from kndnet.pipeline_stages import STAGES
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(recipe, out / "recipe.yaml")
    configs = stage_configs(recipe, data)
    state: dict[str, Any] = {}
    for name, stage in STAGES:
        log(f"== {name}")
        state[name] = stage(configs, out, state, log)
    return json.loads((out / "summary.json").read_text())
