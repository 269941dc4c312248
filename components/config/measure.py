"""The measurement sections of params.yaml: the device profile every candidate's latency is measured under, and the
device agents it is measured on besides this host."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from components.config.base import Section


class TargetConfig(Section):
    """A device agent (`edgekd device serve`) to measure every candidate on, besides this host (its token comes
    from an environment variable or a file, never from params.yaml); or a microcontroller's budget (`ram_kb` and
    `flash_kb`, no `url`), which every full-integer LiteRT candidate's TFLite Micro fit is held against. An MCU is
    not timed: its latency is "not measured"."""

    url: str | None = Field(None, description="The agent's URL, e.g. https://board.local:8765.")
    token_env: str | None = Field(None, description="Environment variable holding the agent's token.")
    token_file: str | None = Field(None, description="File holding the agent's token (keep it 0600).")
    ca_file: str | None = Field(
        None, description="CA certificate that verifies an HTTPS agent (default: the system's)."
    )

    ram_kb: float | None = Field(
        None, gt=0, description="An MCU's RAM for TFLite Micro's tensor arena, KiB (e.g. 640 for a Nucleo-L4R5ZI)."
    )
    flash_kb: float | None = Field(None, gt=0, description="An MCU's flash for the model, KiB (e.g. 2048).")

    @property
    def mcu(self) -> bool:
        """Whether this is a microcontroller's budget rather than a device agent."""
        return self.url is None

    @model_validator(mode="after")
    def _one_token_source(self) -> TargetConfig:
        if self.url is None:
            if self.ram_kb is None or self.flash_kb is None or self.token_env or self.token_file or self.ca_file:
                raise ValueError(
                    "a target is either a device agent (url and a token source) or an MCU budget (ram_kb and "
                    "flash_kb, nothing else)"
                )
            return self
        if self.ram_kb is not None or self.flash_kb is not None:
            raise ValueError("a device agent (url) takes no ram_kb or flash_kb: name the MCU budget apart")
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("a target takes its token from exactly one of token_env and token_file")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"target url {self.url!r} must start with http:// or https://")
        return self


class BenchmarkConfig(Section):
    """The device profile every candidate's latency is measured under, after warm-up."""

    intra_op_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads of the device profile.")
    batch_size: int = Field(1, ge=1, description="Batch size of the device profile.")
    warmup_runs: int = Field(50, ge=0, description="Runs discarded before timing.")
    timed_runs: int = Field(500, ge=10, description="Timed runs per candidate in each round.")
    rounds: int = Field(
        10,
        ge=1,
        description="Rounds of interleaved timing: each round times every candidate once (warm-up, then the "
        "timed runs); a percentile is the median over rounds, with its exact order-statistic 95% interval (none "
        "below 6 rounds, and no difference is then measurable).",
    )
    max_extra_seconds: float = Field(
        60.0,
        ge=0,
        description="Seconds a measurement may spend adding rounds (`rounds` more each time, every model again) "
        "while a compressed candidate's paired comparison with its source is undecided (0: never add).",
    )
    max_extra_looks: int = Field(
        2,
        ge=0,
        description="Times a measurement may add rounds; the 5% chance of calling equal models different is "
        "spent across these looks.",
    )
    pin: bool = Field(True, description="Pin the timing process to `cpus` (Linux), so the OS does not move it.")
    cpus: list[int] | None = Field(
        None,
        description="CPUs the timing process is pinned to (default: the last `intra_op_threads` of those this "
        "process may use).",
    )
    targets: dict[str, TargetConfig] = Field(
        {},
        description="Device agents every candidate is also measured on, by name (`host`, this machine, always "
        "is); `gate.target` says whose numbers the gate's latency rules use.",
    )

    def agents(self) -> dict[str, TargetConfig]:
        """The device agents of `targets`, which time the candidates."""
        return {n: t for n, t in self.targets.items() if not t.mcu}

    def mcus(self) -> dict[str, TargetConfig]:
        """The microcontroller budgets of `targets`, which every TFLite Micro fit is held against."""
        return {n: t for n, t in self.targets.items() if t.mcu}

    @field_validator("targets")
    @classmethod
    def _not_host(cls, targets: dict[str, TargetConfig]) -> dict[str, TargetConfig]:
        if "host" in targets:
            raise ValueError("`host` is this machine, always measured: name the device agents otherwise")
        return targets
