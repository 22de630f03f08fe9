"""One recipe format: every command reads the packaged recipes; the method's defaults live in method.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kndnet.config import RECIPES, ROLES, flatten_keys, load_config, recipe_path, resolved_recipe
from kndnet.errors import ConfigError
from kndnet.pipeline import stage_configs


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
@pytest.mark.parametrize("role", ROLES)
def test_every_packaged_recipe_reads_as_a_config_for_every_role(name, role):
    cfg = load_config(name, role=role)
    raw = yaml.safe_load(recipe_path(name).read_text())
    for dotted, value in {**flatten_keys(raw.get("common") or {}), **flatten_keys(raw.get(role) or {})}.items():
        section, key = dotted.split(".")
        assert getattr(getattr(cfg, section), key) == value, dotted


def test_train_config_equals_the_pipeline_stage_config():
    """`kndnet train --config cpu` and `kndnet run --config cpu` must train the same recipe."""
    for role, staged in stage_configs(recipe_path("cpu"), "/data").items():
        assert load_config("cpu", {"data.path": "/data"}, role=role).to_dict() == staged.to_dict()


def test_the_methods_defaults_come_from_method_yaml():
    method = yaml.safe_load(recipe_path("method").read_text())
    for role in ROLES:
        cfg = load_config(role=role)
        for dotted, value in flatten_keys(method[role]).items():
            section, key = dotted.split(".")
            assert getattr(getattr(cfg, section), key) == value, (role, dotted)
    assert load_config(role="student").data.num_workers != method["common"]["data"]["num_workers"]


def test_an_unknown_recipe_section_or_name_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"common": {}, "studnet": {"train": {"epochs": 1}}}))
    with pytest.raises(ConfigError, match="unknown recipe section.*studnet"):
        load_config(path, role="student")
    with pytest.raises(ConfigError, match="'cpux' not found; pass a YAML file or one of .*cpu_v1"):
        load_config("cpux")


def test_cpu_recipe_is_function_matching_with_one_training_recipe_for_both_students():
    student, kd = load_config("cpu", role="student"), load_config("cpu", role="distill")
    assert kd.distill.views == 0 and kd.distill.loss == "hinton"
    assert student.data.view_size == kd.data.view_size == load_config("cpu", role="teacher").data.image_size
    assert student.train.mixup_alpha > 0 and student.train.ema_decay > 0


def test_cpu_v5_teachers_are_the_cpu_v1_teacher_recipe_with_a_lite0_member():
    """The recipe's claim: the ensemble's members are trained as the runs/v9 teachers were (cpu_v5 exactly; cpu at
    twice the learning rate, checked above)."""
    teacher, first = load_config("cpu_v5", role="teacher").to_dict(), load_config("cpu_v1", role="teacher").to_dict()
    assert teacher["model"].pop("ensemble") == "tf_efficientnet_lite0" and first["model"].pop("ensemble") == ""
    assert teacher == first


def test_the_teacher_runtime_is_how_a_run_executes_not_what_it_trains():
    """A cpu-recipe run made with the PyTorch teacher resumes under `auto` (the same logits to ~1e-5)."""
    from kndnet.config import recipe_differences
    now = load_config("cpu", role="distill")
    before = load_config("cpu", role="distill", overrides={"distill.teacher_runtime": "torch"})
    assert now.distill.teacher_runtime == "auto"
    assert recipe_differences(before.to_dict(), now) == []


def test_splitting_the_teachers_batch_is_how_a_run_executes_not_what_it_trains():
    """The split teacher gives every image the same logits, so a run made either way resumes the other way."""
    from kndnet.config import recipe_differences
    one_call = load_config("cpu", role="distill", overrides={"distill.teacher_split_batch": False})
    now = load_config("cpu", role="distill")
    assert now.distill.teacher_split_batch and recipe_differences(one_call.to_dict(), now) == []


def test_cpu_v5_is_cpu_v4_with_int8_teachers_and_says_so_on_a_resume():
    """cpu_v4 must stay the runs/v17 recipe: it and cpu_v5 (runs/v20) differ in the teachers' precision only, and
    that is a recipe key (a KD folder distilled from fp32 teachers is not resumed as an int8 one)."""
    from kndnet.config import recipe_differences
    for role in ROLES:
        now, before = load_config("cpu_v5", role=role).to_dict(), load_config("cpu_v4", role=role).to_dict()
        assert now["distill"].pop("teacher_int8") is (role == "distill")
        assert before["distill"].pop("teacher_int8") is False
        assert now == before, role
    fp32_run = load_config("cpu_v4", role="distill").to_dict()
    int8_run = load_config("cpu_v5", role="distill")
    assert recipe_differences(fp32_run, int8_run) == ["distill.teacher_int8: False -> True"]


def test_cpu_v6_is_cpu_v5_with_the_teachers_at_lr_1e3_and_says_so_on_a_resume():
    """cpu_v5 must stay the runs/v20 recipe (the student shipped until runs/v34): cpu_v6 (runs/v38) changes the
    teachers' learning rate alone (runs/v30), so both students' sections are the same and a runs/v20 teacher folder
    is not resumed as a cpu_v6 one."""
    from kndnet.config import recipe_differences
    for role in ROLES:
        now, before = load_config("cpu_v6", role=role).to_dict(), load_config("cpu_v5", role=role).to_dict()
        if role == "teacher":
            assert (before["train"].pop("lr"), now["train"].pop("lr")) == (0.0005, 0.001)
        assert now == before, role
    v20_teacher = load_config("cpu_v5", role="teacher").to_dict()
    assert recipe_differences(v20_teacher, load_config("cpu_v6", role="teacher")) == ["train.lr: 0.0005 -> 0.001"]


def test_cpu_is_cpu_v6_with_mobilenet_students_for_50_epochs_and_says_so_on_a_resume():
    """cpu_v6 must stay the runs/v38 recipe: `cpu` changes both students' block and schedule alone (runs/v41-v42),
    so its teachers are runs/v38's and a runs/v38 student folder is not resumed as a cpu one."""
    from kndnet.config import recipe_differences
    for role in ROLES:
        now, before = load_config("cpu", role=role).to_dict(), load_config("cpu_v6", role=role).to_dict()
        if role != "teacher":
            assert (before["model"].pop("student_block"), now["model"].pop("student_block")) == ("method", "mobilenet")
            assert (before["train"].pop("epochs"), now["train"].pop("epochs")) == (25, 50)
        assert now == before, role
    v38_kd = load_config("cpu_v6", role="distill").to_dict()
    assert recipe_differences(v38_kd, load_config("cpu", role="distill")) == [
        "model.student_block: 'method' -> 'mobilenet'", "train.epochs: 25 -> 50"]


def test_the_configs_folder_links_to_the_packaged_recipes():
    """The README points newcomers at configs/: its link must resolve from a checkout (it once pointed nowhere)."""
    from pathlib import Path
    linked = Path(__file__).resolve().parents[1] / "configs" / "recipes"
    assert sorted(p.name for p in linked.glob("*.yaml")) == sorted(p.name for p in RECIPES.glob("*.yaml"))


GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "recipes_resolved.json").read_text())


def _differences_from_record(name: str, record: dict) -> list[str]:
    """'role key: recorded -> now' for each key whose resolution moved; the record holds the keys off the role's
    defaults, so every key it lacks must still hold its default."""
    moved = []
    for role in ROLES:
        pinned, defaults = flatten_keys(record[role]), flatten_keys(load_config(role=role).to_dict())
        resolved = flatten_keys(load_config(name, role=role).to_dict())
        moved += [f"{role} {key}: gone" for key in sorted(set(pinned) - set(resolved))]
        moved += [f"{role} {key}: {pinned.get(key, defaults[key])!r} -> {value!r}" for key, value in resolved.items()
                  if value != pinned.get(key, defaults[key])]
    return moved


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_recipe_resolves_as_it_did_when_its_runs_were_made(name):
    """Earlier recipes stay reproducible under their names although they `extends:` their successors: an edit to
    `cpu` that reached `cpu_v6` fails here. Regenerate the file (tests/fixtures/make_recipes_resolved.py) only for
    a deliberate change to a recipe."""
    assert _differences_from_record(name, GOLDEN[name]) == []


def test_an_edit_to_cpu_that_reaches_cpu_v6_is_caught(monkeypatch):
    """The record holds only the keys off their defaults, so a key the toolkit adds later needs no new record, and
    a key set in `cpu` that reaches `cpu_v6`, recorded or not, is still caught."""
    import kndnet.config as config
    real = config.file_layer
    monkeypatch.setattr(config, "file_layer", lambda path, role, _chain=(): {
        **real(path, role, _chain), **({"train.warmup_epochs": 3} if Path(path).stem == "cpu" else {})})
    assert "student train.warmup_epochs: 0 -> 3" in _differences_from_record("cpu_v6", GOLDEN["cpu_v6"])


def test_every_packaged_recipe_has_a_resolved_record():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(GOLDEN)


def _write(path, mapping):
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_a_recipe_extends_another_and_everything_it_sets_wins(tmp_path):
    _write(tmp_path / "base.yaml", {"common": {"train": {"lr": 0.01}}, "student": {"train": {"epochs": 7}},
                                    "teacher": {"train": {"epochs": 3}}})
    child = _write(tmp_path / "child.yaml", {"extends": "base.yaml", "common": {"train": {"epochs": 2}},
                                             "teacher": {"train": {"lr": 0.5}}})
    student, teacher = load_config(child, role="student"), load_config(child, role="teacher")
    assert (student.train.epochs, student.train.lr) == (2, 0.01)  # the child's common beats the parent's student
    assert (teacher.train.epochs, teacher.train.lr) == (2, 0.5)


def test_a_recipe_extends_a_packaged_recipe_by_name(tmp_path):
    child = _write(tmp_path / "mine.yaml", {"extends": "cpu", "student": {"train": {"epochs": 3}}})
    cpu, mine = load_config("cpu", role="student").to_dict(), load_config(child, role="student").to_dict()
    assert mine["train"].pop("epochs") == 3 and cpu["train"].pop("epochs") == 50
    assert mine == cpu


def test_a_bad_extends_is_named(tmp_path):
    _write(tmp_path / "a.yaml", {"extends": "b.yaml", "student": {}})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml", "student": {}})
    with pytest.raises(ConfigError, match=r"`extends` loops back \(a.yaml -> b.yaml -> a.yaml\)"):
        load_config(tmp_path / "a.yaml", role="student")
    with pytest.raises(ConfigError, match="c.yaml: `extends: cpu_v99` names neither a file beside it nor a packaged"
                                          " recipe .cpu, cpu_v1"):
        load_config(_write(tmp_path / "c.yaml", {"extends": "cpu_v99"}), role="student")
    with pytest.raises(ConfigError, match="d.yaml: `extends` must name a packaged recipe.*not \\['cpu'\\]"):
        load_config(_write(tmp_path / "d.yaml", {"extends": ["cpu"]}), role="student")
    with pytest.raises(ConfigError, match="n.yaml: `extends` must name .*not None"):
        load_config(_write(tmp_path / "n.yaml", {"extends": None, "student": {}}), role="student")
    with pytest.raises(ConfigError, match="unknown recipe section.s. train; use common.*works in recipes only"):
        load_config(_write(tmp_path / "e.yaml", {"extends": "cpu", "train": {"epochs": 1}}), role="student")
    _write(tmp_path / "config.yaml", {"role": "student", "train": {"epochs": 4}})  # a run's saved config
    with pytest.raises(ConfigError, match="f.yaml: `extends` names .*config.yaml, a flat config .*extend a recipe"):
        load_config(_write(tmp_path / "f.yaml", {"extends": "config.yaml", "student": {}}), role="teacher")


def test_extends_looks_beside_the_recipe_not_in_the_working_folder(tmp_path, monkeypatch):
    _write(tmp_path / "base.yaml", {"student": {"train": {"epochs": 7}}})
    (tmp_path / "recipes").mkdir()
    child = _write(tmp_path / "recipes" / "child.yaml", {"extends": "base.yaml", "student": {}})
    monkeypatch.chdir(tmp_path)  # base.yaml is in the working folder, not beside child.yaml
    with pytest.raises(ConfigError, match="names neither a file beside it nor a packaged recipe"):
        load_config(child, role="student")
    _write(tmp_path / "recipes" / "base.yaml", {"student": {"train": {"epochs": 9}}})
    assert load_config(child, role="student").train.epochs == 9


def test_a_run_keeps_an_extending_recipe_written_out_whole(tmp_path):
    """runs/v38 was made with cpu_v6 when it was a full file; the copy a run keeps must not need the parent."""
    from kndnet.config import self_contained_recipe
    kept = self_contained_recipe("cpu_v6")
    assert "extends" not in yaml.safe_load(kept) and kept.startswith("# cpu_v6 recipe")
    path = tmp_path / "recipe.yaml"
    path.write_text(kept)
    for role in ROLES:
        assert load_config(path, role=role).to_dict() == load_config("cpu_v6", role=role).to_dict(), role
    assert self_contained_recipe("cpu") == recipe_path("cpu").read_text()  # a recipe of its own stays verbatim


def test_kndnet_config_prints_a_recipe_resolved_for_a_stage(capsys):
    from kndnet.cli import main
    assert main(["config", "cpu_v6", "--role", "student", "--set", "train.epochs=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_config("cpu_v6", {"train.epochs": 3}, role="student").to_dict()
    assert list(printed) == ["student"] and printed["student"] == {k: v for k, v in expected.items() if k != "role"}


def test_kndnet_config_diff_names_each_stage_key_that_differs(capsys):
    from kndnet.cli import main
    assert main(["config", "cpu_v6", "--diff", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "student  model.student_block: 'mobilenet' -> 'method'", "student  train.epochs: 50 -> 25",
        "distill  model.student_block: 'mobilenet' -> 'method'", "distill  train.epochs: 50 -> 25"]
    assert main(["config", "cpu_v1", "--diff", "cpu_v2", "--role", "distill"]) == 0
    out = capsys.readouterr().out
    assert "distill  distill.teacher_runtime: 'auto' -> 'torch'  (how it runs, not what it trains)" in out
    assert "distill  distill.loss: 'hinton' -> 'cmkd'\n" in out and "teacher" not in out.split()
    assert main(["config", "cpu", "--diff", "cpu"]) == 0
    assert capsys.readouterr().out == "no differences between cpu and cpu\n"
    assert main(["config", "cpu_v99"]) == 2
    assert "'cpu_v99' not found" in capsys.readouterr().err


def test_a_run_writes_its_recipe_once_and_a_resume_keeps_the_text_it_started_with(tmp_path):
    from kndnet.pipeline import keep_recipe
    kept = tmp_path / "recipe.yaml"
    keep_recipe(recipe_path("cpu_v6"), kept)
    assert "extends" not in yaml.safe_load(kept.read_text())
    kept.write_text("# the text the run began with\n" + kept.read_text())
    keep_recipe(recipe_path("cpu_v6"), kept)
    assert kept.read_text().startswith("# the text the run began with\n")
    keep_recipe(recipe_path("cpu"), kept)  # another recipe, nothing trained yet: the copy follows it
    assert kept.read_text() == recipe_path("cpu").read_text()


def _demo_with(tmp_path, name, text):
    recipe = tmp_path / name
    recipe.write_text(f"extends: demo\n{text}")
    return recipe


@pytest.mark.parametrize("edit, trained, refused", [
    ("student:\n  train:\n    lr: 0.01\n", "student", "student: train.lr: 0.003 -> 0.01"),
    ("common:\n  data:\n    batch_size: 8\n", "teacher_test_efficientnet_gn", "teacher: data.batch_size: 16 -> 8"),
    ("teacher:\n  model:\n    ensemble: test_efficientnet_gn\n", "distill",
     "distill: teacher model.ensemble: '' -> 'test_efficientnet_gn'"),
    ("student:\n  train:\n    lr: 0.01\n", "distill", None),  # the student's change, only KD trained: kept
    ("common:\n  data:\n    num_workers: 2\n", "student", None),  # how it runs, not what it trains
])
def test_a_changed_recipe_is_refused_before_its_copy_is_overwritten(tmp_path, edit, trained, refused):
    """The run folder's recipe.yaml names the recipe its results came from: a recipe that changes what a trained
    stage trained stops before the copy is replaced (the stage would refuse to reuse its run anyway)."""
    from kndnet.pipeline import keep_recipe
    kept = tmp_path / "run" / "recipe.yaml"
    (tmp_path / "run" / trained / "checkpoints").mkdir(parents=True)
    keep_recipe(_demo_with(tmp_path, "first.yaml", ""), kept)
    original = kept.read_text()
    edited = _demo_with(tmp_path, "edited.yaml", edit)
    if refused is None:
        keep_recipe(edited, kept)
        assert resolved_recipe(kept) == resolved_recipe(edited)
        return
    with pytest.raises(ConfigError) as error:
        keep_recipe(edited, kept)
    assert refused in str(error.value) and f"its {trained} trained with {kept}" in str(error.value)
    assert kept.read_text() == original


def test_kndnet_config_compares_a_checkpoint_with_the_recipe_it_was_trained_with(capsys, tmp_path):
    """The shipped student was trained with a packaged recipe's KD stage: against it only where it read its data
    and teachers differs; against the demo recipe what it trained differs too."""
    from kndnet.cli import main
    from kndnet.shipped import SHIPPED_CHECKPOINT

    def differences(recipe: str) -> list[str]:
        assert main(["config", str(SHIPPED_CHECKPOINT), "--diff", recipe]) == 0
        return capsys.readouterr().out.splitlines()
    trained_with = [name for name in sorted(GOLDEN) if all(
        line.startswith("no differences") or line.endswith("(how it runs, not what it trains)")
        for line in differences(name))]
    assert trained_with, "the shipped student matches no packaged recipe's KD stage"
    assert any(not line.endswith("(how it runs, not what it trains)") for line in differences("demo"))
    saved = tmp_path / "config.yaml"  # a run's saved config names its one stage
    from kndnet.config import save_config
    save_config(load_config("cpu", {"train.epochs": 4}, role="teacher"), saved)
    assert main(["config", str(saved), "--diff", "cpu"]) == 0
    assert capsys.readouterr().out == "teacher  train.epochs: 12 -> 4\n"
    assert main(["config", str(saved), "--diff", str(SHIPPED_CHECKPOINT)]) == 2
    assert "holds the teacher stage(s) and" in capsys.readouterr().err


def test_kndnet_run_with_an_edited_recipe_stops_before_anything_runs(tmp_path, capsys):
    from kndnet.cli import main
    out = tmp_path / "run"
    (out / "student" / "checkpoints").mkdir(parents=True)
    (out / "recipe.yaml").write_text(recipe_path("demo").read_text())
    edited = _demo_with(tmp_path, "edited.yaml", "student:\n  train:\n    lr: 0.01\n")
    assert main(["run", "--config", str(edited), "--data", str(tmp_path / "no_data"), "--out", str(out)]) == 2
    assert "holds a run of another recipe (student: train.lr: 0.003 -> 0.01" in capsys.readouterr().err
    assert (out / "recipe.yaml").read_text() == recipe_path("demo").read_text()
    assert sorted(path.name for path in out.iterdir()) == ["recipe.yaml", "student"]  # no stage began
