"""Real HAM10000 images from ../shared/data/ham10000 (marked realdata; CI runs them)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from kndnet.checkpoint import load_model
from kndnet.cli import main
from kndnet.config import DataConfig
from kndnet.cpu import exact_int8_options, int8_arithmetic
from kndnet.data.manifest import load_manifest, prepare
from kndnet.inference import eval_dataset
from kndnet.shipped import ASSETS, SHIPPED_CHECKPOINT, SHIPPED_INT8
from kndnet.training.datamodule import split_rows

pytestmark = pytest.mark.realdata

EXPECTED = {"nv": 4323, "bkl": 583, "mel": 491, "bcc": 264, "akiec": 183, "vasc": 80, "df": 60}


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory):
    from tests.conftest import REAL_DATA
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.fail(f"real HAM10000 data expected at {REAL_DATA}")
    out = tmp_path_factory.mktemp("real")
    assert main(["prepare", "--data", str(REAL_DATA), "--out", str(out)]) == 0
    return load_manifest(out / "manifest.csv")


def test_prepare_reads_every_real_image_with_the_published_counts(real_manifest):
    assert len(real_manifest) == 5984
    assert real_manifest["label"].value_counts().to_dict() == EXPECTED


def test_real_folds_are_lesion_grouped_and_hold_every_class(real_manifest):
    assert (real_manifest.groupby("group")["fold"].nunique() == 1).all()
    cv = real_manifest[real_manifest["split"] != "test"]
    for fold in range(5):
        assert set(cv.loc[cv["fold"] == fold, "label"]) == set(EXPECTED), fold
    test_share = (real_manifest["split"] == "test").mean()
    assert 0.13 < test_share < 0.17


def test_a_few_training_steps_on_real_images(real_manifest, tmp_path):
    from kndnet.training.fit import fit
    from tests.helpers import tiny_config
    path = tmp_path / "m.csv"
    real_manifest.groupby("label").head(20).to_csv(path, index=False)
    summary = fit(tiny_config("student", path, **{"data.image_size": 64, "train.epochs": 1}), tmp_path / "run")
    assert summary["epochs_run"] == 1 and summary["parameters"] == 148_855


def test_lesions_with_several_real_images_stay_in_one_fold(tmp_path):
    """The shared copy has one image per lesion, so grouping cannot fail on it as it is. Here real images are
    copied (into tmp, never the repo) under new image ids, three per lesion, and every copy must land in its
    lesion's fold or test split."""
    from tests.conftest import REAL_DATA
    meta = pd.read_csv(REAL_DATA / "HAM10000_metadata.csv")
    chosen = meta.groupby("dx").head(8)
    folder = tmp_path / "ham"
    (folder / "HAM10000_images_part_1").mkdir(parents=True)
    rows = []
    for n, row in enumerate(chosen.itertuples()):
        source = next(REAL_DATA.glob(f"HAM10000_images_part_*/{row.image_id}.jpg"))
        for copy in range(3):
            image_id = f"ISIC_9{n:03d}{copy:03d}"
            shutil.copy(source, folder / "HAM10000_images_part_1" / f"{image_id}.jpg")
            rows.append({"lesion_id": row.lesion_id, "image_id": image_id, "dx": row.dx})
    pd.DataFrame(rows).to_csv(folder / "HAM10000_metadata.csv", index=False)
    assert main(["prepare", "--data", str(folder), "--out", str(tmp_path / "out")]) == 0
    manifest = load_manifest(tmp_path / "out" / "manifest.csv").merge(pd.DataFrame(rows), on="image_id")
    assert len(manifest) == 3 * len(chosen)
    assert (manifest.groupby("lesion_id")["fold"].nunique() == 1).all()
    assert (manifest.groupby("lesion_id")["split"].nunique() == 1).all()
    assert manifest["fold"].nunique() == 6  # five folds and the test split all got lesions


def _card():
    return json.loads((ASSETS / "model_card.json").read_text())


@pytest.fixture(scope="module")
def shipped_scores(tmp_path_factory):
    """Held-out real images the model card was measured on (its own data settings), scored here by the
    shipped checkpoint in PyTorch and the shipped int8 file in ONNX Runtime."""
    import onnxruntime as ort

    from tests.conftest import REAL_DATA
    card, out = _card(), tmp_path_factory.mktemp("card")
    d = card["training"]["data"]
    manifest = prepare(DataConfig(path=str(REAL_DATA), folds=d["folds"], val_fold=d["val_fold"],
                                  test_fraction=d["test_fraction"], seed=d["seed"]), out).manifest
    rows = split_rows(manifest, card["int8_eval_split"], d["val_fold"])
    model, spec = load_model(SHIPPED_CHECKPOINT)
    dataset = eval_dataset(rows, spec)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    x = ((images.float() - torch.tensor(spec.mean).view(1, 3, 1, 1) * 255)
         / (torch.tensor(spec.std).view(1, 3, 1, 1) * 255))
    with torch.no_grad():
        fp32 = torch.cat([model(b) for b in x.split(128)]).numpy()
    options = exact_int8_options(ort.SessionOptions())  # as `kndnet` runs it: the file's own arithmetic on any CPU
    session = ort.InferenceSession(str(SHIPPED_INT8), options, providers=["CPUExecutionProvider"])
    int8 = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return dataset.labels.numpy(), fp32, int8


def _macro_f1(labels, logits):
    return skm.f1_score(labels, logits.argmax(1), labels=np.unique(labels), average="macro", zero_division=0)


def test_shipped_int8_agrees_with_the_shipped_checkpoint_on_real_images(shipped_scores):
    labels, fp32, int8 = shipped_scores
    assert np.mean(int8.argmax(1) == fp32.argmax(1)) >= 0.95
    assert abs(np.mean(int8.argmax(1) == labels) - np.mean(fp32.argmax(1) == labels)) <= 0.02
    assert abs(_macro_f1(labels, int8) - _macro_f1(labels, fp32)) <= 0.03


def test_model_card_claims_are_what_the_shipped_files_score(shipped_scores):
    """Every figure recomputed from the shipped files; the card's fp32 side was ONNX fp32, here PyTorch, so
    fp32 figures may differ by one image's near-tie."""
    labels, fp32, int8 = shipped_scores
    card, one = _card(), 1 / len(labels) + 1e-4
    model, spec = load_model(SHIPPED_CHECKPOINT)
    assert card["int8_vs_fp32_images"] == len(labels)
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert (card["image_size"], card["arch"], card["calibration_temperature"]) == (spec.image_size, spec.arch,
                                                                                   spec.calibration_temperature)
    assert card["int8_bytes"] == SHIPPED_INT8.stat().st_size
    assert card["checkpoint_bytes"] == SHIPPED_CHECKPOINT.stat().st_size
    # kndnet runs an int8 file's exact arithmetic on any CPU: VNNI's integer kernels, or without VNNI the QDQ nodes
    # in float (kndnet.cpu). The two round a requantisation differently now and then: one test image of 897
    # between the AMD EPYC that measured runs/v34's card and an AMX machine. Exact where the card's arithmetic
    # is this CPU's (an unknown one never is); elsewhere one image's worth of accuracy, and of macro-F1 a bound
    # for one flip between two small classes (it moves both classes' F1; with 9 df and 12 vasc images ~0.016)
    same = card["int8_arithmetic"] == int8_arithmetic() != "unknown"
    assert card["int8_accuracy"] == pytest.approx(np.mean(int8.argmax(1) == labels), abs=1e-4 if same else one)
    assert card["int8_macro_f1"] == pytest.approx(_macro_f1(labels, int8), abs=1e-4 if same else 0.02)
    assert card["fp32_accuracy"] == pytest.approx(np.mean(fp32.argmax(1) == labels), abs=one)
    assert card["fp32_macro_f1"] == pytest.approx(_macro_f1(labels, fp32), abs=0.01)
    agreement = np.mean(int8.argmax(1) == fp32.argmax(1))
    # one near-tie of the fp32 side (ONNX there, PyTorch here), and one more image on the other arithmetic
    assert card["int8_vs_fp32_top1_agreement"] == pytest.approx(agreement, abs=one if same else 2 * one)
    assert card["int8_vs_fp32_max_abs_logit_diff"] == pytest.approx(np.abs(int8 - fp32).max(), abs=1e-3)
    text = (ASSETS / "MODEL_CARD.md").read_text()
    for key in ("fp32_accuracy", "int8_accuracy", "int8_vs_fp32_top1_agreement"):
        assert f"| {key} | {card[key]} |" in text


def test_export_of_the_shipped_student_matches_pytorch_on_real_images(real_manifest, tmp_path):
    """`kndnet export --int8` on real images, its files run here against the checkpoint in PyTorch."""
    from tests.test_deploy import check_export_against_pytorch
    small = real_manifest.groupby("label").head(40)
    small.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "export"
    assert main(["export", "--model", str(SHIPPED_CHECKPOINT), "--int8", "--calib", str(tmp_path / "m.csv"),
                 "--calib-count", "64", "--out", str(out)]) == 0
    check_export_against_pytorch(SHIPPED_CHECKPOINT, out, tmp_path / "m.csv", agreement_floor=0.9)
