"""bench/machine_peak.py: the fp32 peak is derived from cores, clock and the vector flags."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import machine_peak  # pylint: disable=wrong-import-position

_CPUINFO = """processor\t: 0
model name\t: Some CPU
cpu MHz\t\t: {mhz}
flags\t\t: fpu sse sse2 {flags}

processor\t: 1
cpu MHz\t\t: 999.0
flags\t\t: fpu
"""


@pytest.mark.parametrize("flags,lanes,flop_per_cycle", [
    ("avx avx2 fma", 8, 32),
    ("avx avx2 fma avx512f", 16, 64),
    ("avx avx2", 8, 16),
    ("ssse3", 4, 4),
])
def test_peak_from_flags(flags, lanes, flop_per_cycle):
  peak = machine_peak.parse_cpuinfo(_CPUINFO.format(mhz="2450.0", flags=flags), cores=2)
  assert peak.lanes == lanes
  assert peak.flop_per_cycle == flop_per_cycle
  assert peak.gflops == pytest.approx(2 * 2.45 * flop_per_cycle)
  assert f"{peak.gflops:.0f} GFLOP/s" in peak.describe()


@pytest.mark.parametrize("vendor,family,flop_per_cycle", [
    ("AuthenticAMD", 25, 32),   # Zen 4: AVX-512 on 256-bit pipes
    ("AuthenticAMD", 26, 64),   # Zen 5: 512-bit pipes
    ("GenuineIntel", 6, 64),
])
def test_avx512_on_half_width_pipes(vendor, family, flop_per_cycle):
  text = (f"vendor_id\t: {vendor}\ncpu family\t: {family}\n"
          + _CPUINFO.format(mhz="2600.0", flags="avx avx2 fma avx512f"))
  peak = machine_peak.parse_cpuinfo(text, cores=2)
  assert peak.lanes == 16 and peak.flop_per_cycle == flop_per_cycle
  assert peak.gflops == pytest.approx(2 * 2.6 * flop_per_cycle)
  assert ("256-bit pipes" in peak.describe()) == (flop_per_cycle == 32)


def test_first_processor_wins_and_missing_clock_is_refused():
  peak = machine_peak.parse_cpuinfo(_CPUINFO.format(mhz="3000.0", flags="avx2 fma"), cores=4,
                                    fma_units=1)
  assert peak.clock_ghz == pytest.approx(3.0) and peak.flop_per_cycle == 16
  with pytest.raises(ValueError, match="cpu MHz"):
    machine_peak.parse_cpuinfo("flags\t: avx2 fma\n", cores=1)
