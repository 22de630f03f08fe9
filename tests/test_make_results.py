"""scripts/make_results.py: the hand-kept block survives a regenerated page; the page renders an ensemble run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_results.py"


def _script():
    return load_script("make_results")


def test_the_hand_kept_block_is_found_with_its_markers():
    results = _script()
    block = f"{results.KEPT_START}\n## Earlier runs\n\nrow | 0.5\n{results.KEPT_END}"
    assert results.kept_block(f"# Results\n\ngenerated\n\n{block}\n\n## Cost\n") == [block, ""]
    assert results.kept_block("# Results\n\nno block\n") == []


@pytest.mark.parametrize("broken", ["end only", "start only", "end before start", "two blocks"])
def test_a_broken_hand_kept_block_is_refused_not_dropped(broken):
    results = _script()
    start, end = results.KEPT_START, results.KEPT_END
    page = {"end only": end, "start only": f"{start}\nlost", "end before start": f"{end}\nlost\n{start}",
            "two blocks": f"{start}\na\n{end}\n{start}\nlost\n{end}"}[broken]
    with pytest.raises(SystemExit, match="hand-kept block is broken"):
        results.kept_block(page)


def test_a_page_names_only_the_recipe_its_run_used(tmp_path):
    from kndnet.config import recipe_path
    results = _script()
    (tmp_path / "recipe.yaml").write_text(recipe_path("cpu").read_text())
    results._check_recipe(tmp_path, "cpu")
    with pytest.raises(SystemExit, match="is not the recipe 'cpu_v2'"):
        results._check_recipe(tmp_path, "cpu_v2")


def test_a_recipe_kept_under_a_new_name_still_matches_its_run(tmp_path):
    """A renamed recipe gets a new header and may be rewritten as `extends:` its successor: the run it made, which
    kept it as a whole file, still names it; a changed value does not."""
    from kndnet.config import self_contained_recipe
    results = _script()
    body = "".join(line + "\n" for line in self_contained_recipe("cpu_v5").splitlines() if not line.startswith("#"))
    (tmp_path / "recipe.yaml").write_text("# the header the recipe had when it was run\n" + body)
    results._check_recipe(tmp_path, "cpu_v5")
    with pytest.raises(SystemExit, match="is not the recipe 'cpu'"):
        results._check_recipe(tmp_path, "cpu")


def test_a_run_recipe_that_no_longer_reads_stops_with_its_name(tmp_path):
    results = _script()
    (tmp_path / "recipe.yaml").write_text("student:\n  train:\n    epochz: 3\n")
    with pytest.raises(SystemExit, match="cannot compare .*recipe.yaml with the recipe 'cpu': unknown config key "
                                         "'train.epochz'"):
        results._check_recipe(tmp_path, "cpu")


def write_results_page(run: Path, recipe: Path, docs: Path) -> str:
    """Regenerate a results page from a finished `kndnet run` into DOCS, keeping DOCS/RESULTS.md's block."""
    subprocess.run([sys.executable, str(SCRIPT), str(run), "--recipe", str(recipe), "--out", str(docs)], check=True,
                   capture_output=True, text=True)
    return (docs / "RESULTS.md").read_text()


def test_a_run_without_colour_cast_evaluations_gets_no_cast_section(tmp_path):
    (tmp_path / "eval" / "teacher").mkdir(parents=True)
    assert _script()._colour_cast_section(tmp_path) == []


def test_the_student_note_names_non_default_view_strength(tmp_path):
    from kndnet.config import load_config, save_config
    results = _script()
    (tmp_path / "student").mkdir()
    save_config(load_config(role="student"), tmp_path / "student" / "config.yaml")
    assert "crops down" not in results._student_note(tmp_path, 128)
    save_config(load_config(overrides={"data.crop_scale_min": 0.35, "data.jitter_strength": 2}, role="student"),
                tmp_path / "student" / "config.yaml")
    note = results._student_note(tmp_path, 128)
    assert "crops down to 0.35 of the image" in note and "colour jitter x2" in note
