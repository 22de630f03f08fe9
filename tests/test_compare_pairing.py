"""`kndnet compare` pairs evaluations by the images they scored, not by the path of their data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kndnet.classes import CLASS_CODES
from kndnet.cli import main


def _evaluation(folder: Path, data: str, ids: list[str], seed: int) -> Path:
    """A hand-made evaluation folder: metrics.json and predictions.csv, as `kndnet evaluate` writes them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(7), size=len(ids))
    labels = [CLASS_CODES[i % 7] for i in range(len(ids))]
    table = pd.DataFrame({"image_id": ids, "true_label": labels,
                          "predicted_label": [CLASS_CODES[k] for k in probs.argmax(1)]})
    for k, code in enumerate(CLASS_CODES):
        table[f"prob_{code}"] = probs[:, k]
    table.to_csv(folder / "predictions.csv", index=False)
    metrics = {"data": data, "split": "test", "images": len(ids), "melanoma_sensitivity": 0.5, "ece": 0.1,
               "roc_auc_macro": 0.8}
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        metrics.update({name: 0.5, f"{name}_ci_low": 0.4, f"{name}_ci_high": 0.6})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


IDS = [f"ISIC_{i:07d}" for i in range(40)]


def test_a_copied_manifest_pairs_with_its_original(tmp_path, capsys):
    a = _evaluation(tmp_path / "a", "runs/v3/manifest.csv", IDS, seed=0)
    b = _evaluation(tmp_path / "b", "runs/v6/manifest.csv", IDS, seed=1)
    assert main(["compare", str(a), str(b), "--names", "x,y", "--out", str(tmp_path / "c")]) == 0
    assert "| model minus x |" in (tmp_path / "c" / "comparison.md").read_text()


def test_other_images_of_the_same_count_are_refused_by_id(tmp_path, capsys):
    a = _evaluation(tmp_path / "a", "same.csv", IDS, seed=0)
    b = _evaluation(tmp_path / "b", "same.csv", IDS[:-1] + ["ISIC_9999999"], seed=1)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c")]) == 2
    assert "scored different images" in capsys.readouterr().err
    assert not (tmp_path / "c" / "comparison.md").exists()
