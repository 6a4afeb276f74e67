"""This machine's fp32 peak FLOP rate, derived from its cores, clock and vector width.

peak = cores x clock x (fp32 lanes per vector x 2 for a fused multiply-add x FMA units per core)

Read from Linux's /proc/cpuinfo: the number of logical CPUs JAX can use (``os.sched_getaffinity``),
the clock (``cpu MHz``, the nominal/current clock the kernel reports) and the instruction-set
flags (``avx512f``: 16 fp32 lanes, ``avx2``: 8, otherwise SSE: 4; ``fma``: fused multiply-add).
Two FMA pipes per core is assumed for AVX2/AVX-512 x86 cores (Zen 2-5, Skylake-SP and later);
``--fma_units`` overrides it. AMD's family 25 (Zen 3 and Zen 4; only Zen 4 has AVX-512) runs a
512-bit instruction on its two 256-bit halves, so its FMA pipes still do 8 fp32 lanes per cycle
each (A. J. Yee, "Zen5's AVX512 Teardown", numberworld.org, 2024: Zen 4 "double-pumps" 512-bit
instructions into the 256-bit hardware of Zen 3; Zen 5 widened it). Returns the derivation as
text so that every figure printed with it says how it was obtained.

  python bench/machine_peak.py
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Peak:
  cores: int
  clock_ghz: float
  lanes: int          # fp32 lanes per vector register
  fma: bool
  fma_units: int
  isa: str
  datapath_lanes: int = 0  # fp32 lanes an FMA pipe does per cycle, when fewer than ``lanes``

  @property
  def pipe_lanes(self) -> int:
    return min(self.lanes, self.datapath_lanes or self.lanes)

  @property
  def flop_per_cycle(self) -> int:
    return self.pipe_lanes * (2 if self.fma else 1) * self.fma_units

  @property
  def gflops(self) -> float:
    return self.cores * self.clock_ghz * self.flop_per_cycle

  def describe(self) -> str:
    fma = "2 (FMA)" if self.fma else "1 (no FMA)"
    lanes = f"{self.lanes} fp32 lanes"
    if self.pipe_lanes < self.lanes:
      lanes = f"{self.pipe_lanes} fp32 lanes per cycle ({32 * self.pipe_lanes}-bit pipes)"
    return (f"{self.cores} cores x {self.clock_ghz:.2f} GHz x {self.flop_per_cycle} FLOP/cycle "
            f"({self.isa}: {lanes} x {fma} x {self.fma_units} FMA units) "
            f"= {self.gflops:.0f} GFLOP/s fp32 peak")


def parse_cpuinfo(text: str, cores: int, fma_units: int = 2) -> Peak:
  """The peak from /proc/cpuinfo's text (first processor's clock and flags)."""
  mhz, flags, vendor, family = None, set(), None, None
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "cpu MHz" and mhz is None:
      mhz = float(value)
    elif key == "vendor_id" and vendor is None:
      vendor = value.strip()
    elif key == "cpu family" and family is None:
      family = int(value)
    elif key == "flags" and not flags:
      flags = set(value.split())
  if mhz is None:
    raise ValueError("/proc/cpuinfo has no 'cpu MHz' line: pass the clock explicitly")
  if "avx512f" in flags:
    isa, lanes = "AVX-512", 16
  elif "avx2" in flags or "avx" in flags:
    isa, lanes = "AVX2" if "avx2" in flags else "AVX", 8
  else:
    isa, lanes = "SSE", 4
  has_fma = "fma" in flags
  half_pumped = vendor == "AuthenticAMD" and family == 25 and lanes == 16  # Zen 4
  return Peak(cores=cores, clock_ghz=mhz / 1000.0, lanes=lanes, fma=has_fma,
              fma_units=fma_units if lanes >= 8 else 1, isa=isa,
              datapath_lanes=8 if half_pumped else 0)


def machine_peak(fma_units: int = 2) -> Peak:
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    text = f.read()
  return parse_cpuinfo(text, len(os.sched_getaffinity(0)), fma_units)


if __name__ == "__main__":
  print(machine_peak().describe())
