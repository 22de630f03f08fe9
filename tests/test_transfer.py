"""Unlabelled transfer images (distill.transfer_images): found, checked against the held-out splits, loaded
beside each labelled batch, scored by the teacher and distilled, never part of the label loss."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kndnet.config import DistillConfig
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import split_rows
from kndnet.data.transfer import transfer_rows
from kndnet.errors import ConfigError, DataError
from kndnet.pipeline import _check_online_teacher
from kndnet.training.datamodule import LesionDataModule
from kndnet.training.fit import fit
from kndnet.training.module import _with_teacher_targets
from tests.helpers import tiny_config
from tests.test_function_matching import _distill_module, _saved_model


def _images(folder, count, size=40):
    """`count` small images, half of them in a sub-folder, plus a file that is not an image."""
    for i in range(count):
        where = folder / ("nested" if i % 2 else "")
        where.mkdir(parents=True, exist_ok=True)
        colour = (40 * i % 256, 90, 200 - 10 * i % 200)
        Image.new("RGB", (size + i, size), colour).save(where / f"unlabelled_{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_transfer_rows_list_every_image_under_the_folder(synth_manifest, tmp_path):
    rows = transfer_rows(_images(tmp_path / "t", 5), load_manifest(synth_manifest), val_fold=0)
    assert sorted(rows["image_id"]) == [f"unlabelled_{i}" for i in range(5)]
    assert "label" not in rows and all(p.endswith(".png") for p in rows["path"])


def test_a_missing_or_empty_transfer_folder_is_refused_by_name(synth_manifest, tmp_path):
    manifest = load_manifest(synth_manifest)
    with pytest.raises(DataError, match="nowhere is not a folder"):
        transfer_rows(tmp_path / "nowhere", manifest, 0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty holds no image files"):
        transfer_rows(tmp_path / "empty", manifest, 0)


@pytest.mark.parametrize("split, named", [("test", "test"), ("val", "validation")])
def test_held_out_images_among_the_transfer_images_are_refused(synth_manifest, tmp_path, split, named):
    """A copy of a validation or test image (same image id) would teach the student on what scores it."""
    manifest = load_manifest(synth_manifest)
    held_out = split_rows(manifest, split, 0).iloc[0]
    folder = _images(tmp_path / "t", 2)
    shutil.copy(held_out["path"], folder / "nested" / f"{held_out['image_id']}.png")
    with pytest.raises(DataError, match=rf"1 image\(s\) .* {held_out['image_id']}.png \({named}\)"):
        transfer_rows(folder, manifest, 0)


def test_a_held_out_image_under_another_name_is_caught_by_its_file(synth_manifest, tmp_path):
    manifest = load_manifest(synth_manifest)
    test_rows = split_rows(manifest, "test", 0)
    folder = _images(tmp_path / "t", 1)
    for i, path in enumerate(test_rows["path"][:7]):
        (folder / f"renamed_{i}.png").symlink_to(path)
    with pytest.raises(DataError, match=r"7 image\(s\) .*renamed_0.png \(test\).* and 2 more\. Those images"):
        transfer_rows(folder, manifest, 0)


def test_training_images_may_be_transfer_images(synth_manifest, tmp_path):
    manifest = load_manifest(synth_manifest)
    train = split_rows(manifest, "train", 0).iloc[0]
    folder = _images(tmp_path / "t", 1)
    shutil.copy(train["path"], folder)
    assert train["image_id"] in set(transfer_rows(folder, manifest, 0)["image_id"])


def test_transfer_images_outside_distillation_or_with_a_teacher_cache_are_refused(synth_manifest, tmp_path):
    with pytest.raises(ConfigError, match="this is the student config; put the key in a recipe's distill section"):
        tiny_config("student", synth_manifest, **{"distill.transfer_images": str(tmp_path)})
    with pytest.raises(ConfigError, match="needs the online teacher, but distill.teacher_cache is set"):
        tiny_config("distill", synth_manifest, **{"distill.transfer_images": str(tmp_path),
                                                  "distill.teacher_cache": str(tmp_path)})


def test_a_recipe_with_transfer_images_and_a_teacher_cache_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="distill.views is 4.*set distill.views to 0"):
        _check_online_teacher("r.yaml", DistillConfig(transfer_images=str(tmp_path), views=4))
    _check_online_teacher("r.yaml", DistillConfig(transfer_images=str(tmp_path), views=0))


def test_the_pipelines_prepare_stage_refuses_held_out_transfer_images(synth_dir, tmp_path):
    """In `kndnet run` the folder is checked against the manifest at once, not after the teacher has trained."""
    import yaml

    from kndnet.config import recipe_path
    from kndnet.pipeline import stage_configs
    from kndnet.pipeline_stages import Run, _prepare
    folder = _images(tmp_path / "t", 2)
    recipe = yaml.safe_load(recipe_path("cpu").read_text())
    recipe["distill"]["distill"]["transfer_images"] = str(folder)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    configs = stage_configs(tmp_path / "recipe.yaml", str(synth_dir))
    run = Run(configs, tmp_path / "run", log=lambda line: None)
    _prepare(run)  # no held-out image in the folder: accepted
    held_out = split_rows(load_manifest(run.manifest), "test", 0).iloc[0]
    shutil.copy(held_out["path"], folder / Path(held_out["path"]).name)
    with pytest.raises(DataError, match=rf"{held_out['image_id']}\S* \(test\)"):
        _prepare(run)


def test_a_transfer_folder_larger_than_a_small_labelled_split_still_gives_full_batches(synth_manifest, tmp_path):
    """The transfer loader drops its last batch exactly when the labelled loader does, whatever the folder size."""
    manifest = load_manifest(synth_manifest)
    batch_size = len(split_rows(manifest, "train", 0)) + 1  # the labelled split is one short of a batch
    folder = _images(tmp_path / "t", batch_size + 3, size=8)  # the folder is more than a batch
    cfg = tiny_config("distill", synth_manifest, **{"distill.transfer_images": str(folder), "data.cache": False,
                                                    "data.batch_size": batch_size})
    batches = [batch for batch, _, _ in LesionDataModule(cfg, manifest, tmp_path).train_dataloader()]
    assert len(batches) == 1 and len(batches[0]["transfer"]["image"]) == len(batches[0]["labelled"]["image"])


def test_transfer_images_are_mixed_among_themselves_not_with_labelled_ones(synth_manifest):
    module, teacher, _ = _distill_module(synth_manifest, **{"train.mixup_alpha": 0.4, "train.cutmix_alpha": 1.0,
                                                            "distill.loss": "hinton", "distill.teacher_bf16": False})
    black = torch.zeros(6, 3, 48, 48, dtype=torch.uint8)
    white = torch.full((6, 3, 48, 48), 255, dtype=torch.uint8)
    grey = torch.full((6, 3, 48, 48), 128, dtype=torch.uint8)
    for _ in range(4):  # mixup and CutMix alternate at random
        transfer = torch.cat([white[:3], grey[:3]])
        module.training_step({"labelled": {"image": black, "label": torch.arange(6)},
                              "transfer": {"image": transfer, "label": torch.full((6,), -1)}}, 0)
    for seen in teacher.inputs:
        labelled, mixed_transfer = seen[:6], seen[6:]
        assert torch.allclose(labelled, module.preprocess(black), atol=1e-5)  # no transfer pixel reached them
        low, high = module.preprocess(grey[:1]), module.preprocess(white[:1])
        assert ((mixed_transfer >= low - 1e-5) & (mixed_transfer <= high + 1e-5)).all()
        assert not torch.equal(mixed_transfer, module.preprocess(transfer))  # but they were mixed


def test_each_labelled_batch_comes_with_as_many_transfer_images(synth_manifest, tmp_path):
    cfg = tiny_config("distill", synth_manifest, **{"distill.transfer_images": str(_images(tmp_path / "t", 3)),
                                                    "data.cache": False})
    data = LesionDataModule(cfg, load_manifest(synth_manifest), tmp_path / "cache")
    batches = [batch for batch, _, _ in data.train_dataloader()]  # CombinedLoader: (batch, index, loader index)
    plain = LesionDataModule(tiny_config("distill", synth_manifest, **{"data.cache": False}),
                             load_manifest(synth_manifest), tmp_path / "cache")
    assert len(batches) == len(list(plain.train_dataloader())) > 1
    for batch in batches:
        labelled, transfer = batch["labelled"], batch["transfer"]
        assert transfer["image"].shape == labelled["image"].shape  # views at the same size, same batch size
        assert (transfer["label"] == -1).all() and (labelled["label"] >= 0).all()


def test_the_teacher_scores_transfer_images_and_the_label_loss_skips_them(synth_manifest):
    """loss = alpha * CE(labelled) + (1 - alpha) * T^2 * mean KL over labelled and transfer images alike."""
    module, teacher, student = _distill_module(synth_manifest, **{
        "train.mixup_alpha": 0.0, "distill.loss": "hinton", "distill.temperature": 2.0, "distill.alpha": 0.3,
        "distill.teacher_bf16": False, "train.label_smoothing": 0.0})
    g = torch.Generator().manual_seed(0)
    labelled = {"image": torch.randint(0, 256, (4, 3, 48, 48), generator=g, dtype=torch.uint8),
                "label": torch.tensor([0, 1, 2, 3])}
    transfer = {"image": torch.randint(0, 256, (4, 3, 48, 48), generator=g, dtype=torch.uint8),
                "label": torch.full((4,), -1)}
    loss = module.training_step({"labelled": labelled, "transfer": transfer}, 0)
    seen = teacher.inputs[0]
    assert len(seen) == 8 and torch.allclose(seen[4:], module.preprocess(transfer["image"]))
    s = student.head(student.inputs[0].mean(dim=(2, 3)))
    t = teacher.head(seen.mean(dim=(2, 3)))
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(t / 2, 1), log_target=True, reduction="batchmean") * 4
    expected = 0.3 * F.cross_entropy(s[:4], labelled["label"]) + 0.7 * kl
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_transfer_images_get_the_teachers_top_class_as_target_in_the_targets_form():
    teacher = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    assert torch.equal(_with_teacher_targets(torch.tensor([2, 0]), teacher), torch.tensor([2, 0, 1, 0]))
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    assert torch.equal(_with_teacher_targets(soft, teacher),
                       torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert _with_teacher_targets(soft, teacher[:0]) is soft


def test_distillation_with_transfer_images_trains_and_resumes_under_the_same_recipe(synth_manifest, tmp_path):
    teacher = _saved_model("teacher", synth_manifest, tmp_path / "t.ckpt")
    folder = _images(tmp_path / "transfer", 6)
    cfg = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher), "distill.loss": "dkd",
                                                    "distill.transfer_images": str(folder), "train.epochs": 1,
                                                    "train.mixup_alpha": 0.4})
    summary = fit(cfg, tmp_path / "run")
    assert summary["epochs_run"] == 1
    assert fit(cfg, tmp_path / "run") == summary  # finished: the same recipe returns the run
    other = tiny_config("distill", synth_manifest, **{"distill.teacher": str(teacher), "distill.loss": "dkd",
                                                      "train.epochs": 1, "train.mixup_alpha": 0.4})
    with pytest.raises(ConfigError, match="distill.transfer_images"):
        fit(other, tmp_path / "run")


@pytest.mark.slow
def test_distillation_with_transfer_images_runs_under_ddp_on_two_cpu_processes(synth_manifest, tmp_path):
    """Both loaders go through Lightning's sampler wrapping: each rank gets its share of both, same length."""
    import json
    import subprocess
    import sys
    teacher = _saved_model("teacher", synth_manifest, tmp_path / "t.ckpt")
    cmd = [sys.executable, "-m", "kndnet.cli", "distill", "--teacher", str(teacher), "--data", str(synth_manifest),
           "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "32", "--batch-size", "8",
           "--transfer-images", str(_images(tmp_path / "transfer", 6)), "--loss", "hinton",
           "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--set", "distill.teacher_runtime=torch",
           "--set", "data.num_workers=0", "--set", "train.progress_bar=false", "--set", "train.compile=false"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # each rank trains on its half of the labelled split in full batches; a transfer loader shrunk to its share
    # of the 6 images (a RandomSampler swapped for a DistributedSampler) would cut the epoch to one step
    manifest = load_manifest(synth_manifest)
    per_rank = -(-len(split_rows(manifest, "train", 0)) // 2) // 8 * 8
    assert summary["world_size"] == 2 and summary["samples_per_rank"] == [per_rank, per_rank] and per_rank > 8
