"""Roles read from hub scopes (:mod:`qmlops_jupyter.access`), the audit log written by the vault
(:mod:`qmlops_jupyter.audit`) on SQLite and PostgreSQL ledgers, and the operator's
``qmlops admin audit`` and ``qmlops admin rotate-keys`` run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from qmlops_jupyter import audit
from qmlops_jupyter.access import ADMIN, READ, WRITE, Access
from qmlops_jupyter.errors import InvalidRequest
from qmlops_jupyter.ledger import Ledger
from qmlops_jupyter.vault import Vault

SECRET = "ionq-secret-value-8c1d"


def test_a_users_scopes_make_the_user_role() -> None:
    access = Access.from_scopes("alice", [f"{READ}!user=alice", f"{WRITE}!user=alice"])
    assert access.role == "user" and access.write and not access.admin
    assert access.can_read("alice") and not access.can_read("bob")
    assert access.can_change("alice") and not access.can_change("bob")
    assert access.owners() == ["alice"]


def test_a_viewer_reads_its_grants_and_writes_nothing() -> None:
    access = Access.from_scopes(
        "carol", [f"{READ}!user=carol", f"{READ}!user=alice", "access:services!service=qmlops"]
    )
    assert access.role == "viewer" and not access.write
    assert access.can_read("alice") and not access.can_read("bob")
    assert not access.can_change("carol") and not access.can_change("alice")
    assert access.owners() == ["carol", "alice"]


def test_an_admin_reads_everyone_and_changes_anyones_work() -> None:
    access = Access.from_scopes("dave", [ADMIN, f"{READ}!user=dave", f"{WRITE}!user=dave"])
    assert access.role == "admin" and access.owners() is None
    assert access.can_read("anyone") and access.can_change("anyone")


def test_filters_that_grant_nothing() -> None:
    # Another user's write scope, a group filter, a filtered admin scope: none of them count.
    access = Access.from_scopes(
        "eve", [f"{WRITE}!user=alice", f"{READ}!group=team", f"{ADMIN}!user=eve"]
    )
    assert access.role == "viewer" and access.owners() == []
    assert not access.can_read("alice")
    assert Access.from_scopes("x", []).role == "viewer"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = Fernet.generate_key().decode()
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", value)
    return value


def test_the_vault_audits_every_credential_act(ledger: Ledger, tmp_path: Path, key: str) -> None:
    alice = Vault(ledger, tmp_path, "alice")
    alice.set("main", "ionq", {"api_key": SECRET})
    assert alice.resolve("main", "ionq")["api_key"] == SECRET
    engine_view = Vault(ledger, tmp_path, "engine-host").for_owner("alice")
    engine_view.resolve("main")
    alice.rotate()
    alice.delete("main")
    Vault(ledger, tmp_path, "bob").set("other", "ionq", {"api_key": SECRET})

    mine = audit.entries(ledger, owner="alice")
    assert [(e.actor, e.action) for e in reversed(mine)] == [
        ("user:alice", "credential.stored"),
        ("user:alice", "credential.used"),
        ("engine", "credential.used"),
        ("user:alice", "credential.rotated"),
        ("user:alice", "credential.deleted"),
    ]
    assert {e.target for e in mine if e.action != "credential.rotated"} == {"main"}
    assert len(audit.entries(ledger)) == 6
    assert [e.owner for e in audit.entries(ledger, action="credential.stored")] == [
        "bob",
        "alice",
    ]
    assert len(audit.entries(ledger, action="credential.")) == 6
    assert len(audit.entries(ledger, actor="engine")) == 1
    newest = audit.entries(ledger, limit=2)
    assert [e.id for e in audit.entries(ledger, before=newest[-1].id)] == [
        e.id for e in audit.entries(ledger)[2:]
    ]
    everything = json.dumps([e.model_dump(mode="json") for e in audit.entries(ledger)])
    assert SECRET not in everything and key not in everything
    with pytest.raises(InvalidRequest):
        audit.entries(ledger, limit=0)


def test_a_refused_credential_leaves_no_audit_entry(
    ledger: Ledger, tmp_path: Path, key: str
) -> None:
    with pytest.raises(InvalidRequest):
        Vault(ledger, tmp_path, "alice").set("main", "ionq", {"nonsense": "x"})
    with pytest.raises(Exception):  # noqa: B017 - CredentialNotFound: nothing was deleted
        Vault(ledger, tmp_path, "alice").delete("missing")
    assert audit.entries(ledger) == []


def qmlops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qmlops_jupyter.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_admin_rotate_keys_and_audit_from_the_command_line(ledger_url: str, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {"QMLOPS_HOME": str(tmp_path), "QMLOPS_DATABASE_URL": ledger_url}
    ledger = Ledger.open(ledger_url)
    try:
        os.environ["QMLOPS_CRYPT_KEY"] = old
        for owner in ("alice", "bob"):
            Vault(ledger, tmp_path, owner).set("main", "ionq", {"api_key": SECRET})
    finally:
        os.environ.pop("QMLOPS_CRYPT_KEY", None)
        ledger.close()

    rotated = qmlops({**env, "QMLOPS_CRYPT_KEY": f"{new};{old}"}, "admin", "rotate-keys")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2 credential(s) of 2 user(s)" in rotated.stdout
    # The old key alone opens nothing now; the command says so in one line, exit 6.
    refused = qmlops({**env, "QMLOPS_CRYPT_KEY": old}, "admin", "rotate-keys")
    assert refused.returncode == 6 and len(refused.stderr.strip().splitlines()) == 1
    ledger = Ledger.open(ledger_url)
    try:
        os.environ["QMLOPS_CRYPT_KEY"] = new
        assert Vault(ledger, tmp_path, "bob").resolve("main")["api_key"] == SECRET
    finally:
        os.environ.pop("QMLOPS_CRYPT_KEY", None)
        ledger.close()

    shown = qmlops(env, "admin", "audit", "--json", "--action", "credential.rotated")
    assert shown.returncode == 0, shown.stderr
    entries = json.loads(shown.stdout)
    assert {(e["actor"], e["owner"]) for e in entries} == {("admin", "alice"), ("admin", "bob")}
    table = qmlops(env, "admin", "audit", "--owner", "alice")
    assert "credential.stored" in table.stdout and "bob" not in table.stdout
    assert SECRET not in table.stdout + shown.stdout + rotated.stdout + refused.stderr
    bad = qmlops(env, "admin", "audit", "--limit", "0")
    assert bad.returncode == 2 and "limit" in bad.stderr


def test_migration_0010_adds_and_removes_the_audit_log(ledger_url: str) -> None:
    """On SQLite and PostgreSQL: head has the audit_log table; down to 0009 drops it (and
    nothing else); up again restores it, empty and writable."""
    import sqlalchemy as sa
    from alembic import command

    from qmlops_jupyter.ledger import HEAD_REVISION
    from qmlops_jupyter.ledger.migrate import alembic_config, current_revision

    ledger = Ledger.open(ledger_url)
    try:

        def tables() -> set[str]:
            with ledger.engine.connect() as conn:
                return set(sa.inspect(conn).get_table_names())

        assert current_revision(ledger) == HEAD_REVISION == "0010"
        before = tables()
        assert "audit_log" in before
        with ledger.engine.begin() as conn:
            command.downgrade(alembic_config(ledger, conn), "0009")
        assert current_revision(ledger) == "0009"
        assert tables() == before - {"audit_log"}
        with ledger.engine.begin() as conn:
            command.upgrade(alembic_config(ledger, conn), "head")
        assert current_revision(ledger) == HEAD_REVISION and tables() == before
        audit.record(ledger, actor="admin", action="credential.rotated", owner="a")
        assert [e.action for e in audit.entries(ledger)] == ["credential.rotated"]
    finally:
        ledger.close()
