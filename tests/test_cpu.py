"""Where ONNX Runtime's int8 kernels saturate (x86 without VNNI), int8 files run their reference arithmetic."""

from __future__ import annotations

import onnxruntime as ort
import pytest

import kndnet.cpu
from kndnet.cpu import exact_int8_options, has_int8_dot_product
from kndnet.inference import OnnxPredictor
from kndnet.shipped import SHIPPED_INT8

NO_VNNI, VNNI = "fpu sse avx2 avx512f", "avx2 avx512f avx512_vnni"


def _qdq_unfused(options: ort.SessionOptions) -> bool:
    try:
        return options.get_session_config_entry("session.disable_quant_qdq") == "1"
    except RuntimeError:  # never set
        return False


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    return path


@pytest.mark.parametrize("flags, expected", [(NO_VNNI, False), (VNNI, True), ("avx2 avx_vnni", True),
                                             ("avx2 amx_int8", True), ("neon asimd", True)])
def test_int8_dot_product_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    """ONNX Runtime's u8 x s8 kernels saturate on AVX2/AVX-512 CPUs without VNNI: there an int8 teacher agreed
    with fp32 on 0.90 of training images and fell back to fp32 (docs/RESULTS.md, runs/v21)."""
    assert has_int8_dot_product(_cpuinfo(tmp_path, flags)) is expected
    assert has_int8_dot_product(tmp_path / "absent") is True


@pytest.mark.parametrize("flags, fused", [(NO_VNNI, False), (VNNI, True)])
def test_qdq_fusion_is_turned_off_only_where_int8_kernels_saturate(tmp_path, flags, fused):
    assert _qdq_unfused(exact_int8_options(ort.SessionOptions(), _cpuinfo(tmp_path, flags))) is not fused


def test_the_onnx_predictor_runs_int8_files_exactly_on_a_cpu_without_vnni(monkeypatch):
    monkeypatch.setattr(kndnet.cpu, "has_int8_dot_product", lambda cpuinfo=None: False)
    assert _qdq_unfused(OnnxPredictor(SHIPPED_INT8).session.get_session_options())


def test_an_int8_teachers_check_can_ask_for_the_fused_kernels_it_will_run(monkeypatch):
    monkeypatch.setattr(kndnet.cpu, "has_int8_dot_product", lambda cpuinfo=None: False)
    assert not _qdq_unfused(OnnxPredictor(SHIPPED_INT8, exact_int8=False).session.get_session_options())
