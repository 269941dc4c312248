"""A candidate as measured: the record the gate, the report and the registry read of every model a run built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from components.benchmark import Latency, Resolution
from components.formats.base import Artifact
from components.formats.tflm import McuFit
from components.gate import GateView
from components.metrics import Scores
from components.timing import DeviceFacts


class OnMcu(BaseModel):
    """A full-integer LiteRT file under TensorFlow Lite Micro: its fit (arena, flash, operators) and its scores
    computed by TFLM's interpreter (None where TFLM lacks an operator it uses)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fit: McuFit
    val: Scores | None = None
    test: Scores | None = None

    def as_json(self, budgets: dict) -> dict:
        """Its fit, its scores under TFLM, and whether it fits each MCU budget (name -> TargetConfig)."""
        return self.fit.model_dump() | {
            "val": self.val.scalars() if self.val else None,
            "test": self.test.scalars() if self.test else None,
            "fits": {n: self.fits(b.ram_kb, b.flash_kb) for n, b in budgets.items()},
            "latency": "not measured",
        }

    def fits(self, ram_kb: float, flash_kb: float) -> bool:
        """Whether it runs within an MCU's RAM for the arena and flash for the model (KiB)."""
        f = self.fit
        return f.runs and f.arena_bytes / 1024 <= ram_kb and f.flash_bytes / 1024 <= flash_kb


class Measurement(BaseModel):
    """One exported model measured through its runtime: its scores on val (what every choice is made on) and on
    test (reported only), its latency under the device profile, and the artifact that was measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val: Scores
    test: Scores
    latency: Latency  # on `gate.target`: what the gate judges
    artifact: Artifact
    targets: dict[str, Latency] = {}  # on every target by name, `host` included
    mcu: OnMcu | None = None  # a full-integer LiteRT file's run under TensorFlow Lite Micro

    def view(self) -> GateView:
        """What the gate judges of it: val metrics, latency, size and energy."""
        lat = self.latency
        return GateView(
            metrics=self.val.scalars(),
            p50_ms=lat.p50_ms,
            p95_ms=lat.p95_ms,
            p95_lo_ms=lat.p95_lo_ms,
            p95_hi_ms=lat.p95_hi_ms,
            p95_series=lat.p95_series,
            p99_ms=lat.p99_ms,
            size_bytes=lat.size_bytes,
            energy_nj=lat.energy_nj,
            arena_bytes=self.mcu.fit.arena_bytes if self.mcu and self.mcu.fit.runs else None,
            flash_bytes=self.mcu.fit.flash_bytes if self.mcu and self.mcu.fit.runs else None,
        )

    def with_latency(self, latency: Latency) -> Measurement:
        """The same model with its latency measured again (the search's side-by-side remeasurement)."""
        return self.model_copy(update={"latency": latency})


class Candidates(BaseModel):
    """The models of one measurement by name, measured side by side, and what that timing can resolve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measured: dict[str, Measurement]
    resolution: Resolution  # of the timing on `gate.target`
    resolutions: dict[str, Resolution] = {}  # every target's, `host` included
    devices: dict[str, DeviceFacts] = {}  # what each device agent said it is

    def with_mcu(self, runs: dict[str, OnMcu]) -> Candidates:
        """The same candidates with the TensorFlow Lite Micro runs of those that have one."""
        measured = {n: m.model_copy(update={"mcu": runs.get(n)}) for n, m in self.measured.items()}
        return self.model_copy(update={"measured": measured})
