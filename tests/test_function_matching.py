"""Function-matching levers: mixup/CutMix, views made at view_size, the online teacher on the same mixed
images, flip-averaged teacher targets, and EMA weights that validation selects and checkpoints ship."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from kndnet.checkpoint import load_model, model_weights
from kndnet.config import TrainConfig, load_config
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import class_counts, split_rows
from kndnet.errors import ConfigError
from kndnet.training.datamodule import LesionDataModule
from kndnet.training.fit import fit
from kndnet.training.mixing import build_mixer, mix_batch
from kndnet.training.module import LesionClassifier
from tests.helpers import tiny_config


def _batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), (torch.arange(n) + 1) % 7 * (torch.arange(n) < 7)


def test_no_mixing_unless_asked():
    assert build_mixer(TrainConfig(), 7) is None
    x, y = _batch()
    mixed, targets = mix_batch(None, x, y)
    assert mixed is x and targets is y


def test_mixup_blends_each_image_with_its_mirror_in_the_batch_and_the_targets_alike():
    x, y = _batch()
    mixer = build_mixer(TrainConfig(mixup_alpha=0.4, label_smoothing=0.0), 7)
    mixed, targets = mix_batch(mixer, x, y)
    lam = targets[0, y[0]].item() if y[0] != y[-1] else None
    assert lam is not None and 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    assert torch.allclose(targets.sum(1), torch.ones(len(y)))
    assert torch.allclose(targets[-1, y[0]], torch.tensor(1 - lam))
    assert torch.equal(x, _batch()[0])  # the caller's batch is left untouched


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    x, y = _batch()
    mixer = build_mixer(TrainConfig(cutmix_alpha=1.0, label_smoothing=0.0), 7)
    mixed, targets = mix_batch(mixer, x, y)
    from_mirror = (mixed == x.flip(0)).all(dim=1)[0] & ~(mixed == x).all(dim=1)[0]
    share = from_mirror.float().mean().item()
    assert targets[0, y[-1]].item() == pytest.approx(share, abs=1e-6)


def test_label_smoothing_moves_into_the_mixed_targets():
    x, y = _batch()
    _, targets = mix_batch(build_mixer(TrainConfig(mixup_alpha=0.4, label_smoothing=0.1), 7), x, y)
    assert targets.min().item() == pytest.approx(0.1 / 7, abs=1e-6)


def test_an_odd_batch_is_left_unmixed():
    x, y = _batch(n=7)
    mixed, targets = mix_batch(build_mixer(TrainConfig(mixup_alpha=0.4), 7), x, y)
    assert mixed is x and targets is y


class _Recorder(nn.Module):
    """Stands in for a network and remembers what it was given (the code under test is the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.head = nn.Linear(3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.head(x.mean(dim=(2, 3)))


def _distill_module(synth_manifest, **overrides):
    cfg = tiny_config("distill", synth_manifest, **{"train.mixup_alpha": 0.4, "data.view_size": 48, **overrides})
    module = LesionClassifier(cfg.to_dict(), class_counts(split_rows(load_manifest(synth_manifest), "train", 0)))
    teacher, student = _Recorder(), _Recorder()
    module._teacher, module._teacher_sizes = [teacher], [48]
    module._compiled = [student]
    return module, teacher, student


def test_online_teacher_scores_the_same_mixed_view_the_student_sees(synth_manifest, tmp_path):
    """Function matching: the teacher's input is the mixed view; the student's is that view shrunk."""
    module, teacher, student = _distill_module(synth_manifest, **{"distill.teacher_bf16": False})
    cfg = module.cfg
    data = LesionDataModule(cfg, load_manifest(synth_manifest), tmp_path)
    batch = next(iter(data._loader(data.dataset("train", "train"), shuffle=True)))
    assert batch["image"].shape[-1] == 48  # views made at view_size
    module.training_step(batch, 0)
    seen_by_teacher, seen_by_student = teacher.inputs[0], student.inputs[0]
    plain = module.preprocess(batch["image"])
    assert not torch.allclose(seen_by_teacher, plain)  # mixed, not the raw views
    assert seen_by_student.shape[-1] == 32
    shrunk = torch.nn.functional.interpolate(seen_by_teacher, size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose(seen_by_student, shrunk, atol=1e-5)


def test_teacher_hflip_averages_the_view_and_its_mirror(synth_manifest):
    module, teacher, _ = _distill_module(synth_manifest, **{"distill.teacher_hflip": True,
                                                            "distill.teacher_bf16": False})
    x = torch.randn(4, 3, 48, 48)
    logits = module._teacher_outputs({}, x)[0]
    assert torch.equal(teacher.inputs[1], x.flip(-1))
    expected = (teacher.head(x.mean(dim=(2, 3))) + teacher.head(x.flip(-1).mean(dim=(2, 3)))) / 2
    assert torch.allclose(logits, expected, atol=1e-6)


def test_ema_weights_are_validated_saved_and_loaded(synth_manifest, tmp_path):
    cfg = tiny_config("student", synth_manifest, **{"train.ema_decay": 0.9, "train.epochs": 3})
    fit(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert {"val/macro_f1", "val_live/macro_f1"} <= set(metrics.columns)
    raw = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    ema = {k[len("ema.module."):]: v for k, v in raw.items() if k.startswith("ema.module.")}
    live = {k[len("model."):]: v for k, v in raw.items() if k.startswith("model.")}
    assert set(ema) == set(live) and not torch.equal(ema["classifier.weight"], live["classifier.weight"])
    model, _ = load_model(tmp_path / "checkpoints" / "best.ckpt")
    assert torch.equal(model.state_dict()["classifier.weight"], ema["classifier.weight"])
    assert torch.equal(model_weights(raw)["classifier.weight"], ema["classifier.weight"])


def test_student_with_mixup_ema_and_large_views_still_learns(synth_manifest, tmp_path):
    cfg = tiny_config("student", synth_manifest, **{"train.mixup_alpha": 0.2, "train.cutmix_alpha": 1.0,
                                                    "train.ema_decay": 0.9, "data.view_size": 48,
                                                    "train.epochs": 12})
    assert fit(cfg, tmp_path)["best_val_macro_f1"] > 0.5  # chance is about 0.14


@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", 0, "'train.epochs' is 0; it must be at least 1"),
    ("data.batch_size", 0, "'data.batch_size' is 0"),
    ("data.image_size", 0, "'data.image_size' is 0"),
    ("train.lr", -1, "'train.lr' is -1.0"),
    ("train.ema_decay", 1.0, "'train.ema_decay' is 1.0; it must be between"),
    ("data.view_size", 16, "view_size 16 is below data.image_size"),
])
def test_config_values_out_of_range_are_refused_by_name(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"data.image_size": 32, key: value})


def test_teacher_prior_shift_moves_a_sqrt_sampled_teacher_to_the_balanced_students_prior(synth_manifest, tmp_path):
    from kndnet.checkpoint import ModelSpec, save_model_checkpoint
    from kndnet.models import create_model
    teacher_cfg = tiny_config("teacher", synth_manifest, **{"train.sampler": "sqrt"})
    ckpt = save_model_checkpoint(create_model(teacher_cfg.model), ModelSpec.from_config(teacher_cfg), teacher_cfg,
                                 tmp_path / "teacher.ckpt")
    counts = [10, 20, 40, 5, 80, 160, 3]
    expected = -0.5 * torch.tensor(counts, dtype=torch.float).log()  # sqrt prior n**0.5 -> uniform n**0
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(ckpt), "train.sampler": "balanced",
                                                    "distill.teacher_prior_shift": True})
    module = LesionClassifier(cfg.to_dict(), counts)
    assert torch.allclose(module.teacher_shift, expected)
    cached = module._teacher_outputs({"teacher_logits": torch.ones(2, 7)}, torch.zeros(2, 3, 32, 32))[0]
    assert torch.allclose(cached, 1 + expected.expand(2, 7))
    cfg.distill.teacher_prior_shift = False
    assert not LesionClassifier(cfg.to_dict(), counts).teacher_shift.any()


def _saved_model(role, synth_manifest, path, **overrides):
    """A checkpoint of an untrained model of `role` (its weights do not matter, its spec and config do)."""
    from kndnet.checkpoint import ModelSpec, save_model_checkpoint
    from kndnet.models import create_model
    cfg = tiny_config(role, synth_manifest, **overrides)
    return save_model_checkpoint(create_model(cfg.model), ModelSpec.from_config(cfg), cfg, path)


def test_an_ensemble_teacher_feeds_each_member_its_own_size_and_averages_their_logits(synth_manifest):
    module, big, _ = _distill_module(synth_manifest, **{"distill.teacher_bf16": False})
    small = _Recorder()
    module._teacher, module._teacher_sizes = [big, small], [48, 24]
    x = torch.randn(4, 3, 48, 48)
    logits = module._teacher_outputs({}, x)[0]
    assert big.inputs[0].shape[-1] == 48 and small.inputs[0].shape[-1] == 24
    shrunk = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", antialias=True)
    assert torch.allclose(small.inputs[0], shrunk, atol=1e-6)
    expected = (big.head(x.mean(dim=(2, 3))) + small.head(shrunk.mean(dim=(2, 3)))) / 2
    assert torch.allclose(logits, expected, atol=1e-6)


def test_attaching_an_ensemble_loads_every_member_and_refuses_one_with_other_classes(synth_manifest, tmp_path):
    a = _saved_model("teacher", synth_manifest, tmp_path / "a.ckpt")
    b = _saved_model("teacher", synth_manifest, tmp_path / "b.ckpt", **{"data.image_size": 40})
    module, _, _ = _distill_module(synth_manifest)
    module.attach_online_teachers([str(a), str(b)])
    assert len(module._teacher) == 2 and module._teacher_sizes == [32, 40]
    from kndnet.checkpoint import ModelSpec, save_model_checkpoint
    from kndnet.errors import CheckpointError
    from kndnet.models import create_model
    cfg = tiny_config("teacher", synth_manifest)
    spec = ModelSpec.from_config(cfg)
    odd = save_model_checkpoint(create_model(cfg.model), type(spec)(**{**spec.__dict__, "mean": (0.5, 0.5, 0.5)}),
                                cfg, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="odd.ckpt reads pixels and classes as"):
        module.attach_online_teachers([str(a), str(odd)])


def test_prior_shift_refuses_an_ensemble_of_teachers_trained_with_different_samplers(synth_manifest, tmp_path):
    sqrt = _saved_model("teacher", synth_manifest, tmp_path / "sqrt.ckpt", **{"train.sampler": "sqrt"})
    flat = _saved_model("teacher", synth_manifest, tmp_path / "flat.ckpt", **{"train.sampler": "random"})
    counts = [10, 20, 40, 5, 80, 160, 3]
    alike = tiny_config("distill", synth_manifest, **{"distill.teacher": f"{sqrt}, {sqrt}",
                                                      "distill.teacher_prior_shift": True, "train.sampler": "balanced"})
    expected = -0.5 * torch.tensor(counts, dtype=torch.float).log()
    assert torch.allclose(LesionClassifier(alike.to_dict(), counts).teacher_shift, expected)
    mixed = tiny_config("distill", synth_manifest, **{"distill.teacher": f"{sqrt},{flat}",
                                                      "distill.teacher_prior_shift": True})
    with pytest.raises(ConfigError, match=r"different samplers \(.*sqrt.ckpt: sqrt, .*flat.ckpt: random\)"):
        LesionClassifier(mixed.to_dict(), counts)


def test_distillation_from_an_ensemble_teacher_trains_end_to_end(synth_manifest, tmp_path):
    a = _saved_model("teacher", synth_manifest, tmp_path / "a.ckpt")
    b = _saved_model("teacher", synth_manifest, tmp_path / "b.ckpt", **{"data.image_size": 40})
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": f"{a},{b}", "distill.views": 0,
                                                    "distill.loss": "hinton", "train.epochs": 1})
    summary = fit(cfg, tmp_path / "run")
    assert summary["epochs_run"] == 1
    assert load_config(tmp_path / "run" / "config.yaml", role="distill").distill.teacher == f"{a},{b}"


@pytest.mark.parametrize("native", [True, False])
def test_teacher_bf16_is_used_only_where_the_cpu_has_native_bf16(synth_manifest, monkeypatch, native):
    """Emulated bf16 is slower than fp32: without AVX512-BF16/AMX the teacher runs in fp32, with a warning."""
    from kndnet.training import module as module_code
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    module_code._cpu_has_native_bf16.cache_clear()
    module, teacher, _ = _distill_module(synth_manifest, **{"distill.teacher_bf16": True,
                                                            "distill.teacher_runtime": "auto"})
    module._teacher_runtime = "torch"  # `auto` as resolved on an accelerator: bf16 follows the resolved runtime
    seen = []
    teacher.forward = lambda x: seen.append(torch.is_autocast_enabled("cpu")) or torch.zeros(len(x), 7)
    if native:
        module._teacher_outputs({}, torch.randn(2, 3, 48, 48))[0]
    else:
        with pytest.warns(UserWarning, match="neither AVX512-BF16 nor AMX.*runs in fp32"):
            module._teacher_outputs({}, torch.randn(2, 3, 48, 48))[0]
    module_code._cpu_has_native_bf16.cache_clear()
    assert seen == [native]


def test_without_live_validation_the_ema_run_is_the_same_run(synth_manifest, tmp_path):
    """train.ema_validate_live only logs: turning it off drops val_live/* and changes nothing the run selects."""
    runs = {}
    for live in (True, False):
        cfg = tiny_config("student", synth_manifest, **{"train.ema_decay": 0.9, "train.epochs": 2,
                                                        "train.ema_validate_live": live})
        fit(cfg, tmp_path / str(live))
        runs[live] = pd.read_csv(tmp_path / str(live) / "metrics.csv")
    assert "val_live/macro_f1" in runs[True] and "val_live/macro_f1" not in runs[False]
    pd.testing.assert_series_equal(runs[True]["val/macro_f1"], runs[False]["val/macro_f1"])
    best = [torch.load(tmp_path / str(live) / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
            for live in (True, False)]
    assert all(torch.equal(best[0][key], best[1][key]) for key in best[0])
