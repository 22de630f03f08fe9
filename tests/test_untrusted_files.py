"""Files from elsewhere never run code: a pickle whose __reduce__ would create a file is fed through every
loading path (checkpoints, warm start, resume, teacher weights, cached teacher logits, decoded image cache);
each must refuse it with an error that says so, and the file must not exist afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kndnet.checkpoint import load_config_from_checkpoint, load_model, read_checkpoint
from kndnet.cli import main
from kndnet.data.cache import DecodedCache
from kndnet.distill.teacher_cache import INDEX_NAME, TeacherCache
from kndnet.errors import CheckpointError, DataError
from kndnet.evaluation.calibration import write_temperature
from kndnet.inference import open_predictor
from kndnet.models.teachers import create_teacher
from kndnet.training.fit import fit
from kndnet.training.module import LesionClassifier
from tests.helpers import tiny_config


class _Payload:
    """Unpickling this calls open(target, "w"): the file appearing is proof that pickled code ran."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def bomb(tmp_path):
    """A checkpoint-shaped file carrying the payload, and the file the payload would create."""
    ran = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "kndnet": {"spec": {}, "config": {}},
                "payload": _Payload(ran)}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load does run it
    assert ran.exists()
    ran.unlink()
    return path, ran


CHECKPOINT_LOADERS = {
    "read_checkpoint": read_checkpoint,
    "load_model": load_model,
    "load_config_from_checkpoint": load_config_from_checkpoint,
    "open_predictor": open_predictor,
    "write_temperature (calibrate)": lambda p: write_temperature(p, 1.5, p.with_name("out.ckpt")),
}


@pytest.mark.parametrize("loader", CHECKPOINT_LOADERS.values(), ids=CHECKPOINT_LOADERS.keys())
def test_checkpoint_loaders_refuse_a_pickle_that_runs_code(bomb, loader):
    path, ran = bomb
    refused = f"(?s){path.name}: refused to load this KNDNet checkpoint: it holds pickled objects \\(io.open\\)"
    with pytest.raises(CheckpointError, match=refused):
        loader(path)
    assert not ran.exists()


@pytest.mark.parametrize("command", [["predict", "IMAGE"], ["evaluate", "--data", "MANIFEST", "--out", "OUT"],
                                     ["export", "--out", "OUT"], ["explain", "IMAGE", "--out", "OUT"]])
def test_commands_taking_a_model_refuse_it(bomb, command, synth_dir, synth_manifest, tmp_path, capsys):
    path, ran = bomb
    image = str(next(synth_dir.rglob("*.jpg")))
    args = [{"IMAGE": image, "MANIFEST": str(synth_manifest), "OUT": str(tmp_path / "out")}.get(a, a)
            for a in command]
    assert main([*args, "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused to load this KNDNet checkpoint" in err and "weights_only=False" not in err
    assert not ran.exists()


def test_warm_start_refuses_it(bomb, synth_manifest):
    path, ran = bomb
    cfg = tiny_config("distill", synth_manifest, **{"train.init_from": str(path)})
    with pytest.raises(CheckpointError, match="refused to load this KNDNet checkpoint"):
        LesionClassifier(cfg.to_dict(), class_counts=[1] * 7)
    assert not ran.exists()


def test_resuming_a_run_refuses_it(bomb, synth_manifest, tmp_path):
    path, ran = bomb
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="cannot resume: .*last.ckpt: refused to load this checkpoint: it holds "
                                              "pickled objects"):
        fit(tiny_config("student", synth_manifest), run)
    assert not ran.exists()


def test_teacher_weights_file_refuses_it(bomb):
    path, ran = bomb
    with pytest.raises(CheckpointError, match="evil.ckpt: refused to load this pretrained weights file: it holds "
                                              "pickled objects"):
        create_teacher("test_efficientnet", 7, pretrained=str(path))
    assert not ran.exists()


def _object_npy(path: Path, ran: Path) -> None:
    np.save(path, np.array([_Payload(ran)], dtype=object), allow_pickle=True)


def test_teacher_cache_refuses_pickled_logits(tmp_path):
    ran = tmp_path / "payload_ran"
    _object_npy(tmp_path / "logits_view0.npy", ran)
    (tmp_path / INDEX_NAME).write_text(json.dumps({"image_ids": ["a"], "views": 1, "seed": 0, "image_size": 32,
                                                   "load_size": 37}))
    with pytest.raises(DataError, match="logits_view0.npy"):
        TeacherCache.load(tmp_path)
    assert not ran.exists()


def test_decoded_image_cache_refuses_pickled_arrays(tmp_path):
    ran = tmp_path / "payload_ran"
    _object_npy(tmp_path / "images.npy", ran)
    with pytest.raises(ValueError, match="Python objects"):
        DecodedCache(tmp_path / "images.npy", ["a"])[0]
    assert not ran.exists()
