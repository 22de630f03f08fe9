"""Cached teacher views: deterministic views, and the student sees exactly the view scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kndnet.checkpoint import load_model
from kndnet.cli import main
from kndnet.data.datasets import DrawnView, LesionDataset
from kndnet.data.manifest import load_manifest
from kndnet.data.transforms import fixed_view, view_seed
from kndnet.distill.teacher_cache import TeacherCache
from kndnet.errors import ConfigError, DataError
from kndnet.training.datamodule import LesionDataModule
from kndnet.training.fit import fit
from tests.helpers import tiny_config


def test_fixed_view_is_a_pure_function_of_seed_image_and_k():
    image = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8)
    a = fixed_view(image, "ISIC_1", 2, seed=5, size=32)
    assert torch.equal(a, fixed_view(image, "ISIC_1", 2, seed=5, size=32))
    assert not torch.equal(a, fixed_view(image, "ISIC_1", 3, seed=5, size=32))
    assert not torch.equal(a, fixed_view(image, "ISIC_2", 2, seed=5, size=32))
    assert view_seed(5, "ISIC_1", 2) != view_seed(6, "ISIC_1", 2)


@pytest.fixture(scope="module")
def teacher_and_cache(synth_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    summary = fit(tiny_config("teacher", synth_manifest, **{"train.epochs": 1}), root / "teacher")
    code = main(["cache-teacher", "--teacher", summary["best_checkpoint"], "--data", str(synth_manifest),
                 "--out", str(root / "cache"), "--views", "3", "--image-size", "32",
                 "--config", str(root / "teacher" / "config.yaml")])
    assert code == 0
    return root, summary["best_checkpoint"]


def test_cache_holds_k_views_of_every_training_image(teacher_and_cache, synth_manifest):
    root, _ = teacher_and_cache
    cache = TeacherCache.load(root / "cache")
    manifest = load_manifest(synth_manifest)
    train = manifest[(manifest["split"] != "test") & (manifest["fold"] != 0)]
    assert cache.views == 3 and cache.logits.dtype == np.float16
    assert cache.image_ids == train["image_id"].tolist()


def test_distillation_item_pairs_the_view_with_its_own_logits(teacher_and_cache, synth_manifest):
    root, teacher_ckpt = teacher_and_cache
    cache = TeacherCache.load(root / "cache")
    manifest = load_manifest(synth_manifest)
    rows = manifest[manifest["image_id"].isin(cache.image_ids[:6])].reset_index(drop=True)
    view = DrawnView(32, cache.seed, 0, teacher_logits=cache.logits_for(rows["image_id"].tolist()))
    dataset = LesionDataset(rows, view, load_size=37)
    teacher, spec = load_model(teacher_ckpt)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255, torch.tensor(spec.std).view(1, 3, 1, 1) * 255
    for i in range(len(dataset)):
        item = dataset[i]
        with torch.no_grad():
            fresh = teacher(((item["image"][None].float() - mean) / std))[0]
        assert torch.allclose(fresh, item["teacher_logits"], atol=2e-2), i


def test_student_with_train_views_sees_only_the_views_the_teacher_scored(teacher_and_cache, synth_manifest,
                                                                        tmp_path):
    """The matched KD baseline: same K views per image as the cache, no fresh augmentation."""
    root, _ = teacher_and_cache
    cache = TeacherCache.load(root / "cache")
    cfg = tiny_config("student", synth_manifest, **{"data.train_views": cache.views})
    dataset = LesionDataModule(cfg, load_manifest(synth_manifest), tmp_path).dataset("train", "train")
    assert dataset.view.seed == cache.seed
    first = dataset.image_ids.index(cache.image_ids[0])
    scored = [fixed_view(dataset._decoded(first), cache.image_ids[0], k, cache.seed, 32) for k in range(3)]
    seen = [dataset[first]["image"] for _ in range(40)]
    assert all(any(torch.equal(view, s) for s in scored) for view in seen)
    assert all(any(torch.equal(view, s) for view in seen) for s in scored)


def _coverage(logits: np.ndarray, temperature: float, threshold: float) -> float:
    """Share of cached (image, view) pairs whose teacher confidence at `temperature` passes `threshold`."""
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max(-1, keepdims=True))
    return float(np.mean((p / p.sum(-1, keepdims=True)).max(-1) > threshold))


def test_distill_with_cache_logs_the_mask_coverage_of_its_t_and_threshold(teacher_and_cache, synth_manifest,
                                                                         tmp_path):
    """The logged coverage is that of the cached views at the configured T and threshold (the median
    confidence, so about half pass), not at the defaults (T 2, threshold 0.65)."""
    root, teacher_ckpt = teacher_and_cache
    logits = TeacherCache.load(root / "cache").logits
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    threshold = float(np.median((p / p.sum(-1, keepdims=True)).max(-1)))
    expected = _coverage(logits, 1.0, threshold)
    assert abs(_coverage(logits, 2.0, threshold) - expected) > 0.3  # the test can tell T apart ...
    assert abs(_coverage(logits, 1.0, 0.65) - expected) > 0.3  # ... and the threshold
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": teacher_ckpt, "train.sampler": "random",
                                                    "distill.teacher_cache": str(root / "cache"),
                                                    "distill.temperature": 1.0, "distill.threshold": threshold})
    fit(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    # each epoch draws one random view of every training image: sampling noise only
    assert (metrics["train/mask_coverage"] - expected).abs().max() < 0.15
    assert (metrics["train/kd"] > 0).all()


def test_online_teacher_distillation_runs(teacher_and_cache, synth_manifest, tmp_path):
    _, teacher_ckpt = teacher_and_cache
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": teacher_ckpt, "train.epochs": 1,
                                                    "distill.loss": "dkd"})
    assert fit(cfg, tmp_path)["epochs_run"] == 1


@pytest.mark.parametrize("override, error, message", [
    ({"data.image_size": 48}, DataError, "built for 32px views"),
    ({"data.train_views": 5}, ConfigError, "train_views is 5 but the teacher cache holds 3"),
])
def test_a_cache_that_does_not_match_the_run_is_refused(teacher_and_cache, synth_manifest, tmp_path, override,
                                                        error, message):
    root, teacher_ckpt = teacher_and_cache
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": teacher_ckpt,
                                                    "distill.teacher_cache": str(root / "cache"), **override})
    with pytest.raises(error, match=message):
        fit(cfg, tmp_path)


def test_online_teacher_trained_at_another_size_gets_resized_views(teacher_and_cache, synth_manifest, tmp_path):
    _, teacher_ckpt = teacher_and_cache  # trained at 32 px
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": teacher_ckpt, "train.epochs": 1,
                                                    "data.image_size": 40})
    assert fit(cfg, tmp_path)["epochs_run"] == 1


def test_a_teacher_cache_of_an_ensemble_is_refused_with_the_online_alternative(synth_manifest, tmp_path):
    from kndnet.distill.build import cache_teacher_for_config
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": "a.ckpt,b.ckpt", "distill.views": 2})
    with pytest.raises(ConfigError, match="names 2 checkpoints; a teacher cache scores one teacher.*--teacher-cache"):
        cache_teacher_for_config(cfg, tmp_path)
