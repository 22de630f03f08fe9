"""Bad inputs and interruptions: each gets a one-line named error (exit 2), and nothing half-done is left.

One parametrized table of command lines (issue #11): the exit code, a fragment the message must hold,
text it must not hold (a traceback, PyTorch's `weights_only=False` hint) and paths that must not exist
afterwards. Cases that need more than a command line (a held lock, a moved data folder, a killed stage)
follow as plain tests, each named after what broke.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import lightning  # noqa: F401  (imported before capsys so its log handler keeps a live stream)
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kndnet.cli import main
from kndnet.data.cache import build_cache
from kndnet.data.manifest import load_manifest
from kndnet.data.synth import write_synthetic
from kndnet.deploy.bench import noisy_timings, speedup_line
from kndnet.errors import ImageError, KNDNetWarning
from kndnet.io import COMPLETE_MARKER, is_complete, staged_folder
from kndnet.quiet import quiet_libraries
from kndnet.shipped import SHIPPED_CHECKPOINT, SHIPPED_INT8

FAST = ["--image-size", "32", "--batch-size", "8", "--epochs", "1", "--set", "data.num_workers=0",
        "--set", "train.compile=false", "--set", "train.progress_bar=false"]


@pytest.fixture(scope="module")
def w(synth_dir: Path, synth_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Shared inputs: data, manifests and crafted files, made once for the whole table."""
    root = tmp_path_factory.mktemp("bad_inputs")
    manifest = load_manifest(synth_manifest)
    blank = manifest.copy()
    blank.loc[3, "label"] = ""
    blank.to_csv(root / "blank_label.csv", index=False)
    manifest.assign(split=manifest["split"].replace("test", "train")).to_csv(root / "no_test.csv", index=False)
    (root / "a_file").write_text("not a folder\n")
    (root / "half_eval").mkdir()
    (root / "half_eval" / "metrics.json").write_text("{}")  # killed before predictions.csv
    (root / "garbage.onnx").write_bytes(b"this is not a protobuf" * 10)
    (root / "empty.onnx").write_bytes(b"")
    (root / "empty_dir").mkdir()
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("no images here\n")
    (root / "truncated.ckpt").write_bytes(SHIPPED_CHECKPOINT.read_bytes()[:5000])
    torch.save({"weights": argparse.Namespace(evil=True)}, root / "pickled.pt")
    torch.save([1, 2, 3], root / "a_list.pt")
    for name, change in CRAFTED.items():
        _crafted_checkpoint(root / f"{name}.ckpt", change)
    image = next(synth_dir.rglob("*.jpg"))
    return SimpleNamespace(root=root, data=synth_dir, manifest=synth_manifest, image=image)


def _crafted_checkpoint(path: Path, change: Callable[[dict], None]) -> None:
    ckpt = torch.load(SHIPPED_CHECKPOINT, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


CRAFTED: dict[str, Callable[[dict], None]] = {
    "no_spec_keys": lambda c: c["kndnet"].update(spec={"arch": "kndnet_student"}),
    "unknown_arch": lambda c: c["kndnet"]["spec"].update(arch="resnet_9000"),
    "five_classes": lambda c: c["kndnet"]["spec"].update(num_classes=5),
    "image_size_0": lambda c: c["kndnet"]["spec"].update(image_size=0),
    "temperature_0": lambda c: c["kndnet"]["spec"].update(calibration_temperature=0.0),
    # a file written before the key was renamed: the old name is still read, and still checked
    "legacy_temperature_0": lambda c: c["kndnet"]["spec"].update(temperature=0.0) or
    c["kndnet"]["spec"].pop("calibration_temperature"),
    "wrong_width": lambda c: c["kndnet"]["spec"].update(width=1.0),
    "no_spec": lambda c: c.pop("kndnet"),
}


@dataclass
class Case:
    name: str
    argv: Callable[[SimpleNamespace], list[str]]
    code: int = 2
    fragment: str = ""
    absent: tuple[str, ...] = ()                       # paths under w.root that must not exist afterwards
    forbidden: tuple[str, ...] = ("Traceback", "weights_only=False")
    marks: list = field(default_factory=list)


def _train(w: SimpleNamespace, out: str, *extra: str) -> list[str]:
    return ["train", "--data", str(w.manifest), "--out", str(w.root / out), *FAST, *extra]


def _predict(w: SimpleNamespace, *extra: str) -> list[str]:
    return ["predict", str(w.image), *extra]


def _evaluate(w: SimpleNamespace, *extra: str, out: str = "eval_out") -> list[str]:
    return ["evaluate", "--out", str(w.root / out), *extra]


CASES = [
    # --out that cannot be a results folder
    Case("prepare_out_is_a_file", lambda w: ["prepare", "--data", str(w.data), "--out", str(w.root / "a_file")],
         fragment="is a file"),
    Case("export_out_under_a_file", lambda w: ["export", "--out", str(w.root / "a_file" / "sub")],
         fragment="which is a file"),
    Case("evaluate_out_is_a_file", lambda w: _evaluate(w, "--data", str(w.manifest), out="a_file"),
         fragment="is a file"),
    Case("train_out_is_a_file", lambda w: _train(w, "a_file"), fragment="is a file"),
    Case("bench_out_under_a_file", lambda w: ["bench", "--out", str(w.root / "a_file" / "b")],
         fragment="which is a file"),
    Case("calibrate_out_under_a_file", lambda w: ["calibrate", "--data", str(w.manifest), "--model",
                                                  str(SHIPPED_CHECKPOINT), "--out", str(w.root / "a_file" / "c.ckpt")],
         fragment="which is a file"),
    Case("compare_interrupted_evaluation", lambda w: ["compare", str(w.root / "half_eval"), str(w.root / "half_eval"),
                                                      "--out", str(w.root / "cmp")],
         fragment="no predictions.csv", absent=("cmp/comparison.md",)),
    # models that are not models
    Case("predict_garbage_onnx", lambda w: _predict(w, "--model", str(w.root / "garbage.onnx")),
         fragment="not a loadable ONNX model"),
    Case("evaluate_empty_onnx", lambda w: _evaluate(w, "--data", str(w.manifest), "--model",
                                                    str(w.root / "empty.onnx")),
         fragment="not a loadable ONNX model", absent=("eval_out/metrics.json",)),
    Case("export_given_an_onnx", lambda w: ["export", "--model", str(SHIPPED_INT8), "--out",
                                            str(w.root / "exp_onnx")],
         fragment="not a loadable checkpoint", absent=("exp_onnx/model_fp32.onnx",)),
    Case("predict_missing_model", lambda w: _predict(w, "--model", str(w.root / "nope.ckpt")), fragment="not found"),
    Case("predict_truncated_checkpoint", lambda w: _predict(w, "--model", str(w.root / "truncated.ckpt")),
         fragment="truncated.ckpt: not a loadable"),
    Case("predict_refused_pickle", lambda w: _predict(w, "--model", str(w.root / "pickled.pt")),
         fragment="refused to load"),
    *[Case(f"predict_crafted_{name}", (lambda n: lambda w: _predict(w, "--model", str(w.root / f"{n}.ckpt")))(name),
           fragment=fragment) for name, fragment in [
        ("no_spec_keys", "lacks width"), ("unknown_arch", "unknown model architecture 'resnet_9000'"),
        ("five_classes", "5 classes"), ("image_size_0", "image_size 0"), ("temperature_0", "temperature 0.0"),
        ("legacy_temperature_0", "temperature 0.0"),
        ("wrong_width", "weights do not fit"), ("no_spec", "no 'kndnet' model spec")]],
    # splits and manifests
    Case("evaluate_split_typo", lambda w: _evaluate(w, "--data", str(w.manifest), "--split", "tset"),
         fragment="invalid choice: 'tset'"),
    Case("calibrate_split_typo", lambda w: ["calibrate", "--data", str(w.manifest), "--model",
                                            str(SHIPPED_CHECKPOINT), "--split", "vla"],
         fragment="invalid choice: 'vla'"),
    Case("evaluate_blank_label", lambda w: _evaluate(w, "--data", str(w.root / "blank_label.csv")),
         fragment="blank 'label' in 1 row(s) (line 5)", absent=("eval_out/metrics.json",)),
    Case("evaluate_no_test_split", lambda w: _evaluate(w, "--data", str(w.root / "no_test.csv")),
         fragment="no 'test' images", absent=("eval_out/metrics.json",)),
    Case("export_calib_without_test_split", lambda w: ["export", "--int8", "--calib", str(w.root / "no_test.csv"),
                                                       "--out", str(w.root / "exp_calib")],
         fragment="no 'test' images", absent=("exp_calib/model_fp32.onnx", "exp_calib/MODEL_CARD.md")),
    Case("export_calib_missing", lambda w: ["export", "--int8", "--calib", str(w.root / "nowhere"),
                                            "--out", str(w.root / "exp_missing")],
         fragment="no such data folder", absent=("exp_missing/model_fp32.onnx", "exp_missing/model_int8.onnx")),
    Case("export_int8_without_calib", lambda w: ["export", "--int8", "--out", str(w.root / "exp_nocalib")],
         fragment="--int8 needs --calib", absent=("exp_nocalib/model_fp32.onnx",)),
    Case("evaluate_batch_size_0", lambda w: _evaluate(w, "--data", str(w.manifest), "--batch-size", "0"),
         fragment="must be at least 1"),
    Case("bench_repeats_0", lambda w: ["bench", "--repeats", "0", "--out", str(w.root / "bench0")],
         fragment="must be at least 1"),
    Case("evaluate_unknown_format", lambda w: _evaluate(w, "--data", str(w.data), "--format", "hamm"),
         fragment="unknown --format 'hamm'"),
    # predict
    Case("predict_empty_folder", lambda w: ["predict", str(w.root / "empty_dir")], fragment="no image files"),
    Case("predict_folder_without_images", lambda w: ["predict", str(w.root / "no_images")],
         fragment="no image files"),
    *[Case(f"predict_top_k_{k}", (lambda k: lambda w: _predict(w, "--top-k", k))(k), fragment=f"--top-k {k}")
      for k in ("0", "-1", "8")],
    Case("predict_temperature_0", lambda w: _predict(w, "--model", str(w.root / "temperature_0.ckpt")),
         fragment="needs > 0"),
    # training options, validated once by config.validate
    *[Case(f"train_{flag[2:]}_{value}", (lambda f, v: lambda w: _train(w, "run_opt", f, v))(flag, value),
           fragment=key, absent=("run_opt/checkpoints",)) for flag, value, key in [
        ("--image-size", "0", "data.image_size"), ("--batch-size", "0", "data.batch_size"),
        ("--epochs", "0", "train.epochs"), ("--lr", "-1", "train.lr")]],
    Case("train_pretrained_not_a_state_dict",
         lambda w: _train(w, "run_list", "--role", "teacher", "--teacher", "test_efficientnet",
                          "--pretrained", str(w.root / "a_list.pt")),
         fragment="not a state dict", absent=("run_list/checkpoints",)),
    Case("train_pretrained_refused_pickle",
         lambda w: _train(w, "run_pickle", "--role", "teacher", "--teacher", "test_efficientnet",
                          "--pretrained", str(w.root / "pickled.pt")),
         fragment="refused to load", absent=("run_pickle/checkpoints",)),
    Case("train_unknown_teacher", lambda w: _train(w, "run_arch", "--role", "teacher", "--teacher", "effnet_b9",
                                                   "--pretrained", "none"),
         fragment="unknown model architecture 'effnet_b9'", absent=("run_arch/checkpoints",)),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and stderr of one command line (argparse's own refusals exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_with_a_named_error(case: Case, w: SimpleNamespace, capsys) -> None:
    code, err = run_cli(case.argv(w), capsys)
    assert code == case.code, err
    assert case.fragment in err
    message = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(message) <= 2, err  # a message (argparse's usage lines aside), not a traceback
    for text in case.forbidden:
        assert text not in err
    for rel in case.absent:
        assert not (w.root / rel).exists(), f"{rel} was left behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(w, tmp_path, capsys) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    code, err = run_cli(["prepare", "--data", str(w.data), "--out", str(locked / "run")], capsys)
    assert code == 2 and "cannot write" in err


def test_explain_gives_inputs_sharing_a_stem_their_own_overlays(w, tmp_path, capsys) -> None:
    for folder in ("left", "right"):
        (tmp_path / folder).mkdir()
        shutil.copy(w.image, tmp_path / folder / "lesion.jpg")
    out = tmp_path / "cams"
    assert main(["explain", str(tmp_path / "left"), str(tmp_path / "right"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["left_lesion_gradcam.png", "right_lesion_gradcam.png"]


# ---- data: symlinks, small classes, undecodable images, content-keyed cache, relative manifests

@pytest.fixture
def small_ham(tmp_path: Path) -> Path:
    data = tmp_path / "ham"
    write_synthetic(data, lesions_per_class=6, image_size=32, max_images_per_lesion=1, seed=1)
    return data


def _folders_layout(tmp_path: Path, small_ham: Path) -> Path:
    root = tmp_path / "folders"
    table = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    for row in table.itertuples():
        (root / row.dx).mkdir(parents=True, exist_ok=True)
        shutil.copy(next(small_ham.rglob(f"{row.image_id}.jpg")), root / row.dx / f"{row.image_id}.jpg")
    return root


@pytest.mark.parametrize("layout", ["ham10000", "folders"])
def test_symlink_escaping_the_data_folder_is_refused_in_every_layout(layout, small_ham, tmp_path, capsys) -> None:
    root = small_ham if layout == "ham10000" else _folders_layout(tmp_path, small_ham)
    outside = tmp_path / "elsewhere.jpg"
    victim = sorted(root.rglob("*.jpg"))[0]
    shutil.copy(victim, outside)
    victim.unlink()
    victim.symlink_to(outside)
    code, err = run_cli(["prepare", "--data", str(root), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "outside the data folder" in err and victim.stem in err
    assert not (tmp_path / "run" / "manifest.csv").exists()
    assert main(["prepare", "--data", str(root), "--out", str(tmp_path / "run"), "--drop-bad"]) == 0
    kept = load_manifest(tmp_path / "run" / "manifest.csv")
    assert victim.stem not in set(kept["image_id"])
    assert victim.stem in set(pd.read_csv(tmp_path / "run" / "dropped.csv")["image_id"])


def _drop_lesions(data: Path, code: str, keep: int) -> None:
    table = pd.read_csv(data / "HAM10000_metadata.csv")
    extra = table[table["dx"] == code]["lesion_id"].drop_duplicates().iloc[keep:]
    table[~table["lesion_id"].isin(extra)].to_csv(data / "HAM10000_metadata.csv", index=False)


def test_class_with_fewer_lesions_than_folds_warns_and_one_without_training_images_is_refused(
        small_ham, tmp_path, capsys) -> None:
    _drop_lesions(small_ham, "df", keep=3)
    assert main(["prepare", "--data", str(small_ham), "--out", str(tmp_path / "few")]) == 0
    assert "warning: class df has 3 lesion(s)" in capsys.readouterr().err
    _drop_lesions(small_ham, "df", keep=1)
    code, err = run_cli(["train", "--data", str(small_ham), "--out", str(tmp_path / "one"), *FAST], capsys)
    assert code == 2 and "df (1 lesion(s)) have no training images" in err
    assert not (tmp_path / "one" / "checkpoints").exists()


def test_cache_is_rebuilt_when_an_image_changes_in_place(small_ham, tmp_path) -> None:
    paths = [str(p) for p in sorted(small_ham.rglob("*.jpg"))[:4]]
    first = build_cache(paths, 16, tmp_path)
    before = np.array(first[0])
    Image.new("RGB", (32, 32), (255, 0, 0)).save(paths[0], format="JPEG")
    os.utime(paths[0], ns=(1, 1))  # a different mtime even on coarse clocks
    second = build_cache(paths, 16, tmp_path)
    assert second.array_path != first.array_path
    assert not np.array_equal(np.array(second[0]), before)


def test_manifest_survives_moving_the_project_and_old_absolute_manifests_still_load(small_ham, tmp_path) -> None:
    assert main(["prepare", "--data", str(small_ham), "--out", str(tmp_path / "runs" / "ham")]) == 0
    written = pd.read_csv(tmp_path / "runs" / "ham" / "manifest.csv")
    assert not any(Path(p).is_absolute() for p in written["path"]) and str(tmp_path) not in written["root"][0]
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.move(str(tmp_path), moved)
    try:
        rows = load_manifest(moved / "runs" / "ham" / "manifest.csv")
        assert all(Path(p).is_file() for p in rows["path"])
        rows.to_csv(moved / "absolute.csv", index=False)  # the old format: absolute paths, no root
        assert load_manifest(moved / "absolute.csv")["path"].tolist() == rows["path"].tolist()
    finally:
        shutil.move(str(moved), tmp_path)


def test_undecodable_image_without_the_cache_gives_the_same_named_error(small_ham, tmp_path, capsys) -> None:
    for image in small_ham.rglob("*.jpg"):
        image.write_bytes(b"not a jpeg")
    for cache, workers in (("true", "0"), ("false", "1")):
        argv = ["train", "--data", str(small_ham), "--out", str(tmp_path / f"run_{cache}"), *FAST,
                "--set", f"data.cache={cache}", "--set", f"data.num_workers={workers}"]
        code, err = run_cli(argv, capsys)
        assert code == 2, err
        assert "cannot decode as an image" in err and ".jpg" in err and "Traceback" not in err


def test_image_error_from_a_dataloader_worker_keeps_its_message() -> None:
    wrapped = ("Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nkndnet.errors.ImageError: /data/a.jpg: cannot decode as an image\n')
    err = ImageError(wrapped)
    assert str(err) == "/data/a.jpg: cannot decode as an image" and err.reason == "cannot decode as an image"


# ---- interruptions and concurrency

def test_killed_stage_leaves_no_result_that_looks_finished(tmp_path) -> None:
    target = tmp_path / "eval"
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(target) as tmp:
            (tmp / "metrics.json").write_text("{}")
            raise KeyboardInterrupt  # killed before predictions.csv
    assert not (target / "metrics.json").exists() and not is_complete(target)
    (target / "metrics.json").write_text("{}")  # an older kndnet's half-written folder
    assert not is_complete(target)
    with staged_folder(target) as tmp:
        (tmp / "metrics.json").write_text("{}")
        (tmp / "predictions.csv").write_text("image_id\n")
    assert is_complete(target) and (target / "predictions.csv").is_file()
    assert not list(target.glob(".staged.partial-*")) and (target / COMPLETE_MARKER).is_file()


def test_stale_temporaries_of_a_killed_prepare_are_removed(w, tmp_path) -> None:
    stale = tmp_path / ".manifest.csv.abc12345.tmp"
    stale.write_text("half")
    assert main(["prepare", "--data", str(w.data), "--out", str(tmp_path)]) == 0
    assert not stale.exists() and (tmp_path / "manifest.csv").is_file() and not (tmp_path / ".lock").exists()


def test_second_train_into_a_locked_run_directory_is_refused_naming_the_pid(w, tmp_path, capsys) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{holder.pid}\n")
        code, err = run_cli(_train(SimpleNamespace(manifest=w.manifest, root=tmp_path), "."), capsys)
        assert code == 2 and f"PID {holder.pid}" in err
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_dead_process_is_taken_over(w, tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")
    assert main(["prepare", "--data", str(w.data), "--out", str(tmp_path)]) == 0
    assert not (tmp_path / ".lock").exists()


def test_truncated_last_checkpoint_names_the_file_and_suggests_force(w, tmp_path, capsys) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(SHIPPED_CHECKPOINT.read_bytes()[:3000])
    code, err = run_cli(_train(SimpleNamespace(manifest=w.manifest, root=tmp_path), "."), capsys)
    assert code == 2 and "last.ckpt" in err and "--force" in err and "Traceback" not in err


def test_pretrained_timm_without_network_names_the_offline_choices(w, tmp_path, capsys, monkeypatch) -> None:
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network, fast
    argv = _train(SimpleNamespace(manifest=w.manifest, root=tmp_path), "run", "--role", "teacher",
                  "--teacher", "test_efficientnet", "--pretrained", "timm")
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "could not download" in err and "lite-pypi" in err and "--pretrained none" in err


@pytest.mark.slow
def test_force_after_the_data_changed_trains_on_the_new_labels(small_ham, tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_ham), "--out", str(out), *FAST]) == 0
    table = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    table.loc[table["dx"] == "vasc", "dx"] = "nv"  # relabelled upstream
    table.to_csv(small_ham / "HAM10000_metadata.csv", index=False)
    assert main(["train", "--data", str(small_ham), "--out", str(out), *FAST, "--force"]) == 0
    assert "vasc" not in set(load_manifest(out / "manifest.csv")["label"])


# ---- newcomer polish

def test_bench_warns_instead_of_claiming_a_speedup_from_noisy_timings() -> None:
    steady = {"torch_eager_1thread_b1_p50_ms": 2.0, "torch_eager_1thread_b1_p95_ms": 2.4,
              "ort_int8_1thread_b1_p50_ms": 1.0, "ort_int8_1thread_b1_p95_ms": 1.1,
              "int8_vs_eager_1thread_b1_speedup": 2.0}
    assert speedup_line(steady).endswith("2.0x faster")
    busy = {**steady, "ort_int8_1thread_b1_p95_ms": 3.5}
    assert noisy_timings(busy) == ["ort_int8_1thread p95/p50 3.5"]
    assert speedup_line(busy).startswith("warning: timings are noisy") and "faster" not in speedup_line(busy)


def test_demo_quiets_library_chatter_unless_verbose(recwarn) -> None:
    import logging
    import warnings
    with quiet_libraries(verbose=False):
        warnings.warn("a deprecation nobody asked about", DeprecationWarning)
        assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
    assert not recwarn.list
    with quiet_libraries(verbose=True):
        warnings.warn("shown with -v", UserWarning)
    assert len(recwarn.list) == 1


def test_training_commands_quiet_libraries_but_keep_epoch_lines_and_own_warnings(recwarn) -> None:
    import logging
    import warnings

    import kndnet.training.epoch_log  # noqa: F401  sets kndnet.epochs to INFO, as training does
    with quiet_libraries(progress=True):
        warnings.warn("a library's deprecation, blamed on its caller", DeprecationWarning)
        warnings.warn("a library's notice", UserWarning)
        warnings.warn("teacher from random weights", KNDNetWarning)
        assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("kndnet.epochs").getEffectiveLevel() == logging.INFO
        assert not logging.getLogger("torch.utils.cpp_extension").isEnabledFor(logging.WARNING)  # "No CUDA runtime"
    assert [str(w.message) for w in recwarn.list] == ["teacher from random weights"]
    with quiet_libraries():
        assert logging.getLogger("kndnet.epochs").getEffectiveLevel() == logging.WARNING  # the demo's


def test_kndnet_warnings_print_as_one_line_without_kndnets_source_file(monkeypatch) -> None:
    import argparse
    import warnings

    import kndnet.cli
    shown = []

    def site_format(message, category, filename, lineno, line=None) -> str:  # one installed before kndnet's
        return f"site: {category.__name__}: {message}"

    def handler(args) -> int:  # a command that warns, as a teacher from random weights would (pytest records
        for category in (KNDNetWarning, UserWarning):  # warnings itself, so the formatter is called directly)
            shown.append(warnings.formatwarning("a notice", category, "/site/kndnet/teachers.py", 114))
        if len(shown) == 2:  # main inside main: the inner one wraps the outer one's formatter
            assert main([]) == 0
        return 0

    parser = argparse.ArgumentParser(prog="kndnet")
    parser.set_defaults(command="warn", handler=handler)
    monkeypatch.setattr(kndnet.cli, "build_parser", lambda: parser)  # a command line of that one command
    monkeypatch.setattr(warnings, "formatwarning", site_format)
    assert main([]) == 0
    assert shown == ["warning: a notice\n", "site: UserWarning: a notice"] * 2  # others: the earlier format
    assert warnings.formatwarning is site_format  # main() leaves no global formatter behind


def test_exported_files_carry_no_absolute_paths_of_the_training_machine(tmp_path) -> None:
    assert main(["export", "--out", str(tmp_path)]) == 0
    card = (tmp_path / "model_card.json").read_text() + (tmp_path / "MODEL_CARD.md").read_text()
    config = str(torch.load(tmp_path / "model.ckpt", weights_only=True)["kndnet"]["config"])
    for text in (card, config):
        assert "/work/" not in text and str(tmp_path) not in text
    assert is_complete(tmp_path) and not list(tmp_path.glob(".staged.partial-*"))


def test_a_reader_that_closes_the_pipe_stops_kndnet_quietly(tmp_path) -> None:
    """`kndnet predict DIR | head`: when stdout's reader leaves, no traceback, the shell's SIGPIPE code."""
    command = [sys.executable, "-c", "import sys; from kndnet.cli import main; sys.exit(main())",
               "synth", "--out", str(tmp_path / "lesions"), "--lesions-per-class", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before kndnet has imported torch, so its first line meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_broken_pipe_other_than_stdouts_is_not_taken_for_a_reader_that_left(monkeypatch) -> None:
    """A loader worker's or a subprocess's broken pipe is a failure: re-raised, not a quiet exit 141."""
    from kndnet import cli

    def handler(args):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(cli, "_check_out", lambda args: None)
    with pytest.raises(BrokenPipeError):
        cli._run(argparse.Namespace(handler=handler), ["predict", "x.jpg"])
