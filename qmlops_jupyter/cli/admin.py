"""``qmlops admin``: operator commands for a team's ledger — back it up, restore a backup into an
empty database, upgrade its schema (docs/operations.md).

Every command takes ``--database-url``; without it, the ledger every other command uses
(``QMLOPS_DATABASE_URL``, else the SQLite file in ``QMLOPS_HOME``). A URL's password is never
printed. New operator commands join the group here with ``@admin.command()`` (or
``admin.add_command(...)`` from their own module).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from .main import _json_out, _table, handle_errors

database_url_option = click.option(
    "--database-url",
    metavar="URL",
    default=None,
    help="The ledger's database (default: QMLOPS_DATABASE_URL, else the SQLite ledger in "
    "QMLOPS_HOME).",
)


def resolve_database_url(database_url: str | None) -> str:
    """``database_url``, or the ledger the other commands use; its password is registered so
    that no error line can show it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ..config import Settings
    from ..vault.redaction import register

    url = database_url or Settings.from_env().database_url
    with contextlib.suppress(ArgumentError):  # reported, without the URL, by the command
        register(make_url(url).password)
    return url


@click.group()
def admin() -> None:
    """Operator commands for a team's ledger: backup, restore, schema upgrades, the audit
    log."""


@admin.command()
@click.argument("file", type=click.Path(path_type=Path))
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def backup(file: Path, database_url: str | None, as_json: bool) -> None:
    """Write every row of the ledger to FILE (gzip'd JSON lines, mode 0600), read in one
    consistent snapshot; FILE is replaced atomically. Credentials stay encrypted; the vault key
    (QMLOPS_CRYPT_KEY or QMLOPS_HOME/vault.key) is not in it: keep it separately."""
    from ..ledger.backup import backup as write_backup

    summary = write_backup(resolve_database_url(database_url), file)
    if as_json:
        _json_out(summary.model_dump(mode="json"))
        return
    click.echo(f"backed up {summary.database} (schema {summary.revision})")
    click.echo(f"to        {summary.path}  ({_size(summary.bytes)}, mode 0600)")
    _counts(summary.tables, summary.rows)


@admin.command()
@click.argument("file", type=click.Path(path_type=Path))
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def restore(file: Path, database_url: str | None, as_json: bool) -> None:
    """Load the backup FILE into an empty ledger (a new database, or one with the schema and no
    rows), then upgrade it to the newest schema. All or nothing: a ledger that has rows, or a
    damaged file, is refused and nothing is written."""
    from ..ledger.backup import restore as load_backup

    summary = load_backup(file, resolve_database_url(database_url))
    if as_json:
        _json_out(summary.model_dump(mode="json"))
        return
    written = summary.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    click.echo(f"restored  {summary.path}  (schema {summary.revision}, written {written})")
    click.echo(f"into      {summary.database}  (schema now {summary.schema_revision})")
    _counts(summary.tables, summary.rows)


@admin.command()
@database_url_option
@click.option(
    "--check",
    is_flag=True,
    help="Only say whether an upgrade is pending: exit 1 if it is, 0 if the ledger is current.",
)
@handle_errors
def migrate(database_url: str | None, check: bool) -> None:
    """Upgrade the ledger to the newest schema (creating it in an empty database). Stop the
    services using the ledger and back it up first."""
    from ..ledger.backup import schema_status, upgrade_schema

    url = resolve_database_url(database_url)
    if check:
        status = schema_status(url)
        click.echo(f"ledger    {status.database}")
        click.echo(f"current   {status.current or 'none (no ledger schema yet)'}")
        click.echo(f"head      {status.head}")
        if status.pending:
            click.echo("an upgrade is pending: run 'qmlops admin migrate'")
            sys.exit(1)
        click.echo("the ledger is up to date")
        return
    before, after = upgrade_schema(url)
    if before == after:
        click.echo(f"the ledger is up to date (schema {after})")
    elif before is None:
        click.echo(f"created the ledger schema (schema {after})")
    else:
        click.echo(f"upgraded the ledger from schema {before} to {after}")


@admin.command()
@database_url_option
@click.option("--owner", metavar="USER", default=None, help="Entries about USER's things only.")
@click.option("--actor", metavar="WHO", default=None, help="Entries of one actor (user:alice).")
@click.option(
    "--action",
    metavar="ACTION",
    default=None,
    help="One action (credential.used), or a family ending in a dot (admin.).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@handle_errors
def audit(
    database_url: str | None,
    owner: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit log, newest first: who used, stored, deleted or rotated a credential, and what
    admins did to other users' jobs and budgets (never a secret)."""
    from .. import audit as audit_log
    from ..ledger import Ledger

    ledger = Ledger.open(resolve_database_url(database_url))
    try:
        found = audit_log.entries(ledger, owner=owner, actor=actor, action=action, limit=limit)
    finally:
        ledger.close()
    if as_json:
        _json_out([e.model_dump(mode="json") for e in found])
        return
    if not found:
        click.echo("no audit entries")
        return
    rows = [["WHEN", "ACTOR", "ACTION", "OWNER", "TARGET"]]
    for e in found:
        at = e.at.strftime("%Y-%m-%d %H:%M:%S")
        rows.append([at, e.actor, e.action, e.owner, e.target or "-"])
    _table(rows)


@admin.command("rotate-keys")
@database_url_option
@handle_errors
def rotate_keys(database_url: str | None) -> None:
    """Re-encrypt every user's credentials with the newest key of QMLOPS_CRYPT_KEY ("new;old"):
    run it after putting a new key first, then drop the old one (each user's rotation is
    audited). A credential no key opens stops the command, naming it, before anything of that
    user is changed."""
    from sqlalchemy import distinct, select

    from ..config import Settings
    from ..ledger import Ledger
    from ..vault import Vault
    from ..vault.store import credentials

    home = Settings.from_env().home
    ledger = Ledger.open(resolve_database_url(database_url))
    try:
        with ledger._read() as conn:
            owners = sorted(conn.execute(select(distinct(credentials.c.owner))).scalars())
        total = 0
        for owner in owners:
            count = Vault(ledger, home, owner, actor="admin").rotate()
            click.echo(f"{owner}: {count} credential(s) re-encrypted")
            total += count
    finally:
        ledger.close()
    click.echo(f"re-encrypted {total} credential(s) of {len(owners)} user(s) with the newest key")


def _counts(tables: dict[str, int], total: int) -> None:
    rows = [["TABLE", "ROWS"], *([name, str(n)] for name, n in tables.items())]
    rows.append(["total", str(total)])
    _table(rows)


def _size(count: int) -> str:
    value: float = count
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"
