"""The online teacher in ONNX Runtime (`distill.teacher_runtime: onnxruntime`): the same logits as the
PyTorch teacher, attached member by member, picklable, CPU only, and trainable end to end; in int8
(`distill.teacher_int8`), calibrated on training images, and back in fp32 when it disagrees with it."""

from __future__ import annotations

import os
import pickle
import threading

import onnx
import pytest
import torch

from kndnet.checkpoint import ModelSpec, load_model, save_model_checkpoint
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import class_counts, split_rows
from kndnet.distill import onnx_teacher
from kndnet.distill.onnx_teacher import (
    MIN_INT8_AGREEMENT,
    OnnxRuntimeTeacher,
    onnxruntime_teacher,
    resolve_teacher_runtime,
)
from kndnet.errors import ConfigError
from kndnet.inference import eval_dataset
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
        logits[runtime] = module._teacher_outputs({}, x)[0]
    assert all(isinstance(t, OnnxRuntimeTeacher) for t in module._teacher)
    assert torch.allclose(logits["onnxruntime"], logits["torch"], atol=1e-4)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_teacher_size_scores_every_member_at_that_size(synth_manifest, tmp_path, runtime):
    """`distill.teacher_size`: each member scores the view resized to that size, not to its trained size, in
    either runtime (the ONNX graph is exported and checked at that size)."""
    a = _teacher_checkpoint(synth_manifest, tmp_path / "a.ckpt")
    b = _teacher_checkpoint(synth_manifest, tmp_path / "b.ckpt", **{"data.image_size": 40})
    module = _module(synth_manifest, **{"distill.teacher_runtime": runtime, "distill.teacher_size": 36})
    module.attach_online_teachers([str(a), str(b)], runtime)
    assert module._teacher_sizes == [36, 36]
    x = torch.randn(2, 3, 48, 48)
    expected = torch.stack([load_model(p)[0].eval()(torch.nn.functional.interpolate(
        x, size=(36, 36), mode="bilinear", antialias=True)) for p in (a, b)]).mean(0)
    assert torch.allclose(module._teacher_outputs({}, x)[0], expected.detach(), atol=1e-4)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"distill.teacher_size": 16}, "too small for a teacher"),
    ({"distill.teacher_size": 128, "distill.teacher_cache": "runs/tcache"}, "drop one of the two")])
def test_a_teacher_size_that_cannot_apply_is_refused_by_name(synth_manifest, overrides, message):
    with pytest.raises(ConfigError, match=f"distill.teacher_size.*{message}"):
        tiny_config("distill", synth_manifest, **overrides)


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
                        lambda self, paths, runtime, rows: attached.append(runtime) or real_attach(self, paths, runtime,
                                                                                                 rows))
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


@pytest.mark.parametrize("threads", [2, 3])
def test_a_split_batch_teacher_scores_slices_side_by_side_with_the_same_logits(synth_manifest, tmp_path, threads,
                                                                                monkeypatch):
    """`distill.teacher_split_batch`: one single-threaded call per thread on its slice of the batch, all of them
    in flight at once on the teacher's pool; every image gets the very logits the one call on all threads gives
    it (a batch smaller than the thread count makes fewer slices; a batch of 1 is not split)."""
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    whole = onnxruntime_teacher(*load_model(path), str(path), split_batch=False)
    split = OnnxRuntimeTeacher(whole.model_bytes, threads, str(path), split_batch=True)
    session, _ = split._opened()
    assert session.get_session_options().intra_op_num_threads == 1
    x = torch.randn(7, 3, 32, 32)
    expected = whole(x)
    calls, together = [], threading.Barrier(threads, timeout=10)
    real_run = type(session).run

    def run(self, names, feed):
        calls.append((len(feed["image"]), threading.current_thread().name))
        together.wait()  # breaks (and the test fails) unless every slice's call is running at the same time
        return real_run(self, names, feed)

    monkeypatch.setattr(type(session), "run", run)
    assert torch.equal(split(x), expected)
    assert sorted(n for n, _ in calls) == sorted(len(p) for p in torch.arange(7).tensor_split(threads))
    assert all(name.startswith("kndnet-teacher") for _, name in calls)
    monkeypatch.setattr(type(session), "run", real_run)
    assert torch.equal(split(x[:2]), expected[:2]) and torch.equal(split(x[:1]), expected[:1])
    assert torch.equal(pickle.loads(pickle.dumps(split))(x), expected)  # a DDP worker reopens session and pool


def test_a_teacher_on_one_thread_or_asked_not_to_split_runs_one_call(synth_manifest, tmp_path, monkeypatch):
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    model_bytes = onnxruntime_teacher(*load_model(path), str(path)).model_bytes
    assert not OnnxRuntimeTeacher(model_bytes, 1, str(path), split_batch=True).split_batch
    unsplit = OnnxRuntimeTeacher(model_bytes, 2, str(path), split_batch=False)
    session, _ = unsplit._opened()
    assert session.get_session_options().intra_op_num_threads == 2 and unsplit._pool is None
    calls = []
    real_run = type(session).run
    monkeypatch.setattr(type(session), "run", lambda self, names, feed: calls.append(len(feed["image"])) or
                        real_run(self, names, feed))
    unsplit(torch.randn(5, 3, 32, 32))
    assert calls == [5]


def test_a_forked_process_reopens_the_teachers_session_and_pool(synth_manifest, tmp_path, monkeypatch):
    """A child forked after the teacher's first call inherits a thread pool without threads, which would hang."""
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    teacher = OnnxRuntimeTeacher(onnxruntime_teacher(*load_model(path), str(path)).model_bytes, 2, str(path))
    x = torch.randn(4, 3, 32, 32)
    expected = teacher(x)
    parent_pool = teacher._pool
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as a forked child sees it
    assert torch.equal(teacher(x), expected) and teacher._pool is not parent_pool and teacher._pid == -1


def test_attaching_passes_the_split_batch_key_to_each_onnxruntime_member(synth_manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    for split in (True, False):
        module = _module(synth_manifest, **{"distill.teacher_runtime": "onnxruntime",
                                            "distill.teacher_split_batch": split})
        module.attach_online_teachers([str(path), str(path)], "onnxruntime")
        assert [t.split_batch for t in module._teacher] == [split, split]


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


def _train_rows(synth_manifest):
    return split_rows(load_manifest(synth_manifest), "train", 0)


def test_an_int8_teacher_is_quantised_checked_and_close_to_fp32(synth_manifest, tmp_path, capsys):
    """`distill.teacher_int8`: the attached teacher is an int8 QDQ graph calibrated on training images; its
    logits track the fp32 teacher's and its agreement with fp32 reaches the run summary's key. Quietly: ONNX
    Runtime's percentile calibrator prints its progress, which the user should not see."""
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    spec = load_model(path)[1]
    images = eval_dataset(_train_rows(synth_manifest).iloc[:6].reset_index(drop=True), spec)
    x = spec.normalise(torch.stack([images[i]["image"] for i in range(6)]))  # in the calibrated range
    logits = {}
    for int8 in (False, True):
        module = _module(synth_manifest, **{"distill.teacher_int8": int8})
        module.attach_online_teachers([str(path)], "onnxruntime", _train_rows(synth_manifest))
        logits[int8] = module._teacher_outputs({}, x)[0]
    assert capsys.readouterr().out == ""
    graph = onnx.load_from_string(module._teacher[0].model_bytes)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.graph.node}
    assert not torch.equal(logits[True], logits[False])  # quantised: not the fp32 graph again
    assert torch.allclose(logits[True], logits[False], atol=0.1 * float(logits[False].abs().max()))
    summary = module.teacher_int8_agreement()
    assert summary["teacher_int8_used"] == [True] and summary["teacher_int8_ranges"] == ["percentile"]
    (agreement,) = summary["teacher_int8_agreement"]
    assert MIN_INT8_AGREEMENT <= agreement <= 1


def _negate_output(path):
    """Rewrite the ONNX graph at `path` so it emits minus its logits: it then calls the least likely class."""
    model = onnx.load(path)
    output = model.graph.output[0]
    model.graph.node.append(onnx.helper.make_node("Neg", [output.name], [output.name + "_negated"]))
    output.name += "_negated"
    onnx.save(model, path)


def test_a_copy_that_fails_the_check_is_built_again_with_min_max_ranges(synth_manifest, tmp_path, monkeypatch):
    """Where percentile ranges give a copy that disagrees with fp32 (7-bit weights on CPUs without VNNI did for
    runs/v21's Lite2), the teacher gets a min/max copy before it falls back to fp32."""
    built, quantise = [], onnx_teacher.quantise_teacher

    def percentile_copy_broken(fp32_path, int8_path, calibration, spec, method):
        built.append(method)
        path = quantise(fp32_path, int8_path, calibration, spec, method)
        if method == "percentile":
            _negate_output(path)
        return path

    monkeypatch.setattr(onnx_teacher, "quantise_teacher", percentile_copy_broken)
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    module = _module(synth_manifest, **{"distill.teacher_int8": True})
    module.attach_online_teachers([str(path)], "onnxruntime", _train_rows(synth_manifest))
    assert built == ["percentile", "minmax"]
    graph = onnx.load_from_string(module._teacher[0].model_bytes)
    assert "QuantizeLinear" in {node.op_type for node in graph.graph.node}
    assert "Neg" not in {node.op_type for node in graph.graph.node}  # the min/max copy, not the broken one
    summary = module.teacher_int8_agreement()
    assert summary["teacher_int8_ranges"] == ["minmax"] and summary["teacher_int8_agreement"][0] >= MIN_INT8_AGREEMENT


def test_an_int8_teacher_that_disagrees_with_fp32_runs_in_fp32_with_a_warning(synth_manifest, tmp_path, monkeypatch):
    """A failed int8 check costs speed, not the run: the teacher is named in a warning and runs its fp32 graph."""
    monkeypatch.setattr(onnx_teacher, "MIN_INT8_AGREEMENT", 1.01)  # no copy can agree that well
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    module = _module(synth_manifest, **{"distill.teacher_int8": True})
    with pytest.warns(UserWarning, match=r"int8 copies of teacher .*t.ckpt agree with its fp32 self on [01]\.\d{3} "
                                         r"\(percentile ranges\), [01]\.\d{3} \(minmax ranges\) of \d+ training "
                                         r"images.*runs in fp32"):
        module.attach_online_teachers([str(path)], "onnxruntime", _train_rows(synth_manifest))
    graph = onnx.load_from_string(module._teacher[0].model_bytes)
    assert "QuantizeLinear" not in {node.op_type for node in graph.graph.node}
    summary = module.teacher_int8_agreement()
    assert summary["teacher_int8_used"] == [False] and 0 <= summary["teacher_int8_agreement"][0] < 1.01
    assert summary["teacher_int8_ranges"] == [None]


def test_teacher_int8_leaves_a_pytorch_teacher_unquantised_with_a_warning(synth_manifest, tmp_path):
    path = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    module = _module(synth_manifest, **{"distill.teacher_int8": True})
    with pytest.warns(UserWarning, match="teacher_int8 quantises ONNX Runtime teachers.*runs unquantised"):
        module.attach_online_teachers([str(path)], "torch", _train_rows(synth_manifest))
    assert not isinstance(module._teacher[0], OnnxRuntimeTeacher) and module.teacher_int8_agreement() == {}


def test_distillation_with_an_int8_teacher_records_its_agreement(synth_manifest, tmp_path):
    teacher = _teacher_checkpoint(synth_manifest, tmp_path / "t.ckpt")
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher), "distill.views": 0,
                                                    "distill.loss": "hinton", "distill.teacher_runtime": "onnxruntime",
                                                    "distill.teacher_int8": True, "train.epochs": 1,
                                                    "train.limit_train_batches": 2})
    summary = fit(cfg, tmp_path / "run")
    assert summary["epochs_run"] == 1 and len(summary["teacher_int8_agreement"]) == 1
    assert not list(tmp_path.glob("run/**/*.onnx"))
