"""The online teacher in ONNX Runtime (`distill.teacher_runtime: onnxruntime`): the same logits as the
PyTorch teacher, attached member by member, picklable, CPU only, and trainable end to end."""

from __future__ import annotations

import pickle

import pytest
import torch

from kndnet.checkpoint import ModelSpec, load_model, save_model_checkpoint
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import class_counts, split_rows
from kndnet.distill.onnx_teacher import OnnxRuntimeTeacher, onnxruntime_teacher, resolve_teacher_runtime
from kndnet.errors import ConfigError
from kndnet.models import create_model
from kndnet.training.fit import fit
from kndnet.training.module import LesionClassifier
from tests.helpers import tiny_config


def _teacher_checkpoint(synth_manifest, path, **overrides):
    cfg = tiny_config("teacher", synth_manifest, **overrides)
    torch.manual_seed(0)
    return save_model_checkpoint(create_model(cfg.model), ModelSpec.from_config(cfg), cfg, path)


def _module(synth_manifest, **overrides):
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher_bf16": False, **overrides})
    counts = class_counts(split_rows(load_manifest(synth_manifest), "train", 0))
    return LesionClassifier(cfg.to_dict(), counts)


def test_onnxruntime_teacher_gives_the_pytorch_teachers_logits(synth_manifest, tmp_path):
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    model, spec = load_model(path)
    x = torch.randn(5, 3, spec.image_size, spec.image_size)
    with torch.no_grad():
        expected = model.eval()(x)
    got = onnxruntime_teacher(model, spec, str(path))(x)
    assert got.shape == (5, 7) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-4)


def test_attached_onnxruntime_ensemble_matches_the_pytorch_ensemble(synth_manifest, tmp_path):
    """Same members, same sizes, same flip-averaged mean logit: only the runtime differs."""
    a = _teacher_checkpoint(synth_manifest, tmp_path / "a.ckpt")
    b = _teacher_checkpoint(synth_manifest, tmp_path / "b.ckpt", **{"data.image_size": 40})
    x = torch.randn(4, 3, 48, 48)
    logits = {}
    for runtime in ("torch", "onnxruntime"):
        module = _module(synth_manifest, **{"distill.teacher_runtime": runtime, "distill.teacher_hflip": True})
        module.attach_online_teachers([str(a), str(b)], runtime)
        assert module._teacher_sizes == [32, 40]
        logits[runtime] = module._teacher_logits({}, x)
    assert all(isinstance(t, OnnxRuntimeTeacher) for t in module._teacher)
    assert torch.allclose(logits["onnxruntime"], logits["torch"], atol=1e-4)


@pytest.mark.parametrize("on_cpu", [True, False])
def test_auto_runtime_picks_onnxruntime_on_the_cpu_and_torch_on_an_accelerator(on_cpu):
    assert resolve_teacher_runtime("auto", on_cpu) == ("onnxruntime" if on_cpu else "torch")
    assert resolve_teacher_runtime("torch", on_cpu) == "torch"  # an explicit runtime is kept
    assert resolve_teacher_runtime("onnxruntime", on_cpu) == "onnxruntime"


def test_training_on_the_cpu_with_auto_runs_the_teacher_in_onnxruntime(synth_manifest, tmp_path, monkeypatch):
    """fit resolves `auto` from the accelerator Lightning's Trainer chose, then attaches the teachers."""
    attached = []
    real_attach = LesionClassifier.attach_online_teachers
    monkeypatch.setattr(LesionClassifier, "attach_online_teachers",
                        lambda self, paths, runtime: attached.append(runtime) or real_attach(self, paths, runtime))
    teacher = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher), "distill.views": 0,
                                                    "distill.teacher_runtime": "auto", "train.epochs": 1,
                                                    "train.limit_train_batches": 2})
    fit(cfg, tmp_path / "run")
    assert attached == ["onnxruntime"]


def test_attaching_needs_a_resolved_runtime(synth_manifest, tmp_path):
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    with pytest.raises(ValueError, match="resolved runtime.*not 'auto'"):
        _module(synth_manifest).attach_online_teachers([str(path)], "auto")


def test_the_onnxruntime_teacher_does_not_spin_between_calls(synth_manifest, tmp_path):
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    session, _ = onnxruntime_teacher(*load_model(path), str(path))._opened()
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_an_onnxruntime_teacher_pickles_and_reopens_its_session(synth_manifest, tmp_path):
    """Spawned DDP workers receive the module pickled: the session is left behind and reopened there."""
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    teacher = onnxruntime_teacher(*load_model(path), str(path))
    x = torch.randn(2, 3, 32, 32)
    before = teacher(x)
    copy = pickle.loads(pickle.dumps(teacher))
    assert copy._session is None and torch.equal(copy(x), before)


def test_an_onnxruntime_teacher_refuses_a_batch_off_the_cpu(synth_manifest, tmp_path):
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    teacher = onnxruntime_teacher(*load_model(path), str(path))
    with pytest.raises(ConfigError, match="t.ckpt on the CPU, but the batch is on meta.*teacher_runtime 'torch'"):
        teacher(torch.empty(2, 3, 32, 32, device="meta"))


def test_an_unknown_teacher_runtime_is_refused_by_name(synth_manifest):
    refusal = "'distill.teacher_runtime' is 'tensorrt'; choose one of torch, onnxruntime, auto"
    with pytest.raises(ConfigError, match=refusal):
        tiny_config("distill", synth_manifest, **{"distill.teacher_runtime": "tensorrt"})


def test_distillation_with_an_onnxruntime_teacher_trains_end_to_end(synth_manifest, tmp_path):
    teacher = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher), "distill.views": 0,
                                                    "distill.loss": "hinton", "distill.teacher_runtime": "onnxruntime",
                                                    "train.epochs": 1})
    summary = fit(cfg, tmp_path / "run")
    assert summary["epochs_run"] == 1
    assert not list(tmp_path.glob("run/**/*.onnx"))  # the exported teacher is not left in the run folder
