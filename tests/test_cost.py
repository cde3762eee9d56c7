"""Price estimates: hand-computed prices for a device of every provider, the basis stated,
simulators free, ``qmlops estimate``, and each job's estimated and actual cost in the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from qmlops_testing import BELL_QASM2

from qmlops_jupyter.circuits import prepare
from qmlops_jupyter.cli import cli
from qmlops_jupyter.client import Client, reset_client
from qmlops_jupyter.cost import Estimate, load_pricing
from qmlops_jupyter.cost.estimate import PRICING_FILE, gate_split
from qmlops_jupyter.errors import ConfigError
from qmlops_jupyter.states import JobState

IONQ_ARIA_ARN = "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"
RIGETTI_ARN = "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"
GARNET_ARN = "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"

#: Ten H and ten CX on two qubits: 10 one-qubit and 10 two-qubit gates.
TWENTY_GATES = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
    + "h q[0];\ncx q[0],q[1];\n" * 10
    + "measure q -> c;\n"
)


def price(client: Client, backend: str, shots: int, *circuits: str) -> Estimate:
    infos = prepare(list(circuits) or [BELL_QASM2]).infos
    return client.registry.get(backend).estimate(infos, shots)


def test_braket_qpus_cost_a_task_fee_plus_shots(client: Client) -> None:
    # IonQ Aria on Braket: 2 tasks x $0.30 + 2000 shots x $0.03 = $60.60
    est = price(client, f"braket:{IONQ_ARIA_ARN}", 1000, BELL_QASM2, BELL_QASM2)
    assert est.usd == pytest.approx(60.60)
    assert est.breakdown == {"tasks": pytest.approx(0.60), "shots": pytest.approx(60.0)}
    assert "2 task(s) x $0.30 + 2000 shots x $0.03" in est.basis
    assert "IonQ Aria on Braket" in est.basis
    assert est.source and est.as_of
    # Rigetti: $0.30 + 1000 x $0.0009 = $1.20; IQM Garnet: $0.30 + 1000 x $0.00145 = $1.75
    assert price(client, f"braket:{RIGETTI_ARN}", 1000).usd == pytest.approx(1.20)
    assert price(client, f"braket:{GARNET_ARN}", 1000).usd == pytest.approx(1.75)


def test_braket_managed_simulators_bill_minutes_with_a_minimum(client: Client) -> None:
    # SV1: 10000 shots x 1 ms = 10 s per task, $0.075/min -> 10/60 x 0.075 = $0.0125
    assert price(client, "braket:sv1", 10_000).usd == pytest.approx(0.0125)
    # A short task is billed the 3 s minimum: 3/60 x 0.075 = $0.00375; TN1 at $0.275/min
    assert price(client, "braket:sv1", 10).usd == pytest.approx(0.00375)
    assert price(client, "braket:tn1", 10).usd == pytest.approx(3 / 60 * 0.275)
    assert "at least 3 s" in price(client, "braket:dm1", 10).basis


def test_ionq_direct_prices_gate_shots_with_a_minimum(client: Client) -> None:
    # 10000 shots x (10 x $0.00022 + 10 x $0.000975) = $119.50
    est = price(client, "ionq:qpu.aria-1", 10_000, TWENTY_GATES)
    assert est.usd == pytest.approx(119.50)
    assert "10 1q gates" in est.basis and "10 2q gates" in est.basis
    # A Bell pair at 1000 shots costs $1.195 in gate-shots: raised to the $12.42 minimum
    small = price(client, "ionq:qpu.aria-1", 1000)
    assert small.usd == pytest.approx(12.42)
    assert small.breakdown["minimum_top_up"] == pytest.approx(12.42 - 1.195)


def test_ibm_prices_seconds_of_qpu_usage(client: Client) -> None:
    # 2 s + 1 circuit x 4000 shots x 0.25 ms = 3 s x $1.60 = $4.80
    est = price(client, "ibm:ibm_brisbane", 4000)
    assert est.usd == pytest.approx(4.80)
    assert est.breakdown["qpu_seconds"] == pytest.approx(3.0)
    assert "$1.60/s" in est.basis


@pytest.mark.parametrize(
    "backend",
    ["aer", "braket_local", "ibm:fake_manila", "ionq:simulator", "pennylane:default.qubit"],
)
def test_simulators_are_free(client: Client, backend: str) -> None:
    est = price(client, backend, 100_000)
    assert est.usd == 0 and est.free
    assert est.basis


def test_gate_split_counts_toffolis_as_six_two_qubit_gates() -> None:
    info = prepare(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\n'
        "x q[0];\nccx q[0],q[1],q[2];\nbarrier q;\nmeasure q -> c;\n"
    ).infos[0]
    assert gate_split(info) == (1, 6)


def test_unknown_prices_are_said_to_be_unknown(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text("rules: []\n")
    monkeypatch.setenv("QMLOPS_PRICING_FILE", str(pricing))
    est = price(client, "ibm:ibm_brisbane", 100)
    assert est.usd is None
    assert "no public price" in est.basis
    assert price(client, "aer", 100).usd == 0  # local simulators need no rule


def test_a_broken_pricing_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("rules:\n  - match: [x]\n    model: haggle\n")
    with pytest.raises(ConfigError, match="unknown model 'haggle'"):
        load_pricing(bad)
    assert load_pricing(PRICING_FILE).rules


def test_estimate_cli_text_and_json(home: Path, tmp_path: Path) -> None:
    bell = tmp_path / "bell.qasm"
    bell.write_text(BELL_QASM2)
    runner = CliRunner()
    reset_client()
    args = ["estimate", str(bell), str(bell), "--backend", f"braket:{IONQ_ARIA_ARN}"]
    out = runner.invoke(cli, [*args, "--shots", "1000", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["usd"] == pytest.approx(60.60)
    assert data["circuits"] == 2 and data["shots"] == 1000
    assert set(data) >= {"usd", "basis", "breakdown", "source", "as_of"}
    reset_client()
    text = runner.invoke(cli, ["estimate", str(bell), "--shots", "10"], catch_exceptions=False)
    assert text.exit_code == 0
    assert "estimate  $0" in text.output and "local simulator: free" in text.output
    reset_client()
    bad = runner.invoke(cli, ["estimate", str(bell), "--shots", "0"])
    assert bad.exit_code == 2


def test_jobs_record_their_estimate(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = client.submit(BELL_QASM2, shots=100, wait=True)
    assert job.record.estimated_cost_usd == 0.0
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(
        "rules:\n  - match: [aer]\n    model: task_shot\n    per_task: 0.5\n    per_shot: 0.01\n"
    )
    monkeypatch.setenv("QMLOPS_PRICING_FILE", str(pricing))
    job = client.submit(BELL_QASM2, shots=100)
    assert client.get_job(job.id).record.estimated_cost_usd == pytest.approx(1.5)
    assert client.get_job(job.id).record.actual_cost_usd is None
    assert client.get_job(job.id).to_dict()["estimated_cost_usd"] == pytest.approx(1.5)
    reset_client()
    shown = CliRunner().invoke(cli, ["show", job.id], catch_exceptions=False)
    assert "cost      estimated $1.50" in shown.output


def test_actual_cost_is_kept_when_the_provider_reports_it(client: Client) -> None:
    """The driver stores the provider's reported cost (IonQ's ``cost_usd``) on completion."""
    from qmlops_jupyter.backends.base import ProviderResult

    job = client.submit(BELL_QASM2, shots=100)
    driver, ledger = client.driver, client.ledger
    [record] = ledger.claim(driver.holder, 30.0, job_id=job.id, max_concurrent={"aer": 10})
    for old, new in [
        (JobState.CREATED, JobState.SUBMITTING),
        (JobState.SUBMITTING, JobState.RUNNING),
    ]:
        assert ledger.transition(job.id, old, new, actor="t", holder=driver.holder)
    record = ledger.get_job(job.id)
    result = ProviderResult(counts=[{"00": 100}], metadata={"cost_usd": "1.23"})
    driver._finish(record, None, result)
    assert record.actual_cost_usd == pytest.approx(1.23)  # the waiting caller's copy too
    done = client.get_job(job.id).record
    assert done.state is JobState.COMPLETED
    assert done.actual_cost_usd == pytest.approx(1.23)
    assert done.estimated_cost_usd == 0.0
