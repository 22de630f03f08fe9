"""kndnet.stage_times: each stage's wall time over every start of a run, and the report's Compute section."""

from __future__ import annotations

import pandas as pd
import pytest

from kndnet.stage_times import compute_section, run_compute, timed_stage


def _metrics(folder, seconds) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": range(len(seconds)), "train_seconds": seconds}).to_csv(folder / "metrics.csv", index=False)


def test_an_interrupted_start_is_recorded_and_a_resumed_one_adds_to_it(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with timed_stage(tmp_path, "teacher"):
            raise KeyboardInterrupt
    for stage in ("teacher", "student"):
        with timed_stage(tmp_path, stage):
            pass
    times = pd.read_csv(tmp_path / "stage_times.csv")
    assert times["stage"].tolist() == ["teacher", "teacher", "student"]
    assert times["finished"].tolist() == [False, True, True]
    times.loc[:, "seconds"] = [600.0, 300.0, 60.0]
    times.to_csv(tmp_path / "stage_times.csv", index=False)
    assert run_compute(tmp_path)["stage_minutes"] == {"teacher": 15.0, "student": 1.0}


def test_epoch_seconds_cover_every_training_folder_and_give_the_kd_cost(tmp_path):
    _metrics(tmp_path / "teacher", [100.0, 110.0, 120.0])
    _metrics(tmp_path / "teacher_tf_efficientnet_lite0", [80.0, 81.0])
    _metrics(tmp_path / "student", [90.0, 40.0, 38.0])  # the first epoch compiles
    _metrics(tmp_path / "distill", [120.0, 74.0, 76.0])
    compute = run_compute(tmp_path)
    assert compute["epoch_seconds"]["student"] == {"epochs": 3, "median": 40.0, "total": 168.0}
    assert set(compute["epoch_seconds"]) == {"teacher", "teacher_tf_efficientnet_lite0", "student", "distill"}
    assert compute["kd_vs_alone_epoch"] == pytest.approx(76.0 / 40.0, abs=0.005)
    section = "\n".join(compute_section(compute))
    assert "Stage times were not recorded" in section  # no stage_times.csv in this folder
    assert "| student | 3 | 40.0 | 2.8 |" in section and "A KD epoch took 1.90x" in section


def test_a_run_without_a_student_alone_has_no_kd_cost_ratio(tmp_path):
    _metrics(tmp_path / "distill", [70.0])
    with timed_stage(tmp_path, "distill"):
        pass
    compute = run_compute(tmp_path)
    assert compute["kd_vs_alone_epoch"] is None
    section = "\n".join(compute_section(compute))
    assert "| distill |" in section and "| all |" in section and "A KD epoch" not in section
