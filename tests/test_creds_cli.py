"""`qmlops creds` as a user runs it: secrets from stdin or a hidden prompt and never from the
command line, masked listings, delete, `creds test` against the IonQ emulator (and a quick
"cannot reach" for the real clouds), and `submit --credential` running a job on the emulator with
the stored key while the key shows up in no output, ledger file or log."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from qmlops_testing import BELL_QASM2

from qmlops_jupyter.cli import cli
from qmlops_jupyter.client import reset_client
from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess, start_emulator

SECRET = "sk-ionq-cli-test-8c7d6e5f4a9f2"
WRONG = "sk-ionq-wrong-key-000000000"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with start_emulator(tmp_path_factory.mktemp("ionq"), api_key=SECRET) as emu:
        yield emu


@pytest.fixture
def run(home: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("IONQ_API_KEY", "QMLOPS_CRYPT_KEY", "QISKIT_IBM_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None):
        reset_client()
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def ionq_home(home: Path, emulator: EmulatorProcess) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        "backends:\n"
        "  ionq:simulator:\n"
        "    options:\n"
        f"      api_url: {emulator.url}\n"
        "      timeout: 5\n",
        encoding="utf-8",
    )
    return home


def leaks(text: str | bytes, secret: str = SECRET) -> bool:
    data = text.encode() if isinstance(text, str) else text
    raw = secret.encode()
    forms = [
        raw,
        base64.b64encode(raw).rstrip(b"="),
        urllib.parse.quote(secret, safe="").encode(),
    ]
    return any(f in data for f in forms)


def test_set_from_stdin_list_and_delete(run) -> None:
    result = run("creds", "set", "ionq", "--provider", "ionq", input=SECRET + "\n")
    assert result.exit_code == 0, result.stderr
    assert "stored credential ionq (ionq, …" + SECRET[-4:] + ")" in result.stdout
    assert not leaks(result.output)
    aws = "aws_access_key_id=AKIAIOSFODNN7EXAMPLE\naws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxR\n"
    result = run(
        "creds", "set", "aws-lab", "--provider", "aws", "--set", "region=eu-west-2", input=aws
    )
    assert result.exit_code == 0, result.stderr
    listing = run("creds", "list", "--json")
    assert listing.exit_code == 0
    rows = json.loads(listing.stdout)
    assert [r["alias"] for r in rows] == ["aws-lab", "ionq"]
    ionq = rows[1]
    assert ionq["provider"] == "ionq" and ionq["hint"] == "…" + SECRET[-4:]
    assert ionq["last_used_at"] is None and ionq["created_at"]
    assert set(ionq) >= {"alias", "provider", "hint", "created_at", "last_used_at"}
    assert rows[0]["hint"] == "…MPLE"
    assert not leaks(listing.stdout) and "wJalrXUtnFEMIK7MDENGbPxR" not in listing.stdout
    table = run("creds", "list")
    assert "ALIAS" in table.stdout and "never" in table.stdout and not leaks(table.stdout)
    deleted = run("creds", "delete", "ionq")
    assert deleted.exit_code == 0 and "deleted credential ionq" in deleted.stdout
    again = run("creds", "delete", "ionq")
    assert again.exit_code == 3 and again.stderr.startswith("qmlops: error: no credential named")
    assert [r["alias"] for r in json.loads(run("creds", "list", "--json").stdout)] == ["aws-lab"]


@pytest.mark.parametrize(
    "args",
    [
        ("--api-key", SECRET),
        (f"--api-key={SECRET}",),
        (SECRET,),
        ("--set", f"api_key={SECRET}"),
        ("--token", SECRET),
    ],
)
def test_a_secret_on_the_command_line_is_refused(run, args: tuple[str, ...]) -> None:
    result = run("creds", "set", "ionq", "--provider", "ionq", *args, input=SECRET)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("qmlops: error: secrets")
    assert not leaks(result.output)
    assert json.loads(run("creds", "list", "--json").stdout) == []


def test_bad_stdin_and_unknown_provider(run) -> None:
    empty = run("creds", "set", "ionq", "--provider", "ionq", input="")
    assert empty.exit_code == 2 and "no secret on stdin" in empty.stderr
    unknown = run("creds", "set", "x", "--provider", "dwave", input=SECRET)
    assert unknown.exit_code == 2 and "unknown provider 'dwave'" in unknown.stderr
    aws = run("creds", "set", "aws", "--provider", "aws", input="just-one-line-of-text")
    assert aws.exit_code == 2 and "NAME=VALUE" in aws.stderr


def test_creds_test_against_the_ionq_emulator(run, ionq_home: Path) -> None:
    assert run("creds", "set", "good", "-p", "ionq", input=SECRET).exit_code == 0
    assert run("creds", "set", "bad", "-p", "ionq", input=WRONG).exit_code == 0
    ok = run("creds", "test", "good")
    assert ok.exit_code == 0, ok.stderr
    assert "credential good works: IonQ at" in ok.stdout and not leaks(ok.output)
    used = {r["alias"]: r for r in json.loads(run("creds", "list", "--json").stdout)}
    assert used["good"]["last_used_at"] is not None
    bad = run("creds", "test", "bad", "--backend", "ionq:simulator")
    assert bad.exit_code == 5
    assert "IonQ refused the API key (401" in bad.stderr and bad.stderr.count("\n") == 1
    assert not leaks(bad.output, WRONG) and not leaks(bad.output)
    missing = run("creds", "test", "nope")
    assert missing.exit_code == 3


def test_creds_test_says_cannot_reach_for_real_clouds_quickly(run) -> None:
    assert (
        run("creds", "set", "ibm-main", "-p", "ibm", input="token=ibm-tok-123456789abc").exit_code
        == 0
    )
    aws = "aws_access_key_id=AKIAIOSFODNN7EXAMPLE\naws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxR\n"
    assert run("creds", "set", "aws-lab", "-p", "aws", input=aws).exit_code == 0
    for alias, secret in (
        ("ibm-main", "ibm-tok-123456789abc"),
        ("aws-lab", "wJalrXUtnFEMIK7MDENGbPxR"),
    ):
        started = time.monotonic()
        result = run("creds", "test", alias)
        elapsed = time.monotonic() - started
        assert elapsed < 20, f"{alias}: took {elapsed:.1f} s"
        assert result.exit_code == 5 and "cannot reach provider" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and secret not in result.output


def test_wrong_vault_key_fails_closed_on_the_cli(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", Fernet.generate_key().decode())
    assert run("creds", "set", "ionq", "-p", "ionq", input=SECRET).exit_code == 0
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", Fernet.generate_key().decode())
    result = run("creds", "test", "ionq")
    assert result.exit_code == 6
    assert "cannot decrypt credential 'ionq'" in result.stderr and result.stderr.count("\n") == 1


def test_submit_with_a_stored_credential_runs_on_the_emulator(
    run, ionq_home: Path, tmp_path: Path
) -> None:
    bell = tmp_path / "bell.qasm"
    bell.write_text(BELL_QASM2)
    assert run("creds", "set", "ionq", "--provider", "ionq", input=SECRET).exit_code == 0
    unknown = run("submit", str(bell), "-b", "ionq:simulator", "--credential", "nope", "--json")
    assert unknown.exit_code == 3 and "no credential named 'nope'" in unknown.stderr
    assert json.loads(run("jobs", "--json").stdout) == []  # nothing recorded
    result = run(
        "--log-level",
        "DEBUG",
        "submit",
        str(bell),
        "--backend",
        "ionq:simulator",
        "--credential",
        "ionq",
        "--shots",
        "200",
        "--wait",
        "--timeout",
        "60",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["state"] == "COMPLETED" and sum(job["result"]["counts"][0].values()) == 200
    assert not leaks(result.output)
    shown = run("show", job["id"], "--json", "--events")
    assert "ionq" in json.dumps(shown.stdout) and not leaks(shown.output)
    assert json.loads(shown.stdout)["state"] == "COMPLETED"
    for path in ionq_home.iterdir():
        if path.is_file() and path.name.startswith("ledger.sqlite"):
            assert not leaks(path.read_bytes()), path.name
    listing = json.loads(run("creds", "list", "--json").stdout)
    assert listing[0]["last_used_at"] is not None
    backends = run("backends", "--json")
    ionq = next(b for b in json.loads(backends.stdout) if b["name"] == "ionq:simulator")
    assert ionq["credentials"] == "configured"


def test_rotate_on_the_cli(run, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    import sqlalchemy as sa

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", old)
    assert run("creds", "set", "ionq", "-p", "ionq", input=SECRET).exit_code == 0
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", f"{new};{old}")
    result = run("creds", "rotate")
    assert result.exit_code == 0 and "re-encrypted 1 credential(s)" in result.stdout
    engine = sa.create_engine(f"sqlite:///{home / 'ledger.sqlite'}")
    with engine.connect() as conn:
        token = conn.execute(sa.text("SELECT ciphertext FROM credentials")).scalar()
    engine.dispose()
    assert json.loads(Fernet(new.encode()).decrypt(bytes(token)))["api_key"] == SECRET


def test_submit_with_a_refused_credential_fails_clearly(
    run, ionq_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bell = tmp_path / "bell.qasm"
    bell.write_text(BELL_QASM2)
    assert run("creds", "set", "bad", "-p", "ionq", input=WRONG).exit_code == 0
    result = run(
        "submit", str(bell), "-b", "ionq:simulator", "--credential", "bad", "--wait", "--json"
    )
    assert result.exit_code == 8
    job = json.loads(result.stdout)
    assert job["state"] == "FAILED" and job["error_kind"] == "auth"
    assert "IonQ refused the API key (401" in job["error"]
    assert not leaks(result.output, WRONG)
    # A vault key that cannot decrypt the credential: the job fails closed, saying why.
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", Fernet.generate_key().decode())
    result = run(
        "submit", str(bell), "-b", "ionq:simulator", "--credential", "bad", "--wait", "--json"
    )
    assert result.exit_code == 8
    job = json.loads(result.stdout)
    assert job["state"] == "FAILED" and "cannot decrypt credential 'bad'" in job["error"]
