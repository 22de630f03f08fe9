"""The layers depend only downward: evaluation, export and prediction never import Lightning or training/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kndnet"


def test_lower_layers_never_import_training():
    for layer in ("data", "distill", "evaluation", "deploy", "models"):
        for path in (SRC / layer).glob("*.py"):
            assert "kndnet.training" not in path.read_text(), path


def test_evaluate_export_and_predict_load_without_lightning():
    code = ("import sys; import kndnet.evaluation.run, kndnet.evaluation.calibration, kndnet.deploy.export, "
            "kndnet.predict, kndnet.distill.build; print('lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_checkpoint_from_a_newer_format_is_refused_by_name(tmp_path):
    import pytest
    import torch

    from kndnet.checkpoint import SPEC_KEY, read_checkpoint
    from kndnet.errors import CheckpointError
    path = tmp_path / "future.ckpt"
    torch.save({SPEC_KEY: {"format_version": 99, "spec": {}}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="future.ckpt: checkpoint format 99 is newer than this kndnet"):
        read_checkpoint(path)


def test_the_command_line_offers_exactly_the_splits_selection_knows():
    from kndnet.commands import SPLITS as CLI_SPLITS
    from kndnet.data.selection import SPLITS
    assert sorted(CLI_SPLITS) == sorted(SPLITS)
