"""kndnet.stage_times: each stage's wall time over every start of a run, and the report's Compute section."""

from __future__ import annotations

import pandas as pd
import pytest

from kndnet.stage_times import compute_section, run_compute, timed_stage


def _metrics(folder, seconds) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": range(len(seconds)), "train_seconds": seconds}).to_csv(folder / "metrics.csv", index=False)


def _times(out, rows) -> None:
    pd.DataFrame(rows, columns=["start", "stage", "status", "seconds"]).to_csv(out / "stage_times.csv", index=False)


def test_each_start_is_recorded_as_it_ended(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with timed_stage(tmp_path, "teacher"):
            raise KeyboardInterrupt
    with timed_stage(tmp_path, "teacher"):
        pass
    with timed_stage(tmp_path, "student") as entry:
        entry["status"] = "skipped"
    with timed_stage(tmp_path, "distill", enabled=False):  # a DDP rank that does not own the run folder
        pass
    times = pd.read_csv(tmp_path / "stage_times.csv")
    assert times["stage"].tolist() == ["teacher"] * 4 + ["student"] * 2
    assert times["status"].tolist() == ["started", "raised", "started", "ran", "started", "skipped"]
    assert times["seconds"].isna().tolist() == [True, False] * 3


def test_minutes_sum_the_timed_starts_and_name_the_untimed_ones(tmp_path):
    _times(tmp_path, [("t0", "teacher", "started", None), ("t0", "teacher", "raised", 600.0),
                      ("t1", "teacher", "started", None),  # killed outright: no end row
                      ("t2", "teacher", "started", None), ("t2", "teacher", "ran", 300.0),
                      ("t2", "student", "started", None), ("t2", "student", "skipped", 0.2),
                      ("t2", "report", "started", None)])  # running now: neither timed nor killed
    stages = run_compute(tmp_path)["stages"]
    assert stages == {"teacher": {"seconds": 900.0, "killed_starts": 1},
                      "student": {"seconds": None, "killed_starts": 0}}
    section = "\n".join(compute_section(run_compute(tmp_path)))
    assert "| teacher | 15.0 (+ 1 start killed untimed) |" in section
    assert "| student | not recorded |" in section and "| all timed | 15.0 |" in section


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
    assert "| distill |" in section and "| all timed |" in section and "A KD epoch" not in section


def test_a_record_that_cannot_be_written_warns_and_the_stage_goes_on(tmp_path):
    from kndnet.errors import KNDNetWarning
    (tmp_path / "stage_times.csv").mkdir()  # not a file: appending to it fails
    ran = False
    with pytest.warns(KNDNetWarning, match="could not record the stage time"):
        with timed_stage(tmp_path, "teacher"):
            ran = True
    assert ran


def test_a_row_cut_short_by_a_killed_write_costs_only_that_row(tmp_path):
    path = tmp_path / "stage_times.csv"
    with timed_stage(tmp_path, "teacher"):
        pass
    with open(path, "a") as handle:
        handle.write("2026-12-05T07:13:23+00:00,stud")  # killed mid-row: no newline
    with timed_stage(tmp_path, "distill"):  # the next start begins a line of its own
        pass
    times = pd.read_csv(path, on_bad_lines="skip")
    assert times.query("stage == 'distill'")["status"].tolist() == ["started", "ran"]  # its start row kept
    with open(path, "a") as handle:
        handle.write("2026-12-05T08:00:00+00:00,distill,started,\n")  # a start killed outright, then
        handle.write("2026-12-05T08:00:00+00:00,distill,ra")  # a row cut inside its status: not an end
    with timed_stage(tmp_path, "student"):
        pass
    stages = run_compute(tmp_path)["stages"]
    assert list(stages) == ["teacher", "distill", "student"] and stages["distill"]["killed_starts"] == 1


def test_an_unreadable_record_warns_and_the_report_goes_on(tmp_path):
    from kndnet.errors import KNDNetWarning
    (tmp_path / "stage_times.csv").write_text("start,stage,status,seconds\na,b,c,d,e,f\n\"unclosed\n")
    with pytest.warns(KNDNetWarning, match="stage_times.csv could not be read"):
        stages = run_compute(tmp_path)["stages"]
    assert stages == {}
