"""`data.crop_scale_min` and `data.jitter_strength`: the views' strength, with the method's views as default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kndnet.cli import main
from kndnet.config import DataConfig, load_config
from kndnet.data.datasets import DrawnView, RandomView
from kndnet.data.manifest import load_manifest
from kndnet.data.transforms import CROP_SCALE, JITTER, METHOD_AUGMENT, Augment, fixed_view, sample_view
from kndnet.distill.teacher_cache import INDEX_NAME, TeacherCache
from kndnet.errors import ConfigError, DataError
from kndnet.training.datamodule import LesionDataModule
from kndnet.training.fit import fit
from tests.helpers import tiny_config


def _views(augment: Augment, n: int = 400) -> list:
    gen = torch.Generator().manual_seed(0)
    return [sample_view(100, 100, gen, augment) for _ in range(n)]


def test_the_default_is_the_method_and_draws_the_same_views_as_before():
    """Golden values printed by the code before the keys existed: old caches and seeds keep their views."""
    assert Augment() == METHOD_AUGMENT == Augment(CROP_SCALE[0], 1.0)
    assert Augment.of(DataConfig()) == METHOD_AUGMENT        # the config's defaults are the method's views too
    gen = torch.Generator().manual_seed(3)
    first, second = sample_view(90, 90, gen), sample_view(90, 90, gen)
    assert (first.top, first.left, first.height, first.width, first.hflip) == (0, 12, 90, 72, False)
    assert (second.top, second.left, second.height, second.width, second.hflip) == (2, 8, 88, 74, True)
    assert first.angle == pytest.approx(23.27139973640442) and second.hue == pytest.approx(-0.0448448121547699)
    assert (first.brightness, first.contrast, first.saturation) == pytest.approx((0.99432287, 0.91202326, 1.02718658))
    image = torch.arange(3 * 40 * 40).remainder(251).to(torch.uint8).view(3, 40, 40)
    assert int(fixed_view(image, "ISIC_1", 2, 5, 32).sum()) == 316762


def test_a_lower_crop_scale_cuts_smaller_crops():
    def areas(augment: Augment) -> np.ndarray:
        return np.array([v.height * v.width / 100 ** 2 for v in _views(augment)])
    method, wide = areas(METHOD_AUGMENT), areas(Augment(crop_scale_min=0.25))
    assert method.min() >= 0.78                      # rounding of the box's sides
    assert wide.min() < 0.35 and (wide < 0.7).mean() > 0.4


def test_jitter_strength_scales_brightness_contrast_saturation_and_leaves_hue():
    for name in ("brightness", "contrast", "saturation"):
        assert {getattr(v, name) for v in _views(Augment(jitter_strength=0.0), 20)} == {1.0}
        strong = np.array([getattr(v, name) for v in _views(Augment(jitter_strength=3.0))])
        bound = 3.0 * JITTER[name]
        assert strong.min() >= 1 - bound and strong.max() <= 1 + bound
        assert np.abs(strong - 1).max() > 2.0 * JITTER[name]     # beyond the method's range
    hues = np.array([v.hue for v in _views(Augment(jitter_strength=3.0))])
    assert np.abs(hues).max() <= JITTER["hue"]


@pytest.mark.parametrize("key,value", [("data.crop_scale_min", "0"), ("data.crop_scale_min", "1.5"),
                                       ("data.jitter_strength", "-1")])
def test_out_of_range_values_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides={key: value}, role="student")


@pytest.mark.parametrize("train_views,kind", [(0, RandomView), (3, DrawnView)])
def test_the_training_views_use_the_configured_strength(synth_manifest, tmp_path, train_views, kind):
    cfg = tiny_config("student", synth_manifest, **{"data.crop_scale_min": 0.3, "data.jitter_strength": 2.0,
                                                    "data.train_views": train_views})
    dataset = LesionDataModule(cfg, load_manifest(synth_manifest), tmp_path).dataset("train", "train")
    assert isinstance(dataset.view, kind) and dataset.view.augment == Augment(0.3, 2.0)


def test_cache_teacher_scores_and_records_the_strength_it_is_given(synth_manifest, tmp_path):
    teacher = fit(tiny_config("teacher", synth_manifest, **{"train.epochs": 1}), tmp_path / "teacher")
    args = ["cache-teacher", "--teacher", teacher["best_checkpoint"], "--data", str(synth_manifest), "--views", "1",
            "--image-size", "32", "--config", str(tmp_path / "teacher" / "config.yaml")]
    assert main([*args, "--out", str(tmp_path / "method")]) == 0
    assert main([*args, "--out", str(tmp_path / "strong"), "--set", "data.crop_scale_min=0.3"]) == 0
    method, strong = TeacherCache.load(tmp_path / "method"), TeacherCache.load(tmp_path / "strong")
    assert method.augment == METHOD_AUGMENT and strong.augment == Augment(0.3, 1.0)
    assert not np.array_equal(method.logits, strong.logits)   # other crops were scored


def _cache(tmp_path, index_extra: dict) -> TeacherCache:
    np.save(tmp_path / "logits_view0.npy", np.zeros((2, 7), np.float16))
    index = {"image_ids": ["a", "b"], "views": 1, "seed": 1, "image_size": 32, "load_size": 37, **index_extra}
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    return TeacherCache.load(tmp_path)


def test_a_teacher_cache_refuses_views_of_another_strength(tmp_path):
    cache = _cache(tmp_path, {"augment": Augment(0.5, 1.0).to_dict()})
    cache.check_matches(32, 37, Augment(0.5, 1.0))
    with pytest.raises(DataError, match="crop_scale_min"):
        cache.check_matches(32, 37, METHOD_AUGMENT)


def test_a_cache_built_before_the_keys_existed_holds_the_methods_views(tmp_path):
    cache = _cache(tmp_path, {})
    assert cache.augment == METHOD_AUGMENT
    cache.check_matches(32, 37)


def test_an_unreadable_strength_in_a_cache_index_is_named(tmp_path):
    with pytest.raises(DataError, match="augment"):
        _cache(tmp_path, {"augment": {"crop_scale": 0.5}})
