"""Every layout `prepare` reads, and every bad input it must refuse by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from kndnet.classes import CLASS_CODES, ISIC_COLUMNS
from kndnet.cli import main
from kndnet.config import DataConfig
from kndnet.data.formats import detect_format
from kndnet.data.manifest import MANIFEST_COLUMNS, build_manifest, prepare
from kndnet.errors import DataError


@pytest.fixture
def ham_copy(synth_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ham"
    shutil.copytree(synth_dir, dst)
    return dst


def _metadata(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "HAM10000_metadata.csv", dtype=str)


def _write_metadata(root: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(root / "HAM10000_metadata.csv", index=False)


def test_ham10000_layout_reads_every_image(synth_dir):
    manifest, dropped, fmt = build_manifest(DataConfig(path=str(synth_dir)))
    assert fmt == "ham10000" and dropped.empty
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == len(_metadata(synth_dir))
    assert all(Path(p).is_file() for p in manifest["path"])


def test_extra_dataset_column_is_accepted(ham_copy):
    meta = _metadata(ham_copy)
    meta["dataset"] = "vidir_modern"
    _write_metadata(ham_copy, meta)
    manifest, _, _ = build_manifest(DataConfig(path=str(ham_copy)))
    assert len(manifest) == len(meta)


def _isic_layout(synth_dir: Path, root: Path) -> pd.DataFrame:
    meta = _metadata(synth_dir)
    images = root / "ISIC2018_Task3_Test_Input"
    images.mkdir(parents=True)
    for p in synth_dir.rglob("*.jpg"):
        shutil.copy(p, images / p.name)
    onehot = pd.DataFrame(0.0, index=meta.index, columns=list(ISIC_COLUMNS))
    for i, dx in meta["dx"].items():
        onehot.at[i, ISIC_COLUMNS[CLASS_CODES.index(dx)]] = 1.0
    truth = pd.concat([meta["image_id"].rename("image"), onehot], axis=1)
    truth.to_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    return meta


def test_isic2018_ground_truth_layout_one_group_per_image(synth_dir, tmp_path):
    meta = _isic_layout(synth_dir, tmp_path / "isic")
    assert detect_format(tmp_path / "isic") == "isic2018"
    manifest, _, _ = build_manifest(DataConfig(path=str(tmp_path / "isic")))
    assert manifest["group"].nunique() == len(meta)
    truth = dict(zip(meta["image_id"], meta["dx"]))
    assert all(truth[i] == label for i, label in zip(manifest["image_id"], manifest["label"]))


def test_isic2018_rejects_a_row_that_is_not_one_hot(synth_dir, tmp_path):
    _isic_layout(synth_dir, tmp_path / "isic")
    gt = tmp_path / "isic" / "ISIC2018_Task3_Test_GroundTruth.csv"
    frame = pd.read_csv(gt)
    frame.loc[3, "MEL"] = 1.0
    frame.loc[3, "NV"] = 1.0
    frame.to_csv(gt, index=False)
    with pytest.raises(DataError, match="row 5.*|not one-hot"):
        build_manifest(DataConfig(path=str(tmp_path / "isic")))


def _generic_csv(synth_dir: Path, root: Path, use_names: bool = True) -> Path:
    meta = _metadata(synth_dir)
    shutil.copytree(synth_dir, root / "imgs")
    paths = {p.stem: p.relative_to(root) for p in (root / "imgs").rglob("*.jpg")}
    names = {"mel": "Melanoma", "nv": "melanocytic nevi"}
    frame = pd.DataFrame({"image": [str(paths[i]) for i in meta["image_id"]],
                          "label": [names.get(d, d) if use_names else d for d in meta["dx"]],
                          "group": meta["lesion_id"]})
    frame.to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def test_generic_csv_with_full_names_and_groups(synth_dir, tmp_path):
    csv = _generic_csv(synth_dir, tmp_path / "g")
    assert detect_format(tmp_path / "g") == "csv"
    manifest, _, fmt = build_manifest(DataConfig(path=str(csv)))
    assert fmt == "csv" and set(manifest["label"]) == set(CLASS_CODES)
    assert manifest["group"].nunique() < len(manifest)


def test_generic_csv_path_escaping_the_data_folder_is_refused(synth_dir, tmp_path):
    csv = _generic_csv(synth_dir, tmp_path / "g")
    frame = pd.read_csv(csv)
    frame.loc[0, "image"] = "../../etc/passwd.jpg"
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError, match="escapes the data folder"):
        build_manifest(DataConfig(path=str(csv)))


def test_folder_per_class_layout(synth_dir, tmp_path):
    meta = _metadata(synth_dir)
    for p in synth_dir.rglob("*.jpg"):
        dx = meta.set_index("image_id").at[p.stem, "dx"]
        (tmp_path / "f" / dx).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "f" / dx / p.name)
    assert detect_format(tmp_path / "f") == "folders"
    manifest, _, _ = build_manifest(DataConfig(path=str(tmp_path / "f")))
    assert len(manifest) == len(meta)


def test_missing_column_names_the_file_and_column(ham_copy):
    _write_metadata(ham_copy, _metadata(ham_copy).drop(columns=["dx"]))
    with pytest.raises(DataError, match=r"HAM10000_metadata.csv: missing column\(s\) dx"):
        build_manifest(DataConfig(path=str(ham_copy)))


def test_unknown_label_names_row_and_value(ham_copy):
    meta = _metadata(ham_copy)
    meta.loc[4, "dx"] = "melanomaa"
    _write_metadata(ham_copy, meta)
    with pytest.raises(DataError, match="unknown label 'melanomaa'.*row 6"):
        build_manifest(DataConfig(path=str(ham_copy)))


def test_duplicate_image_id(ham_copy):
    meta = _metadata(ham_copy)
    _write_metadata(ham_copy, pd.concat([meta, meta.iloc[[2]]]))
    with pytest.raises(DataError, match=f"duplicate image id.*{meta.at[2, 'image_id']}"):
        build_manifest(DataConfig(path=str(ham_copy)))


def test_lesion_with_conflicting_labels(ham_copy):
    meta = _metadata(ham_copy)
    lesion = meta["lesion_id"].value_counts().index[0]  # a lesion with several images
    first = meta.index[meta["lesion_id"] == lesion][0]
    meta.loc[first, "dx"] = "vasc" if meta.at[first, "dx"] != "vasc" else "nv"
    _write_metadata(ham_copy, meta)
    with pytest.raises(DataError, match=f"lesion {lesion} has conflicting labels"):
        build_manifest(DataConfig(path=str(ham_copy)))


def test_missing_images_give_count_and_first_ids(ham_copy):
    meta = _metadata(ham_copy)
    gone = meta["image_id"].iloc[:7].tolist()
    for image_id in gone:
        next(ham_copy.rglob(f"{image_id}.jpg")).unlink()
    with pytest.raises(DataError, match=r"7 x image listed but not found.*and 2 more") as err:
        build_manifest(DataConfig(path=str(ham_copy)))
    assert gone[0] in str(err.value)


def test_undecodable_file_is_found_by_verify_and_dropped_by_drop_bad(ham_copy, tmp_path):
    bad_id = _metadata(ham_copy)["image_id"].iloc[3]
    next(ham_copy.rglob(f"{bad_id}.jpg")).write_bytes(b"not a jpeg at all")
    build_manifest(DataConfig(path=str(ham_copy)))  # without --verify it is not decoded
    with pytest.raises(DataError, match=f"cannot decode.*{bad_id}"):
        build_manifest(DataConfig(path=str(ham_copy)), verify=True)
    result = prepare(DataConfig(path=str(ham_copy)), tmp_path / "run", verify=True, drop_bad=True)
    assert bad_id not in set(result.manifest["image_id"])
    assert pd.read_csv(tmp_path / "run" / "dropped.csv")["image_id"].tolist() == [bad_id]


def test_cli_prepare_exits_non_zero_with_a_message_and_writes_nothing(ham_copy, tmp_path, capsys):
    meta = _metadata(ham_copy)
    meta.loc[0, "dx"] = "??"
    _write_metadata(ham_copy, meta)
    code = main(["prepare", "--data", str(ham_copy), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "unknown label '??'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "manifest.csv").exists()


def test_cli_prepare_says_which_format_it_chose(synth_dir, tmp_path, capsys):
    assert main(["prepare", "--data", str(synth_dir), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "format: ham10000" in out
    assert (tmp_path / "run" / "manifest.csv").is_file()
    assert not list((tmp_path / "run").glob(".*.tmp"))
