"""The credential vault on real SQLite and PostgreSQL: encryption at rest, key rotation, keys
that fail closed, the key file's mode, owners kept apart, and secrets masked in logs and stored
errors."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.errors import CredentialNotFound, InvalidRequest, VaultError
from qmlops_jupyter.ledger import Ledger
from qmlops_jupyter.vault import Vault, redact
from qmlops_jupyter.vault import redaction as redact_module

SECRET = "sk-ionq-vault-test-4b1d9e7c0a9f2"
IBM_TOKEN = "ibm-token-9a8b7c6d5e4f3a2b1c0d"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [
        raw,
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        urllib.parse.quote(secret, safe="").encode(),
        raw.hex().encode(),
    ]


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMLOPS_CRYPT_KEY", raising=False)


@pytest.fixture
def vault_of(ledger_url: str, tmp_path: Path, no_env_key: None) -> Iterator:
    ledgers: list[Ledger] = []

    def make(owner: str = "alice") -> Vault:
        led = Ledger.open(ledger_url)
        ledgers.append(led)
        return Vault(led, tmp_path / "home", owner)

    yield make
    for led in ledgers:
        led.close()


def raw_rows(vault: Vault) -> list[dict]:
    with vault.ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM credentials"))]


def test_set_get_list_delete_per_owner(vault_of) -> None:
    alice, bob = vault_of("alice"), vault_of("bob")
    info = alice.set("ionq", "ionq", {"api_key": SECRET})
    assert info.alias == "ionq" and info.provider == "ionq"
    assert info.hint == "…" + SECRET[-4:]
    alice.set("ibm-main", "ibm", {"token": IBM_TOKEN, "channel": "ibm_quantum_platform"})
    assert alice.get("ionq").fields == {"api_key": SECRET}
    assert SECRET not in repr(alice.get("ionq")) and SECRET not in str(alice.get("ionq"))
    assert [c.alias for c in alice.list()] == ["ibm-main", "ionq"]
    assert all(SECRET not in c.model_dump_json() for c in alice.list())
    # Another owner sees nothing of alice's and may use the same alias.
    assert bob.list() == []
    with pytest.raises(CredentialNotFound):
        bob.get("ionq")
    bob.set("ionq", "ionq", {"api_key": "sk-bob-0000000000000"})
    assert alice.get("ionq").fields["api_key"] == SECRET
    # Replacing keeps created_at and changes the secret.
    before = alice.info("ionq")
    alice.set("ionq", "ionq", {"api_key": SECRET + "x"})
    after = alice.info("ionq")
    assert after.created_at == before.created_at and after.hint == "…" + (SECRET + "x")[-4:]
    # resolve records the use and checks the provider.
    assert alice.info("ionq").last_used_at is None
    assert alice.resolve("ionq", "ionq") == {"api_key": SECRET + "x"}
    assert alice.info("ionq").last_used_at is not None
    with pytest.raises(InvalidRequest, match="is for ionq, not ibm"):
        alice.resolve("ionq", "ibm")
    alice.delete("ionq")
    with pytest.raises(CredentialNotFound, match="no credential named 'ionq'; yours: ibm-main"):
        alice.get("ionq")
    with pytest.raises(CredentialNotFound):
        alice.delete("ionq")
    assert [c.alias for c in bob.list()] == ["ionq"]


def test_bad_input_is_refused_before_anything_is_stored(vault_of) -> None:
    v = vault_of()
    with pytest.raises(InvalidRequest, match="unknown provider"):
        v.set("x", "dwave", {"api_key": SECRET})
    with pytest.raises(InvalidRequest, match="needs aws_secret_access_key"):
        v.set("aws-lab", "aws", {"aws_access_key_id": "AKIAEXAMPLE1234"})
    with pytest.raises(InvalidRequest, match="has no field"):
        v.set("ionq", "ionq", {"api_key": SECRET, "token": "x"})
    with pytest.raises(InvalidRequest, match="bad credential alias"):
        v.set("no spaces", "ionq", {"api_key": SECRET})
    assert v.list() == []
    # Every provider's fields round-trip.
    v.set(
        "aws-lab",
        "braket",
        {
            "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key": AWS_SECRET,
            "region": "us-west-1",
        },
    )
    assert v.get("aws-lab").provider == "aws"
    assert v.get("aws-lab").fields["region"] == "us-west-1"


def test_database_holds_ciphertext_only(vault_of, ledger_url: str, tmp_path: Path) -> None:
    v = vault_of()
    v.set("ionq", "ionq", {"api_key": SECRET})
    v.set("ibm-main", "ibm", {"token": IBM_TOKEN, "instance": "crn:v1:inst"})
    v.set(
        "aws-lab",
        "aws",
        {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": AWS_SECRET},
    )
    for row in raw_rows(v):
        blob = json.dumps({k: str(val) for k, val in row.items()}).encode()
        blob += bytes(row["ciphertext"])
        for secret in (SECRET, IBM_TOKEN, AWS_SECRET):
            for form in forms(secret):
                assert form not in blob
    if ledger_url.startswith("sqlite"):
        db = Path(ledger_url.removeprefix("sqlite:///"))
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert any(p.name.endswith("-wal") for p in files)  # the WAL is checked too
        for path in files:
            data = path.read_bytes()
            for secret in (SECRET, IBM_TOKEN, AWS_SECRET):
                for form in forms(secret):
                    assert form not in data, f"{form!r} found in {path.name}"


def test_key_rotation_new_then_old(vault_of, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", old)
    v = vault_of()
    v.set("ionq", "ionq", {"api_key": SECRET})
    v.set("ibm-main", "ibm", {"token": IBM_TOKEN})

    def token_of(alias: str) -> bytes:
        return bytes(next(r["ciphertext"] for r in raw_rows(v) if r["alias"] == alias))

    monkeypatch.setenv("QMLOPS_CRYPT_KEY", f"{new};{old}")
    assert v.get("ionq").fields["api_key"] == SECRET  # old rows still decrypt
    with pytest.raises(InvalidToken):
        Fernet(new.encode()).decrypt(token_of("ionq"))
    v.set("ionq", "ionq", {"api_key": SECRET})  # a write re-encrypts with the new key
    assert json.loads(Fernet(new.encode()).decrypt(token_of("ionq")))["api_key"] == SECRET
    with pytest.raises(InvalidToken):
        Fernet(new.encode()).decrypt(token_of("ibm-main"))
    assert v.rotate() == 2  # the rest, all at once
    Fernet(new.encode()).decrypt(token_of("ibm-main"))
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", new)  # the old key can go now
    assert v.get("ibm-main").fields["token"] == IBM_TOKEN


def test_wrong_or_missing_key_fails_closed(vault_of, monkeypatch: pytest.MonkeyPatch) -> None:
    right, wrong = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", right)
    v = vault_of()
    v.set("ionq", "ionq", {"api_key": SECRET})
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", wrong)
    with pytest.raises(VaultError) as caught:
        v.get("ionq")
    message = str(caught.value)
    assert "cannot decrypt credential 'ionq'" in message and "QMLOPS_CRYPT_KEY" in message
    assert wrong not in message and right not in message and "\n" not in message
    assert caught.value.exit_code == 6
    with pytest.raises(VaultError):
        v.rotate()  # nothing re-encrypted under a key that cannot read the rows
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", "not-a-key")
    with pytest.raises(VaultError, match="key 1 is not a Fernet key"):
        v.get("ionq")
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", f"{right};garbage")
    with pytest.raises(VaultError, match="key 2 is not a Fernet key"):
        v.get("ionq")
    # Listing needs no key and decrypts nothing.
    assert [c.alias for c in v.list()] == ["ionq"]
    # No variable and no key file: a clear message, not a new key.
    monkeypatch.delenv("QMLOPS_CRYPT_KEY")
    with pytest.raises(VaultError, match="no vault key"):
        v.get("ionq")
    assert not (v.home / "vault.key").exists()


def test_key_file_is_made_private_and_checked(vault_of) -> None:
    v = vault_of()
    v.set("ionq", "ionq", {"api_key": SECRET})
    path = v.home / "vault.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(path.read_bytes().strip())  # a real Fernet key
    assert v.get("ionq").fields["api_key"] == SECRET
    path.chmod(0o644)
    with pytest.raises(VaultError, match=r"can be read by others.*chmod 600"):
        v.get("ionq")
    path.chmod(0o600)
    # A different key file: a wrong key, refused clearly.
    path.write_bytes(Fernet.generate_key() + b"\n")
    with pytest.raises(VaultError, match="not the one it was stored with"):
        v.get("ionq")


def test_logging_filter_masks_known_secrets(
    no_env_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qmlops_jupyter.logs import configure_logging

    secret = "sk-logfilter-7f3e2d1c0b9a"
    redact_module.register(secret)
    for fmt in ("text", "json"):
        configure_logging(fmt, "DEBUG")
        logger = logging.getLogger("qmlops_jupyter")
        handler = logger.handlers[0]
        stream = io.StringIO()
        handler.setStream(stream)
        child = logging.getLogger("qmlops_jupyter.backends.ionq")
        child.info("sending key %s to %s", secret, "https://api.ionq.co")
        child.warning("header Authorization: apiKey " + secret)
        child.info("in a URL: %s", "https://x/?key=" + urllib.parse.quote(secret, safe=""))
        child.info("extra field", extra={"actor": secret})
        try:
            raise RuntimeError(f"provider echoed {secret}")
        except RuntimeError:
            child.exception("failed")
        out = stream.getvalue()
        assert secret not in out and urllib.parse.quote(secret, safe="") not in out
        assert out.count("***") >= (5 if fmt == "json" else 4), out
        assert "https://api.ionq.co" in out and "RuntimeError" in out
    configure_logging("text", "WARNING")


def test_redact_covers_encodings() -> None:
    secret = "AbC+/=secret-value-12345"
    redact_module.register(secret)
    for text in (
        secret,
        repr(secret.encode()),
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
    ):
        assert secret not in redact(f"x {text} y") and "***" in redact(f"x {text} y")
    assert redact("nothing to hide") == "nothing to hide"


def test_client_submit_checks_the_alias_before_recording(
    home: Path, no_env_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qmlops_testing import BELL_QASM2

    client = Client(Settings.from_env(home=home))
    try:
        with pytest.raises(CredentialNotFound):
            client.submit(BELL_QASM2, backend="ionq:simulator", credential="nope")
        client.vault.set("ibm-main", "ibm", {"token": IBM_TOKEN})
        with pytest.raises(InvalidRequest, match="needs a ionq credential"):
            client.submit(BELL_QASM2, backend="ionq:simulator", credential="ibm-main")
        with pytest.raises(InvalidRequest, match="takes no credential"):
            client.submit(BELL_QASM2, backend="aer", credential="ibm-main")
        assert client.jobs() == []
    finally:
        client.ledger.close()


def test_stored_job_errors_are_redacted(home: Path, no_env_key: None) -> None:
    """An error text that carries a known secret is masked before it reaches the ledger."""
    from qmlops_testing import BELL_QASM2

    from qmlops_jupyter.states import JobState

    secret = "sk-driver-error-5e6f7a8b9c"
    redact_module.register(secret)
    client = Client(Settings.from_env(home=home))
    try:
        job = client.submit(BELL_QASM2, backend="aer", shots=10)
        [record] = client.ledger.claim(client.driver.holder, 30.0, job_id=job.id)
        client.driver._end(record, JobState.FAILED, f"provider said: bad key {secret}", "auth")
        stored = client.ledger.get_job(job.id)
        assert stored.state is JobState.FAILED
        assert secret not in (stored.error or "") and "***" in (stored.error or "")
        assert all(secret not in (e.message or "") for e in client.ledger.events(job.id))
    finally:
        client.ledger.close()


def test_no_secret_in_environment_leaks_into_redaction_list_unless_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IONQ_API_KEY", "sk-env-key-0011223344")
    redact_module.register_environment()
    assert redact("key sk-env-key-0011223344") == "key ***"
    redact_module.register("abc")  # too short to be a secret: never masked
    assert redact("abc") == "abc"
    assert os.environ["IONQ_API_KEY"]


def test_adapters_take_the_stored_credential_only_when_a_job_names_it(
    home: Path, no_env_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IonQ's key, IBM's token/channel/instance and Braket's AWS session come from the vault
    for a job whose options name the alias (and the owner, as the engine passes it)."""
    from qmlops_jupyter.backends.braket import BraketBackend
    from qmlops_jupyter.backends.ibm import IBMBackend
    from qmlops_jupyter.backends.ionq import IonQBackend
    from qmlops_jupyter.config import BackendConfig

    for var in ("IONQ_API_KEY", "QISKIT_IBM_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    client = Client(Settings.from_env(home=home, owner="carol"))
    try:
        vault = client.vault
        vault.set("ionq", "ionq", {"api_key": SECRET})
        vault.set(
            "ibm-main", "ibm", {"token": IBM_TOKEN, "channel": "ibm_cloud", "instance": "crn:x"}
        )
        vault.set(
            "aws-lab",
            "aws",
            {
                "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "aws_secret_access_key": AWS_SECRET,
                "region": "eu-west-2",
            },
        )
        # As the engine's driver passes them: the alias, the owner and the owner's vault.
        job = {"credential": "ionq", "owner": "carol", "job_id": "j1", "vault": vault}

        def built(backend):  # as the client's registry builds backends
            backend.vault_source = lambda: vault
            return backend

        ionq = built(IonQBackend("ionq:simulator", BackendConfig(), device="simulator"))
        assert ionq._api_key(job) == SECRET
        assert ionq.credential_status() == "configured"  # from the vault; no IONQ_API_KEY
        from qmlops_jupyter.errors import AuthProviderError

        with pytest.raises(AuthProviderError):
            ionq._api_key({})  # no alias, no variable
        with pytest.raises(AuthProviderError, match="'ionq' cannot be used: no credential named"):
            ionq._api_key({"credential": "ionq", "vault": vault.for_owner("someone-else")})

        seen: dict = {}

        class CapturingIBM(IBMBackend):
            service_factory = staticmethod(lambda **kw: seen.update(kw) or object())

        ibm = built(CapturingIBM("ibm:ibm_test", BackendConfig(), device="ibm_test"))
        assert ibm.credential_status() == "configured"
        ibm._runtime({"credential": "ibm-main", "owner": "carol", "vault": vault})
        assert (seen["token"], seen["channel"], seen["instance"]) == (
            IBM_TOKEN,
            "ibm_cloud",
            "crn:x",
        )
        assert IBM_TOKEN not in ibm._clean(f"HTTP 401 for token {IBM_TOKEN}")

        braket = built(BraketBackend("braket:sv1", BackendConfig(), device="sv1"))
        assert braket.credential_status() == "configured"
        session = braket.session({"credential": "aws-lab", "owner": "carol", "vault": vault})
        creds = session.boto_session.get_credentials()
        assert creds.access_key == "AKIAIOSFODNN7EXAMPLE" and creds.secret_key == AWS_SECRET
        assert session.boto_session.region_name == "eu-west-2"
        with pytest.raises(AuthProviderError, match="is for aws, not ibm"):
            ibm._runtime({"credential": "aws-lab", "owner": "carol", "vault": vault})
        monkeypatch.setenv("QMLOPS_CRYPT_KEY", Fernet.generate_key().decode())
        with pytest.raises(AuthProviderError, match="cannot decrypt"):  # fails closed
            ionq._api_key(job)
        assert vault.info("aws-lab").last_used_at is not None
    finally:
        client.ledger.close()


def test_an_engine_resolves_each_owners_alias_in_that_owners_vault(vault_of) -> None:
    """One engine serves several owners: the driver hands each job's adapter its owner's vault,
    so two owners' same-named credentials never mix (nor do the adapters' per-alias caches)."""
    from qmlops_jupyter.backends import BackendRegistry
    from qmlops_jupyter.config import BackendsFile
    from qmlops_jupyter.engine import Driver
    from qmlops_jupyter.models import JobRecord
    from qmlops_jupyter.vault import credential_fields

    alice, bob = vault_of("alice"), vault_of("bob")
    alice.set("ionq", "ionq", {"api_key": "alice-key-0123456789"})
    bob.set("ionq", "ionq", {"api_key": "bob-key-9876543210ab"})
    driver = Driver(alice.ledger, BackendRegistry(BackendsFile()), "engine-1", vault=alice)
    now = alice.clock()
    for owner, key in (("alice", "alice-key-0123456789"), ("bob", "bob-key-9876543210ab")):
        job = JobRecord(
            id=f"job-{owner}",
            owner=owner,
            backend="ionq:simulator",
            state="QUEUED",
            shots=10,
            created_at=now,
            updated_at=now,
            options={"credential": "ionq"},
        )
        options = driver._options(job)
        assert options["owner"] == owner
        assert credential_fields(options, "ionq") == {"api_key": key}
