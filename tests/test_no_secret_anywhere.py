"""No secret anywhere: credentials for every provider are stored, jobs run (one through a
stored IonQ key on the loopback IonQ emulator, one failing on a refused key, one on IBM's local
testing mode under an IBM credential), and every CLI command is run with and without --json
at DEBUG level with JSON logs, as real processes. Every byte of output, every log line, every
file under QMLOPS_HOME (the SQLite ledger and its WAL included) and every job record is searched
for each secret in plain, base64 and URL-encoded form: there must be no hit.

IBM and AWS cannot be reached from here: their `creds test` exercises the decrypt-and-call path
up to the network error, which must not carry the secret either."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from qmlops_testing import BELL_QASM2

from qmlops_jupyter.testing.ionq_emulator import start_emulator

IONQ_KEY = "sk-ionq-sweep-7f3a9c2e4b1d"
IONQ_WRONG = "sk-ionq-sweep-refused-55aa11"
IBM_TOKEN = "ibm-sweep-token-0a1b2c3d4e5f6789"
AWS_ID = "AKIASWEEPTEST0000042"
AWS_SECRET = "wJalrSweepSecretKey/K7MDENG+bPxRfiCY"
AWS_SESSION = "FwoGZXIvYXdzEXAMPLEsessionTOKEN0042"
SECRETS = [IONQ_KEY, IONQ_WRONG, IBM_TOKEN, AWS_ID, AWS_SECRET, AWS_SESSION]


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [
        raw,
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        urllib.parse.quote(secret, safe="").encode(),
        urllib.parse.quote_plus(secret).encode(),
    ]


def hits(data: bytes) -> list[str]:
    return [s for s in SECRETS if any(f in data for f in forms(s))]


@pytest.fixture
def sweep_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QMLOPS_", "IONQ_", "QISKIT_IBM_", "AWS_"))
    }
    env.update(
        {
            "QMLOPS_HOME": str(home),
            "QMLOPS_LOG_FORMAT": "json",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }
    )
    return env


def test_no_secret_in_any_output_log_file_or_record(
    sweep_env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(sweep_env["QMLOPS_HOME"])
    home.mkdir(parents=True)
    qasm = tmp_path / "bell.qasm"
    qasm.write_text(BELL_QASM2)
    transcript: list[bytes] = []

    def qmlops(*args: str, stdin: str | None = None, ok: bool | None = True) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "qmlops_jupyter.cli", "--log-level", "DEBUG", *args],
            input=stdin.encode() if stdin is not None else None,
            env=sweep_env,
            capture_output=True,
            timeout=180,
        )
        out = done.stdout + done.stderr
        # The command line is the test's own (one is a refused secret): only output counts.
        transcript.append(out)
        if ok is True:
            assert done.returncode == 0, out.decode()[-2000:]
        elif ok is False:
            assert done.returncode != 0, out.decode()[-2000:]
        return done.stdout

    with start_emulator(tmp_path / "ionq", queue_seconds=0.2, api_key=IONQ_KEY) as emu:
        (home / "backends.yaml").write_text(
            "backends:\n  aer: {}\n"
            f"  ionq:simulator:\n    options: {{api_url: '{emu.url}', timeout: 5}}\n",
            encoding="utf-8",
        )
        qmlops("creds", "set", "ionq", "--provider", "ionq", stdin=IONQ_KEY + "\n")
        qmlops("creds", "set", "ionq-old", "--provider", "ionq", stdin=IONQ_WRONG + "\n")
        qmlops(
            "creds",
            "set",
            "ibm-main",
            "--provider",
            "ibm",
            stdin=f"token={IBM_TOKEN}\nchannel=ibm_quantum_platform\ninstance=crn:sweep\n",
        )
        qmlops(
            "creds",
            "set",
            "aws-lab",
            "--provider",
            "aws",
            stdin=f"aws_access_key_id={AWS_ID}\naws_secret_access_key={AWS_SECRET}\n"
            f"aws_session_token={AWS_SESSION}\nregion=us-east-1\n",
        )
        # A secret on the command line is refused (and must not be echoed back).
        qmlops("creds", "set", "x", "--provider", "ionq", IONQ_KEY, ok=False)
        for as_json in ([], ["--json"]):
            qmlops("creds", "list", *as_json)
            qmlops("backends", *as_json)
            qmlops("budget", "show", *as_json)
            qmlops(
                "estimate", str(qasm), "--backend", "ionq:qpu.aria-1", "--shots", "100", *as_json
            )
        qmlops("creds", "test", "ionq")
        qmlops("creds", "test", "ionq-old", ok=False)
        qmlops("creds", "test", "ibm-main", ok=False)
        qmlops("creds", "test", "aws-lab", ok=False)
        good = json.loads(
            qmlops(
                "submit",
                str(qasm),
                "--backend",
                "ionq:simulator",
                "--credential",
                "ionq",
                "--shots",
                "50",
                "--wait",
                "--json",
            )
        )
        assert good["state"] == "COMPLETED", good
        qmlops(
            "submit",
            str(qasm),
            "--backend",
            "ionq:simulator",
            "--credential",
            "ionq",
            "--shots",
            "50",
            "--wait",
        )
        bad = qmlops(
            "submit",
            str(qasm),
            "--backend",
            "ionq:simulator",
            "--credential",
            "ionq-old",
            "--shots",
            "50",
            "--wait",
            "--json",
            ok=False,
        )
        ibm = json.loads(
            qmlops(
                "submit",
                str(qasm),
                "--backend",
                "ibm:fake_manila",
                "--credential",
                "ibm-main",
                "--shots",
                "50",
                "--seed",
                "3",
                "--wait",
                "--json",
            )
        )
        assert ibm["state"] == "COMPLETED", ibm
        for as_json in ([], ["--json"]):
            qmlops("jobs", *as_json)
            for job_id in (good["id"], ibm["id"]):
                qmlops("show", job_id, "--events", "--qasm", *as_json)
        failed = json.loads(qmlops("jobs", "--state", "FAILED", "--json"))
        assert len(failed) == 1 and failed[0]["error_kind"] == "auth", bad
        qmlops("show", failed[0]["id"], "--events")
        qmlops("wait", failed[0]["id"], "--json", ok=False)
        qmlops("creds", "delete", "ionq-old")
        # Tracking (on by default): every completed job is in the embedded MLflow store.
        qmlops("runs", "--sync")
        runs = json.loads(qmlops("runs", "--json"))
        logged = {j for r in runs for j in r["job_ids"]}
        assert {good["id"], ibm["id"]} <= logged, runs
        (ionq_run,) = [r for r in runs if r["job_ids"] == [good["id"]]]
        assert ionq_run["provider_job_ids"] == [good["provider_job_id"]]

    # Every param, tag, metric and artifact of every run, read back through MLflow.
    from mlflow.tracking import MlflowClient

    ml = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    all_runs = ml.search_runs([e.experiment_id for e in ml.search_experiments()])
    assert len(all_runs) >= 3
    for run in all_runs:
        record = json.dumps(
            [run.data.params, run.data.tags, run.data.metrics, run.info.to_proto().__str__()]
        ).encode()
        assert not hits(record), run.info.run_id
    artifacts = [p for p in (home / "mlflow" / "artifacts").rglob("*") if p.is_file()]
    assert {p.suffix for p in artifacts} >= {".qasm", ".json", ".png"}

    # Output and logs of every command.
    for entry in transcript:
        assert not hits(entry), entry.decode(errors="replace")[-3000:]
    assert len(transcript) > 30
    # Every file the toolkit wrote: ledger, WAL, config (the key file holds the vault key, not
    # a provider secret, and is checked like the rest).
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".sqlite") for p in files)
    for path in files:
        assert not hits(path.read_bytes()), path
