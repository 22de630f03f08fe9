"""scripts/same_run.py: whether two runs are the same run, stage by stage (epoch logs, weights, scores)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from tests.helpers import load_script


def _stage(run: Path, name: str, losses: list[float], seconds: list[float], weight: float) -> None:
    folder = run / name
    (folder / "checkpoints").mkdir(parents=True)
    pd.DataFrame({"epoch": range(len(losses)), "train_seconds": seconds, "train/loss": losses,
                  "val/macro_f1": [0.5] * len(losses)}).to_csv(folder / "metrics.csv", index=False)
    torch.save({"state_dict": {"w": torch.full((2, 3), weight), "empty": torch.zeros(0)}},
               folder / "checkpoints" / "best.ckpt")


def _evaluation(run: Path, name: str, macro_f1: float) -> None:
    folder = run / "eval" / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"model": str(run / "distill"), "macro_f1": macro_f1}))


def _run(root: Path, name: str, second_loss: float = 0.9, weight: float = 1.0, macro_f1: float = 0.6) -> Path:
    run = root / name
    _stage(run, "student", [1.2, second_loss], [40.0 + len(name), 41.0], weight)
    _evaluation(run, "student", macro_f1)
    (run / "teacher_cache").mkdir()  # a folder that is no training stage
    return run


def test_a_rerun_with_other_timings_and_paths_is_the_same_run(tmp_path, capsys):
    same_run = load_script("same_run")
    assert same_run.main([str(_run(tmp_path, "a")), str(_run(tmp_path, "bb"))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["same       student: 2 epochs, epoch logs identical, best weights identical",
                   "same       eval/student: scores identical"]


def test_the_first_differing_epoch_weights_and_scores_are_named(tmp_path, capsys):
    same_run = load_script("same_run")
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b", second_loss=0.91, weight=1.25, macro_f1=0.61)
    assert same_run.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT  student: 2 epochs, epoch 2 differs first (train/loss), best weights differ by up to 0.25" in out
    assert "DIFFERENT  eval/student: 1 differ: macro_f1 0.6 -> 0.61" in out


def test_a_stage_missing_from_the_rerun_fails(tmp_path, capsys):
    same_run = load_script("same_run")
    a = _run(tmp_path, "a")
    _stage(a, "distill", [1.0], [50.0], 1.0)
    assert same_run.main([str(a), str(_run(tmp_path, "b"))]) == 1
    assert f"DIFFERENT  distill: missing from {tmp_path / 'b'}" in capsys.readouterr().out


def test_checkpoints_of_another_network_are_told_apart_from_close_weights(tmp_path):
    same_run = load_script("same_run")
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2, 3)}}, a)
    torch.save({"state_dict": {"w": torch.ones(3, 2)}}, b)
    assert same_run.weight_difference(a, b) == float("inf")
    torch.save({"state_dict": {"v": torch.ones(2, 3)}}, b)
    assert same_run.weight_difference(a, b) == float("inf")
