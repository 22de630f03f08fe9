"""Atomic writes: a writer that fails or is killed mid-write leaves the old file or the complete new one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kndnet.checkpoint import ModelSpec, read_checkpoint, save_model_checkpoint
from kndnet.config import load_config
from kndnet.data.manifest import write_csv_atomic
from kndnet.io import atomic_path, atomic_write_json, atomic_write_text
from kndnet.models import create_model


class _Interrupted(Exception):
    pass


def _truncate_and_raise(target) -> None:
    """Cut a just-written file to its first half and fail, as a crash in the middle of the write would."""
    content = open(target, "rb").read()
    open(target, "wb").write(content[: len(content) // 2])
    raise _Interrupted("simulated crash mid-write")


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(_Interrupted):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise _Interrupted
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_json_and_csv_writers_interrupted_mid_write_keep_the_old_file(tmp_path, monkeypatch):
    json_path, csv_path = tmp_path / "m.json", tmp_path / "m.csv"
    atomic_write_json(json_path, {"accuracy": 0.5})
    write_csv_atomic(pd.DataFrame({"a": [1, 2]}), csv_path)
    real_write_text, real_to_csv = Path.write_text, pd.DataFrame.to_csv

    def half_text(self, text, *args, **kwargs):
        real_write_text(self, text, *args, **kwargs)
        _truncate_and_raise(self)

    def half_csv(self, target, *args, **kwargs):
        real_to_csv(self, target, *args, **kwargs)
        _truncate_and_raise(target)

    monkeypatch.setattr(Path, "write_text", half_text)
    monkeypatch.setattr(pd.DataFrame, "to_csv", half_csv)
    with pytest.raises(_Interrupted):
        atomic_write_json(json_path, {"accuracy": 0.9, "pad": "x" * 1000})
    with pytest.raises(_Interrupted):
        write_csv_atomic(pd.DataFrame({"a": range(1000)}), csv_path)
    monkeypatch.undo()
    assert json.loads(json_path.read_text()) == {"accuracy": 0.5}
    assert pd.read_csv(csv_path)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]


def test_a_checkpoint_write_that_fails_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    cfg = load_config(role="student", overrides={"data.image_size": 32})
    model, spec = create_model(cfg.model, pretrained=False), ModelSpec.from_config(cfg)
    path = save_model_checkpoint(model, spec, cfg, tmp_path / "model.ckpt")
    before = path.read_bytes()
    real_save = torch.save

    def half_save(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        _truncate_and_raise(target)

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(_Interrupted):
        save_model_checkpoint(model, spec, cfg, path)
    assert path.read_bytes() == before
    read_checkpoint(path)


WRITER = """
import sys
from kndnet.io import atomic_write_text
target = sys.argv[1]
contents = [str(k) * 20_000_000 + "END" for k in (1, 2)]  # built once: the loop is all writing
print("ready", flush=True)
while True:
    for text in contents:
        atomic_write_text(target, text)
"""


def test_a_killed_writer_leaves_a_complete_file(tmp_path):
    """SIGKILL runs no cleanup: whatever instant it lands, the target is one whole version."""
    target = tmp_path / "big.txt"
    atomic_write_text(target, "0" * 20_000_000 + "END")
    for delay in (0.05, 0.13, 0.21, 0.3, 0.37, 0.45, 0.52, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        text = target.read_text()
        assert len(text) == 20_000_003 and text.endswith("END") and len(set(text[:-3])) == 1, delay
