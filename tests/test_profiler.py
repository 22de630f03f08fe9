"""train.profiler: Lightning's profiler over a run, its report in the run directory; a resume may switch it."""

from __future__ import annotations

import pytest

from kndnet.config import load_config, recipe_differences
from kndnet.errors import ConfigError
from kndnet.training.fit import fit
from tests.helpers import tiny_config


def test_a_profiled_run_writes_where_its_steps_time_went(synth_manifest, tmp_path):
    fit(tiny_config("student", synth_manifest, **{"train.epochs": 1, "train.profiler": "simple"}), tmp_path)
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "training_step" in report


def test_an_unprofiled_run_writes_no_report(synth_manifest, tmp_path):
    fit(tiny_config("student", synth_manifest, **{"train.epochs": 1}), tmp_path)
    assert not (tmp_path / "fit-profile.txt").exists()


def test_an_unknown_profiler_is_refused_by_key():
    with pytest.raises(ConfigError, match="train.profiler.*simple"):
        load_config(overrides={"train.profiler": "fancy"})


def test_profiling_is_not_a_change_of_recipe():
    saved = load_config().to_dict()
    assert recipe_differences(saved, load_config(overrides={"train.profiler": "simple"})) == []
