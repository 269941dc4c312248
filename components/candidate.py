"""A candidate as measured: the record the gate, the report and the registry read of every model a run built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from components.benchmark import Latency, Resolution
from components.export import Artifact
from components.gate import GateView
from components.metrics import Scores
from components.timing import DeviceFacts


class Measurement(BaseModel):
    """One exported model measured through ONNX Runtime: its scores on val (what every choice is made on) and on
    test (reported only), its latency under the device profile, and the artifact that was measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val: Scores
    test: Scores
    latency: Latency  # on `gate.target`: what the gate judges
    artifact: Artifact
    targets: dict[str, Latency] = {}  # on every target by name, `host` included

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
