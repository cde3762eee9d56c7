"""Price estimates, computed before a job is sent, from the public prices in ``pricing.yaml``.

Every estimate states its basis (the formula with the numbers put in) so a user can check it by
hand; an unknown price is said to be unknown, never silently zero.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, Field

from ..errors import ConfigError
from ..models import CircuitInfo

if TYPE_CHECKING:
    from ..backends.base import Backend

PRICING_FILE = Path(__file__).with_name("pricing.yaml")

#: Gates that act on two qubits, by their Qiskit names (for IonQ's gate-shot prices).
TWO_QUBIT_GATES = frozenset(
    [
        "cx",
        "cy",
        "cz",
        "ch",
        "swap",
        "iswap",
        "dcx",
        "ecr",
        "rxx",
        "ryy",
        "rzz",
        "rzx",
        "crx",
        "cry",
        "crz",
        "cp",
        "cu",
        "cu1",
        "cu3",
        "csx",
        "ms",
        "xx",
        "yy",
        "zz",
        "xx_plus_yy",
        "xx_minus_yy",
        "cs",
        "csdg",
    ]
)
#: Gates on three or more qubits, counted as six two-qubit gates each (a Toffoli's cost).
MULTI_QUBIT_GATES = frozenset(
    ["ccx", "ccz", "cswap", "rccx", "rc3x", "c3x", "c3sx", "c4x", "mcx", "mcp"]
)
#: Instructions that are not gates (no gate-shot charge).
NON_GATES = frozenset(["measure", "barrier", "reset", "delay", "id"])


class Estimate(BaseModel):
    """What a job is expected to cost, and why."""

    backend: str
    usd: float | None = Field(description="estimated price in US dollars; None when unknown")
    basis: str = Field(description="how the number was reached, with the prices used")
    breakdown: dict[str, float] = Field(
        default_factory=dict, description="the parts of the price, in USD"
    )
    shots: int
    circuits: int
    free: bool = False
    source: str | None = Field(default=None, description="where the prices come from")
    as_of: str | None = Field(default=None, description="when the prices were read")


class PricingTable:
    """The rules of a pricing file; the first whose pattern matches a backend prices it."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        rules = data.get("rules")
        if not isinstance(rules, list):
            raise ConfigError(f"pricing file {path}: 'rules' must be a list")
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or not isinstance(rule.get("match"), list):
                raise ConfigError(f"pricing file {path}: rule {i} needs a 'match' list")
            if rule.get("model") not in _MODELS:
                raise ConfigError(
                    f"pricing file {path}: rule {i} has unknown model {rule.get('model')!r} "
                    f"(one of {', '.join(sorted(_MODELS))})"
                )
        self.rules: list[dict[str, Any]] = rules
        self.source = str(data.get("source") or "").strip() or None
        self.as_of = str(data["as_of"]) if data.get("as_of") else None

    def rule_for(self, *names: str) -> dict[str, Any] | None:
        keys = [n.lower() for n in names if n]
        for rule in self.rules:
            if any(fnmatch.fnmatchcase(k, p.lower()) for p in rule["match"] for k in keys):
                return rule
        return None


@functools.cache
def _load(path: str, mtime: float) -> PricingTable:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read pricing file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"pricing file {path} must be a mapping")
    return PricingTable(data, Path(path))


def load_pricing(path: str | os.PathLike[str] | None = None) -> PricingTable:
    """The pricing table: ``path``, else ``QMLOPS_PRICING_FILE``, else the shipped file."""
    chosen = Path(path or os.environ.get("QMLOPS_PRICING_FILE") or PRICING_FILE)
    try:
        mtime = chosen.stat().st_mtime
    except OSError:
        raise ConfigError(f"pricing file {chosen} does not exist") from None
    return _load(str(chosen), mtime)


def estimate(
    backend: Backend, circuits: Sequence[CircuitInfo], shots: int, table: PricingTable | None = None
) -> Estimate:
    """Price ``circuits`` x ``shots`` on ``backend``: free for local simulators, else by the
    first pricing rule matching its name (or Braket device ARN)."""
    table = table or load_pricing()
    caps = backend.capabilities
    base = {
        "backend": backend.name,
        "shots": shots,
        "circuits": len(circuits),
        "source": table.source,
        "as_of": table.as_of,
    }
    rule = table.rule_for(backend.name, str(getattr(backend, "arn", "") or ""))
    if rule is None and caps.simulator and caps.local:
        return Estimate(
            **base, usd=0.0, free=True, basis=f"{backend.name} is a local simulator: free"
        )
    if rule is None:
        return Estimate(
            **base,
            usd=None,
            basis=f"no public price known for {backend.name} (add a rule to pricing.yaml)",
        )
    usd, basis, breakdown = _MODELS[rule["model"]](rule, circuits, shots)
    label = rule.get("label") or backend.name
    return Estimate(
        **base,
        usd=round(usd, 6),
        free=usd == 0,
        basis=f"{basis} ({label})",
        breakdown={k: round(v, 6) for k, v in breakdown.items()},
    )


def _money(x: float) -> str:
    if x == 0:
        return "$0"
    if abs(x) >= 0.01 and round(x, 2) == x:
        return f"${x:,.2f}"
    return f"${x:,.6f}".rstrip("0")


def _free(rule: dict[str, Any], circuits: Sequence[CircuitInfo], shots: int) -> tuple:
    return 0.0, "free", {}


def _task_shot(rule: dict[str, Any], circuits: Sequence[CircuitInfo], shots: int) -> tuple:
    tasks = len(circuits)
    per_task, per_shot = float(rule.get("per_task", 0)), float(rule.get("per_shot", 0))
    task_part, shot_part = tasks * per_task, tasks * shots * per_shot
    basis = (
        f"{tasks} task(s) x {_money(per_task)} + {tasks * shots} shots x {_money(per_shot)}"
        f" = {_money(round(task_part + shot_part, 6))}"
    )
    return task_part + shot_part, basis, {"tasks": task_part, "shots": shot_part}


def _task_minutes(rule: dict[str, Any], circuits: Sequence[CircuitInfo], shots: int) -> tuple:
    tasks = len(circuits)
    per_minute = float(rule["per_minute"])
    minimum = float(rule.get("min_seconds", 0))
    per_task_seconds = max(minimum, shots * float(rule.get("seconds_per_shot", 0)))
    seconds = tasks * per_task_seconds
    usd = seconds / 60 * per_minute
    basis = (
        f"{tasks} task(s) x {per_task_seconds:g} s estimated (at least {minimum:g} s each)"
        f" = {seconds:g} s x {_money(per_minute)}/min = {_money(round(usd, 6))}"
    )
    return usd, basis, {"simulator_seconds": seconds, "simulator_time": usd}


def gate_split(info: CircuitInfo) -> tuple[int, int]:
    """(one-qubit gates, two-qubit gates) of a circuit, for IonQ's gate-shot prices."""
    one = two = 0
    for gate, n in info.gate_counts.items():
        name = gate.lower()
        if name in NON_GATES:
            continue
        if name in MULTI_QUBIT_GATES:
            two += 6 * n
        elif name in TWO_QUBIT_GATES:
            two += n
        else:
            one += n
    return one, two


def _gate_shot(rule: dict[str, Any], circuits: Sequence[CircuitInfo], shots: int) -> tuple:
    p1, p2 = float(rule["per_1q_gate_shot"]), float(rule["per_2q_gate_shot"])
    minimum = float(rule.get("min_per_circuit", 0))
    total = raised = 0.0
    ones = twos = 0
    for info in circuits:
        one, two = gate_split(info)
        ones, twos = ones + one, twos + two
        price = shots * (one * p1 + two * p2)
        if price < minimum:
            raised += minimum - price
            price = minimum
        total += price
    basis = (
        f"{shots} shots x ({ones} 1q gates x {_money(p1)} + {twos} 2q gates x {_money(p2)})"
        f" over {len(circuits)} circuit(s), at least {_money(minimum)} per circuit"
        f" = {_money(round(total, 6))}"
    )
    gates = total - raised
    return total, basis, {"gate_shots": gates, "minimum_top_up": raised}


def _qpu_seconds(rule: dict[str, Any], circuits: Sequence[CircuitInfo], shots: int) -> tuple:
    per_second = float(rule["per_second"])
    per_job = float(rule.get("per_job_seconds", 0))
    per_shot = float(rule.get("seconds_per_shot", 0))
    seconds = per_job + len(circuits) * shots * per_shot
    usd = seconds * per_second
    basis = (
        f"{per_job:g} s + {len(circuits)} circuit(s) x {shots} shots x {per_shot:g} s"
        f" = {math.ceil(seconds * 1000) / 1000:g} s of QPU usage estimated x {_money(per_second)}/s"
        f" = {_money(round(usd, 6))}"
    )
    return usd, basis, {"qpu_seconds": seconds, "usage": usd}


_MODELS = {
    "free": _free,
    "task_shot": _task_shot,
    "task_minutes": _task_minutes,
    "gate_shot": _gate_shot,
    "qpu_seconds": _qpu_seconds,
}
