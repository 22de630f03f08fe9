"""benchmarks/bench_student_step.py: operator names land in the right groups, and a profiled step's shares add up."""

from __future__ import annotations

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_student_step", folder="benchmarks")


@pytest.mark.parametrize(("name", "group"), [
    ("## Call CompiledFxGraph fsc3ewxq ##", "fused kernels"),
    ("aten::convolution_backward", "convolution backward"),
    ("aten::mkldnn_convolution", "convolution forward"),
    ("aten::_upsample_bilinear2d_aa", "resize"),
    ("aten::copy_", "copies"),
    ("aten::lerp_", "other"),
])
def test_operator_names_map_to_their_group(bench, name, group):
    assert bench.op_group(name).startswith(group)


def test_an_eager_step_of_the_cpu_student_resizes_its_view_and_convolves(bench):
    step = bench.recipe_step("cpu", batch=4, overrides={"train.compile": False})
    shares = bench.self_time_shares(step, steps=1)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert shares["resize (view -> student input)"] > 0  # 160 px views shrunk to 128 px inside the step
    assert "fused kernels (torch.compile: BatchNorm, SiLU, elementwise)" not in shares  # nothing compiled
    assert shares["convolution backward (oneDNN)"] > 0 and shares["convolution forward (oneDNN)"] > 0


def test_input_sizes_add_baseline_batch_variants_that_train_at_that_size(bench):
    steps = bench.variants("cpu", batch_sizes=[8], baseline_batch=8, input_sizes=[64])
    assert list(steps) == ["batch 8, fp32", "batch 8, bf16 autocast", "batch 8, 64 px input"]
    assert steps["batch 8, 64 px input"][0] == 8
    sizes = []
    step = bench.recipe_step("cpu", batch=2, overrides={"data.image_size": 64, "train.compile": False})
    step.module.model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[-1]))
    step()
    assert sizes == [64]  # the 160 px view shrunk to 64 px, not to the recipe's 128
