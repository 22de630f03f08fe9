"""Embedding distillation (`distill.embedding_weight`): the distance, the projectors, the one-pass embeddings of
student and teacher, the config's refusals, and a distillation that trains the projectors and ships without them."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from kndnet.checkpoint import ModelSpec, load_model, save_model_checkpoint
from kndnet.config import DistillConfig
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import class_counts, split_rows
from kndnet.distill.embedding import EmbeddingProjectors, centred_cosine_distance, embedding_and_logits
from kndnet.distill.onnx_teacher import OnnxRuntimeTeacher, onnxruntime_teacher
from kndnet.errors import ConfigError
from kndnet.inference import eval_dataset
from kndnet.models import count_parameters, create_model
from kndnet.models.student import KNDNetStudent
from kndnet.pipeline import _check_online_teacher
from kndnet.training.fit import fit
from kndnet.training.module import LesionClassifier
from tests.helpers import tiny_config


def test_the_distance_is_zero_for_the_same_embedding_up_to_scale_and_offset_and_about_one_for_unrelated_ones():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 32, generator=g)
    offset = torch.randn(1, 32, generator=g)
    assert centred_cosine_distance(a, 3 * a + offset).item() == pytest.approx(0.0, abs=1e-5)
    assert centred_cosine_distance(a, -a).item() == pytest.approx(2.0, abs=1e-5)
    unrelated = centred_cosine_distance(a, torch.randn(64, 32, generator=g)).item()
    assert 0.8 < unrelated < 1.2


def test_the_distance_sends_gradient_to_the_student_side_only():
    student = torch.randn(8, 4, requires_grad=True)
    teacher = torch.randn(8, 4, requires_grad=True)
    centred_cosine_distance(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_projectors_map_the_student_width_to_each_teacher_and_refuse_a_missing_teacher():
    projectors = EmbeddingProjectors(6, [10, 12])
    student = torch.randn(4, 6)
    distance = projectors.distance(student, [torch.randn(4, 10), torch.randn(4, 12)])
    assert distance.shape == () and 0 < distance.item() < 2
    with pytest.raises(ValueError, match="1 teacher embeddings for 2 projectors"):
        projectors.distance(student, [torch.randn(4, 10)])


def test_the_students_embedding_pass_gives_its_logits_and_its_pooled_features():
    student = KNDNetStudent(block="mobilenet").eval()
    x = torch.randn(2, 3, 64, 64)
    embedding, logits = student.forward_with_embedding(x)
    assert embedding.shape == (2, student.num_features)
    assert torch.allclose(logits, student(x), atol=1e-6)
    assert torch.allclose(embedding, student.forward_head(student.forward_features(x), pre_logits=True))


def test_a_timm_teachers_embedding_pass_gives_its_logits():
    from kndnet.config import ModelConfig
    teacher = create_model(ModelConfig(arch="test_efficientnet", pretrained="none-quiet")).eval()
    x = torch.randn(2, 3, 32, 32)
    embedding, logits = embedding_and_logits(teacher, x)
    assert embedding.shape == (2, teacher.num_features)
    assert torch.allclose(logits, teacher(x), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"distill.teacher_cache": "somewhere"}, "distill.teacher_cache is set and holds logits only"),
    ({"distill.embedding_weight": -1.0}, "'distill.embedding_weight' is -1.0; it must be at least 0.0"),
])
def test_a_teacher_cache_or_a_negative_embedding_weight_is_refused(synth_manifest, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("distill", synth_manifest, **{"distill.embedding_weight": 1.0, **overrides})


def test_a_recipe_with_embedding_distillation_and_a_teacher_cache_is_refused_before_training():
    with pytest.raises(ConfigError, match="distill.embedding_weight needs an online teacher.*distill.views is 4"):
        _check_online_teacher("r.yaml", DistillConfig(embedding_weight=0.5, views=4))
    _check_online_teacher("r.yaml", DistillConfig(embedding_weight=0.5, views=0))


def _teacher(synth_manifest, path):
    cfg = tiny_config("teacher", synth_manifest)
    return save_model_checkpoint(create_model(cfg.model), ModelSpec.from_config(cfg), cfg, path)


def test_the_training_step_adds_the_weighted_distance_and_the_projectors_train(synth_manifest, tmp_path):
    teacher = _teacher(synth_manifest, tmp_path / "t.ckpt")
    counts = class_counts(split_rows(load_manifest(synth_manifest), "train", 0))
    modules = {}
    for weight in (0.0, 2.0):
        cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher),
                                                        "distill.embedding_weight": weight})
        torch.manual_seed(0)
        modules[weight] = LesionClassifier(cfg.to_dict(), counts)
        modules[weight].attach_online_teachers([str(teacher)])
    assert modules[0.0].projectors is None
    projectors = modules[2.0].projectors
    assert [head.in_features for head in projectors.heads] == [modules[2.0].model.num_features]
    optimiser = modules[2.0].configure_optimizers()["optimizer"]
    assert {id(p) for p in projectors.parameters()} <= {id(p) for g in optimiser.param_groups for p in g["params"]}
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    batch = {"image": images, "label": torch.arange(8) % 7}
    logged = {}
    modules[2.0].log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    modules[0.0].log = lambda name, value, **kwargs: None
    losses = {}
    for weight, module in modules.items():
        torch.manual_seed(1)  # the same dropout draws in both students
        losses[weight] = module.training_step(batch, 0)
    with_term, without = losses[2.0], losses[0.0]
    assert 0 < logged["train/embedding"].item() < 2
    assert with_term.item() == pytest.approx(without.item() + 2.0 * logged["train/embedding"].item(), rel=1e-4)
    with_term.backward()
    assert projectors.heads[0].weight.grad.abs().sum() > 0


def test_distillation_with_embeddings_logs_the_term_and_ships_the_student_alone(synth_manifest, tmp_path):
    teacher = _teacher(synth_manifest, tmp_path / "t.ckpt")
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher), "distill.loss": "hinton",
                                                    "distill.embedding_weight": 1.0, "train.mixup_alpha": 0.4,
                                                    "train.ema_decay": 0.9})
    fit(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["train/embedding"].notna().sum() == 2
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert any(key.startswith("projectors.heads.0.") for key in state)  # a resumed run gets them back
    model, _ = load_model(last)
    assert count_parameters(model) == count_parameters(create_model(cfg.model))
    resumed = LesionClassifier(cfg.to_dict(), class_counts(split_rows(load_manifest(synth_manifest), "train", 0)))
    resumed.attach_online_teachers([str(teacher)])
    resumed.load_state_dict(state)  # strict: every key, the projectors' included, has its place


def test_embedding_distillation_into_a_model_without_an_embedding_pass_is_refused(synth_manifest):
    cfg = tiny_config("distill", synth_manifest, **{"distill.embedding_weight": 1.0, "model.arch": "test_efficientnet",
                                                    "model.pretrained": "none-quiet"})
    with pytest.raises(ConfigError, match="model.arch 'test_efficientnet' has none: distil into kndnet_student"):
        LesionClassifier(cfg.to_dict(), [10] * 7)


def test_an_onnxruntime_teacher_exported_with_its_embedding_gives_the_pytorch_teachers_embedding(synth_manifest,
                                                                                              tmp_path):
    path = _teacher(synth_manifest, tmp_path / "t.ckpt")
    model, spec = load_model(path)
    x = torch.randn(5, 3, spec.image_size, spec.image_size)
    with torch.no_grad():
        expected_embedding, expected_logits = embedding_and_logits(model.eval(), x)
    teacher = onnxruntime_teacher(model, spec, str(path), split_batch=False, with_embedding=True)
    assert teacher.num_features == model.num_features
    embedding, logits = embedding_and_logits(teacher, x)
    assert torch.allclose(embedding, expected_embedding, atol=1e-4)
    assert torch.allclose(logits, expected_logits, atol=1e-4) and torch.equal(teacher(x), logits)
    split = OnnxRuntimeTeacher(teacher.model_bytes, 2, str(path), split_batch=True, num_features=teacher.num_features)
    assert all(torch.equal(a, b) for a, b in zip(split.embedding_and_logits(x), (embedding, logits)))
    plain = onnxruntime_teacher(model, spec, str(path), split_batch=False)
    with pytest.raises(RuntimeError, match="exported without its embedding"):
        plain.embedding_and_logits(x)


def test_attached_int8_onnxruntime_teachers_give_embeddings_close_to_fp32(synth_manifest, tmp_path):
    path = _teacher(synth_manifest, tmp_path / "t.ckpt")
    model, spec = load_model(path)
    rows = split_rows(load_manifest(synth_manifest), "train", 0)
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(path), "distill.embedding_weight": 1.0,
                                                    "distill.teacher_int8": True, "distill.teacher_bf16": False})
    module = LesionClassifier(cfg.to_dict(), class_counts(rows))
    module.attach_online_teachers([str(path)], "onnxruntime", rows)
    assert [head.out_features for head in module.projectors.heads] == [model.num_features]
    images = eval_dataset(rows.iloc[:6].reset_index(drop=True), spec)
    x = spec.normalise(torch.stack([images[i]["image"] for i in range(6)]))  # in the calibrated range
    logits, (embedding,) = module._teacher_outputs({}, x)
    with torch.no_grad():
        expected, _ = embedding_and_logits(model.eval(), x)
    assert embedding.shape == expected.shape
    assert torch.allclose(embedding, expected, atol=0.1 * float(expected.abs().max()))
