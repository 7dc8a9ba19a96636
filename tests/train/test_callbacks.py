"""Hardware facts that decide the training precision and land in budget.json."""
import pytest

pytest.importorskip("torch")

from detector.train import callbacks  # noqa: E402
from detector.train.fit import resolve_precision  # noqa: E402


@pytest.mark.parametrize("flags,cap,want", [
    ({"avx2", "avx512f", "avx512_bf16"}, None, "bf16-mixed"),
    ({"avx2", "amx_bf16"}, "AVX512_CORE_AMX", "bf16-mixed"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX2", "32-true"),     # an emulated AVX2 machine
    ({"avx2", "avx512f"}, None, "32-true"),
])
def test_auto_precision_follows_native_bf16(monkeypatch, flags, cap, want):
    monkeypatch.setattr(callbacks, "cpu_info", lambda: ("test cpu", flags))
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert resolve_precision("auto", "cpu") == want
    assert resolve_precision("32-true", "cpu") == "32-true"


def test_hardware_names_the_cpu_and_its_flags(monkeypatch):
    monkeypatch.setattr(callbacks, "cpu_info", lambda: ("test cpu", {"avx2", "amx_int8", "sse4_2"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    hw = callbacks.hardware()
    assert hw["cpu"] == "test cpu" and hw["cpu_flags"] == ["avx2", "amx_int8"]
    assert hw["onednn_isa_cap"] == "AVX2" and hw["threads"] >= 1
