import pytest

from kndnet.classes import CLASS_CODES, MELANOMA_INDEX, normalise_label
from kndnet.config import config_from_dict, load_config, parse_set_options, recipe_differences, save_config


def test_class_order_is_alphabetical_as_the_method_indexes():
    assert CLASS_CODES == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert MELANOMA_INDEX == 4


@pytest.mark.parametrize("raw", ["mel", "MEL", " Melanoma ", "melanoma"])
def test_labels_normalise_from_code_name_or_isic_column(raw):
    assert normalise_label(raw) == "mel"


def test_unknown_label_is_none():
    assert normalise_label("melanomaa") is None


def test_role_recipes_are_the_method_defaults():
    teacher = load_config(role="teacher")
    assert (teacher.model.arch, teacher.train.lr, teacher.train.epochs) == ("efficientnet_b4", 1e-4, 25)
    assert teacher.model.freeze_fraction == 0.2
    kd = load_config(role="distill")
    assert (kd.train.lr, kd.train.epochs, kd.train.grad_clip, kd.train.sampler) == (5e-4, 60, 5.0, "random")
    assert (kd.distill.temperature, kd.distill.alpha, kd.distill.threshold) == (2.0, 0.9, 0.65)


def test_yaml_then_overrides_win_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("role: distill\ntrain:\n  lr: 0.01\n  epochs: 7\ndata:\n  image_size: 128\n")
    cfg = load_config(path, {"train.epochs": "3", "train.channels_last": "false", "data.folds": None})
    assert cfg.role == "distill"
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.channels_last) == (0.01, 3, False)
    assert cfg.data.image_size == 128 and cfg.data.folds == 5


def test_config_round_trips_through_a_dict():
    cfg = load_config(role="teacher", overrides={"data.image_size": 160})
    assert config_from_dict(cfg.to_dict()) == cfg


def test_unknown_key_names_the_key_and_lists_known_ones():
    with pytest.raises(ValueError, match="train.lrr.*known keys"):
        load_config(overrides={"train.lrr": 1})


def test_bad_value_names_key_and_value():
    with pytest.raises(ValueError, match="train.epochs.*'many'"):
        load_config(overrides={"train.epochs": "many"})


def test_set_options_need_key_value():
    assert parse_set_options(["train.lr=1e-3"]) == {"train.lr": "1e-3"}
    with pytest.raises(ValueError, match="key=value"):
        parse_set_options(["train.lr"])


def test_a_value_outside_its_choices_is_refused():
    with pytest.raises(ValueError, match="train.sampler.*'balance'"):
        load_config(overrides={"train.sampler": "balance"})


def test_recipe_differences_ignore_operational_keys_and_keys_newer_than_the_run():
    cfg = load_config(role="student")
    saved = cfg.to_dict()
    del saved["data"]["train_views"]  # written before the key existed: read as its default
    saved["data"]["num_workers"] = 7   # how it ran, not what it trained
    assert recipe_differences(saved, cfg) == []
    saved["train"]["lr"] = 0.5
    assert recipe_differences(saved, cfg) == ["train.lr: 0.5 -> 0.001"]


def test_a_saved_run_config_reads_back_as_a_flat_config_not_a_recipe(tmp_path):
    """Regression: its `distill` section made a saved config.yaml look like a pipeline recipe, so
    `--config run/config.yaml` failed with 'unknown recipe section(s) data, model, role, train'."""
    cfg = load_config(role="distill", overrides={"distill.temperature": 3.0, "train.lr": 0.02, "data.image_size": 48})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert load_config(tmp_path / "config.yaml", role="distill") == cfg
