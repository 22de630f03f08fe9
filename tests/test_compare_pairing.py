"""`kndnet compare` pairs evaluations by the images they scored, not by the path of their data."""

from __future__ import annotations

import pytest

from kndnet.cli import main
from kndnet.errors import DataError
from kndnet.evaluation.compare import read_scores
from tests.helpers import hand_made_evaluation as _evaluation

IDS = [f"ISIC_{i:07d}" for i in range(40)]


def test_a_copied_manifest_pairs_with_its_original(tmp_path, capsys):
    a = _evaluation(tmp_path / "a", "runs/v3/manifest.csv", IDS, seed=0)
    b = _evaluation(tmp_path / "b", "runs/v6/manifest.csv", IDS, seed=1)
    assert main(["compare", str(a), str(b), "--names", "x,y", "--out", str(tmp_path / "c")]) == 0
    assert "| model minus x |" in (tmp_path / "c" / "comparison.md").read_text()


def test_other_images_of_the_same_count_are_refused_by_id(tmp_path, capsys):
    a = _evaluation(tmp_path / "a", "same.csv", IDS, seed=0)
    b = _evaluation(tmp_path / "b", "same.csv", IDS[:-1] + ["ISIC_9999999"], seed=1)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c")]) == 2
    assert "scored different images" in capsys.readouterr().err
    assert not (tmp_path / "c" / "comparison.md").exists()


def test_reading_scores_from_a_folder_without_predictions_names_the_file(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match=r"e/predictions.csv not found: .*e is not a `kndnet evaluate --out` folder"):
        read_scores(tmp_path / "e")
