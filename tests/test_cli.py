"""The `qmlops` CLI as a user runs it: output, JSON fields, exit codes, and bad input answered
with a one-line error and nothing half-written in the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from qmlops_testing import BELL_QASM2, BELL_QASM3

from qmlops_jupyter.cli import cli
from qmlops_jupyter.client import reset_client

JOB_FIELDS = {
    "id",
    "name",
    "backend",
    "state",
    "shots",
    "created_at",
    "updated_at",
    "provider_job_id",
    "error",
    "circuits",
    "result",
}


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None):
        reset_client()
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def bell(tmp_path: Path) -> Path:
    path = tmp_path / "bell.qasm"
    path.write_text(BELL_QASM2)
    return path


def job_count(home: Path) -> int:
    db = home / "ledger.sqlite"
    if not db.exists():
        return 0
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        counts = [
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("jobs", "job_events", "job_payloads", "job_results")
        ]
    engine.dispose()
    assert len(set(counts[:3])) == 1 or counts[0] > 0  # never a job without its rows
    return counts[0]


def test_submit_wait_json_has_the_documented_fields(run, bell: Path) -> None:
    result = run("submit", str(bell), "--wait", "--json", "--seed", "7", "--name", "bell")
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert set(job) >= JOB_FIELDS
    assert job["state"] == "COMPLETED" and job["name"] == "bell" and job["shots"] == 1024
    assert job["circuits"][0]["num_qubits"] == 2 and job["circuits"][0]["depth"] >= 2
    counts = job["result"]["counts"]
    assert len(counts) == 1 and set(counts[0]) <= {"00", "11"}
    assert sum(counts[0].values()) == 1024


def test_several_files_and_stdin_make_one_job(run, bell: Path, tmp_path: Path) -> None:
    q3 = tmp_path / "bell3.qasm"
    q3.write_text(BELL_QASM3)
    result = run(
        "submit", str(bell), str(q3), "-", "--wait", "--json", "--shots", "100", input=BELL_QASM2
    )
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert [c["source_format"] for c in job["circuits"]] == ["qasm2", "qasm3", "qasm2"]
    assert len(job["result"]["counts"]) == 3


def test_submit_without_wait_says_what_runs_it(run, bell: Path) -> None:
    result = run("submit", str(bell))
    assert result.exit_code == 0
    job_id = result.stdout.strip()
    assert len(job_id) == 16
    assert "no engine host is running" in result.stderr and "qmlops engine" in result.stderr
    shown = run("show", job_id, "--json")
    assert json.loads(shown.stdout)["state"] == "CREATED"
    # `qmlops wait` runs it here when no engine host is alive.
    waited = run("wait", job_id, "--json")
    assert waited.exit_code == 0 and json.loads(waited.stdout)["state"] == "COMPLETED"


def test_jobs_show_and_events(run, bell: Path) -> None:
    ids = [
        json.loads(run("submit", str(bell), "--wait", "--json", "--name", f"n{i}").stdout)["id"]
        for i in range(3)
    ]
    listed = json.loads(run("jobs", "--json").stdout)
    assert [j["id"] for j in listed] == ids[::-1]  # newest first
    assert json.loads(run("jobs", "--json", "--limit", "2").stdout)[0]["id"] == ids[2]
    assert json.loads(run("jobs", "--json", "--state", "failed").stdout) == []
    table = run("jobs").stdout
    assert "COMPLETED" in table and ids[0] in table
    shown = run("show", ids[0][:6], "--events", "--qasm")
    assert shown.exit_code == 0
    assert "CREATED -> SUBMITTING" in shown.stdout and "RUNNING -> COMPLETED" in shown.stdout
    assert "OPENQASM 3.0;" in shown.stdout


def test_cancel_and_wait_exit_codes(run, bell: Path) -> None:
    job_id = run("submit", str(bell)).stdout.strip()
    cancelled = run("cancel", job_id)
    assert cancelled.exit_code == 0 and "CANCELLED" in cancelled.stdout
    waited = run("wait", job_id)
    assert waited.exit_code == 8 and "ended CANCELLED" in waited.stderr
    again = run("cancel", job_id)
    assert again.exit_code == 4 and "already CANCELLED" in again.stderr


def test_wait_timeout_exit_code(run, tmp_path: Path) -> None:
    from qiskit import qasm2
    from qmlops_testing import slow_circuits

    big = tmp_path / "slow.qasm"
    big.write_text(qasm2.dumps(slow_circuits(count=1, qubits=20, depth=60)[0]))
    result = run("submit", str(big), "--wait", "--timeout", "0.3", "--shots", "10")
    assert result.exit_code == 7 and "still RUNNING" in result.stderr


def test_backends_json(run) -> None:
    result = run("backends", "--json")
    assert result.exit_code == 0
    aer = next(b for b in json.loads(result.stdout) if b["name"] == "aer")
    assert aer["simulator"] and aer["local"] and aer["max_qubits"] == 30
    assert aer["max_shots"] == 100000 and aer["max_concurrent_jobs"] == 10
    assert "cx" in aer["native_gates"]


def test_demo_prints_results_and_the_ledger_location(run, home: Path) -> None:
    result = run("demo")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Bell pair" in out and "GHZ" in out and "QFT" in out
    assert "101: 1024 (100.0%)" in out  # the QFT round trip reads back 5
    assert str(home / "ledger.sqlite") in out
    assert job_count(home) == 3


TRUNCATED = BELL_QASM2[: BELL_QASM2.index("cx")]


@pytest.mark.parametrize(
    ("content", "args", "code", "message"),
    [
        (b"", (), 2, "empty circuit text"),
        (b"   \n\n", (), 2, "empty circuit text"),
        (bytes(range(256)) * 4, (), 2, "not OpenQASM text (binary data)"),
        (b"\xff\xfe\xfa garbage", (), 2, "not OpenQASM text (not UTF-8)"),
        (TRUNCATED.encode() + b"cx q[0],", (), 2, "invalid OpenQASM 2"),
        (
            b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\nfoo q[0];\n',
            (),
            2,
            "invalid OpenQASM 2",
        ),
        (b"OPENQASM 3.0;\nqubit[2] q;\nfrobnicate q[0];\n", (), 2, "invalid OpenQASM 3"),
        (b"OPENQASM 3.0;\nqubit[2] q;\nh q[0]", (), 2, "invalid OpenQASM 3"),
        (b"OPENQASM 4.0;\nqubit q;\n", (), 2, "unsupported OpenQASM version 4"),
        (
            b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[31];\ncreg c[31];\nh q;\n'
            b"measure q -> c;\n",
            (),
            2,
            "has 31 qubits; backend aer accepts at most 30",
        ),
        (BELL_QASM2.encode(), ("--shots", "0"), 2, "shots must be at least 1, not 0"),
        (BELL_QASM2.encode(), ("--shots", "-5"), 2, "shots must be at least 1, not -5"),
        (BELL_QASM2.encode(), ("--shots", "100001"), 2, "over the limit of 100000"),
        (BELL_QASM2.encode(), ("--backend", "nosuch"), 3, "unknown backend 'nosuch'"),
    ],
)
def test_bad_input_is_refused_cleanly(
    run, home: Path, tmp_path: Path, content: bytes, args: tuple[str, ...], code: int, message: str
) -> None:
    path = tmp_path / "input.qasm"
    path.write_bytes(content)
    result = run("submit", str(path), "--wait", *args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert result.stderr.startswith("qmlops: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert job_count(home) == 0


def test_circuit_too_large_for_memory(run, home: Path, tmp_path: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text("backends:\n  aer:\n    max_qubits: 60\n")
    path = tmp_path / "wide.qasm"
    path.write_text(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[40];\ncreg c[40];\n'
        "h q;\nt q[0];\nmeasure q -> c;\n"
    )
    result = run("submit", str(path), "--wait")
    assert result.exit_code == 2
    assert "state-vector simulation needs 16.0 TiB of memory" in result.stderr
    assert job_count(home) == 0
    # A Clifford circuit of the same width runs on Aer's stabilizer method: no memory limit.
    path.write_text(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[40];\ncreg c[40];\n'
        "h q[0];\ncx q[0],q[39];\nmeasure q -> c;\n"
    )
    ok = run("submit", str(path), "--wait", "--json", "--shots", "50")
    assert ok.exit_code == 0, ok.stderr
    counts = json.loads(ok.stdout)["result"]["counts"][0]
    assert set(counts) <= {"0" * 40, "1" + "0" * 38 + "1"}


def test_unknown_job_id_and_missing_file(run, home: Path) -> None:
    for args in (("show", "0123456789abcdef"), ("wait", "nope"), ("cancel", "nope")):
        result = run(*args)
        assert result.exit_code == 3 and "no job with id" in result.stderr
    missing = run("submit", "/no/such/file.qasm")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    assert run("jobs", "--state", "SOMETIMES").exit_code == 2


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("backends: [oops", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("backends:\n  aer:\n    max_qubits: -3\n", "backends.aer.max_qubits"),
        ("backends:\n  aer:\n    max_shotz: 10\n", "backends.aer.max_shotz"),
    ],
)
def test_malformed_backends_yaml(run, home: Path, bell: Path, yaml_text: str, message: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(yaml_text)
    result = run("submit", str(bell), "--wait")
    assert result.exit_code == 6
    assert message in result.stderr and str(home / "backends.yaml") in result.stderr
    assert result.stderr.count("\n") == 1
    assert job_count(home) == 0


def test_disabled_backend(run, home: Path, bell: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text("backends:\n  aer:\n    enabled: false\n")
    result = run("submit", str(bell))
    assert result.exit_code == 5 and "disabled" in result.stderr
    assert "disabled" in run("backends").stdout


def test_backends_file_env_var(
    run, home: Path, tmp_path: Path, bell: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("backends:\n  aer:\n    max_shots: 50\n")
    monkeypatch.setenv("QMLOPS_BACKENDS_FILE", str(other))
    result = run("submit", str(bell), "--shots", "60")
    assert result.exit_code == 2 and "over the limit of 50" in result.stderr


def test_real_process_exit_codes(home: Path, bell: Path) -> None:
    """The installed entry point, not just the click group."""
    env = {**os.environ, "QMLOPS_HOME": str(home)}
    ok = subprocess.run(
        [sys.executable, "-m", "qmlops_jupyter.cli", "submit", str(bell), "--wait", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["state"] == "COMPLETED"
    bad = subprocess.run(
        [sys.executable, "-m", "qmlops_jupyter.cli", "show", "ffffffffffff"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 3 and bad.stderr.strip().startswith("qmlops: error: no job")
