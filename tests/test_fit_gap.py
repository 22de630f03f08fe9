"""scripts/fit_gap.py: agreement and KL of a student against its teacher, read from `kndnet evaluate` folders."""

from __future__ import annotations

import numpy as np
import pytest

from kndnet.errors import KNDNetError
from tests.helpers import load_script, predictions_folder


def test_agreement_and_kl_against_hand_computed_values(tmp_path):
    fit_gap = load_script("fit_gap")
    teacher = np.full((2, 7), 0.05)
    teacher[0, 5], teacher[1, 4] = 0.7, 0.7
    student = np.full((2, 7), 0.1)
    student[0, 5], student[1, 0] = 0.4, 0.4  # agrees on the first image only
    t = fit_gap.probabilities(predictions_folder(tmp_path / "t", ["a", "b"], teacher))
    s = fit_gap.probabilities(predictions_folder(tmp_path / "s", ["b", "a"], student[::-1]))  # rows in another order
    gap = fit_gap.fit_gap(t, s)
    kl_a = 0.7 * np.log(0.7 / 0.4) + 6 * 0.05 * np.log(0.05 / 0.1)
    kl_b = 0.7 * np.log(0.7 / 0.1) + 0.05 * np.log(0.05 / 0.4) + 5 * 0.05 * np.log(0.05 / 0.1)
    assert gap.agreement == 0.5 and gap.kl == pytest.approx((kl_a + kl_b) / 2, abs=1e-6)
    assert fit_gap.fit_gap(t, t) == (1.0, pytest.approx(0.0, abs=1e-6))


def test_a_student_scored_on_other_images_is_refused_by_name(tmp_path, capsys):
    fit_gap = load_script("fit_gap")
    probs = np.full((2, 7), 1 / 7)
    teacher = predictions_folder(tmp_path / "t", ["a", "b"], probs)
    student = predictions_folder(tmp_path / "s", ["a", "c"], probs)
    with pytest.raises(KNDNetError, match="1 of the teacher's images .e.g. b"):
        fit_gap.fit_gap(fit_gap.probabilities(teacher), fit_gap.probabilities(student))
    assert fit_gap.main([str(teacher), str(tmp_path / "nowhere")]) == 2
    assert "predictions.csv not found" in capsys.readouterr().err


def test_usage_errors_exit_2_and_help_exits_0(capsys):
    fit_gap = load_script("fit_gap")
    with pytest.raises(SystemExit) as missing_student:
        fit_gap.main(["teacher_eval"])
    with pytest.raises(SystemExit) as help_asked:
        fit_gap.main(["--help"])
    assert (missing_student.value.code, help_asked.value.code) == (2, 0)
    assert "KL(teacher || student)" in capsys.readouterr().out
