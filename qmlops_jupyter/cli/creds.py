"""``qmlops creds``: store, list, delete and test the vault's credentials.

Secrets are read from a hidden prompt, or from stdin when it is not a terminal
(``echo KEY | qmlops creds set ionq --provider ionq``); never from the command line, where they
would end up in the shell history and in ``ps``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from ..errors import (
    InvalidRequest,
)
from .main import _client, _json_out, _table, handle_errors

if TYPE_CHECKING:
    from ..vault.store import ProviderSpec

REFUSED = (
    "secrets are never taken from the command line (shell history, ps); type them at the "
    "hidden prompt or pipe them: echo KEY | qmlops creds set ALIAS --provider P"
)


@click.group()
def creds() -> None:
    """Provider credentials, stored encrypted and used by alias (submit --credential ALIAS)."""


@creds.command("set", context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.argument("alias")
@click.option(
    "--provider",
    "-p",
    required=True,
    help="ibm (token; channel, instance), aws (keys; region) or ionq (api_key).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A non-secret setting: channel or instance (ibm), region (aws). Repeatable.",
)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def set_(alias: str, provider: str, settings: Sequence[str], extra: Sequence[str]) -> None:
    """Store (or replace) credential ALIAS; secrets come from a hidden prompt or stdin.

    On stdin, a provider with one secret (ionq) takes the whole input as the key; otherwise give
    one NAME=VALUE per line (aws_access_key_id=..., aws_secret_access_key=...).
    """
    from ..vault import provider_spec

    if extra:
        raise InvalidRequest(REFUSED)
    spec = provider_spec(provider)
    values: dict[str, str] = {}
    for item in settings:
        name, sep, value = item.partition("=")
        name = name.strip()
        if name in spec.secrets:
            raise InvalidRequest(REFUSED)
        if not sep or name not in spec.settings:
            allowed = ", ".join(spec.settings) or "none"
            raise InvalidRequest(
                f"--set takes NAME=VALUE with NAME one of the {spec.name} settings ({allowed})"
            )
        values[name] = value.strip()
    values.update(_read_secrets(spec))
    info = _client().vault.set(alias, spec.name, values)
    click.echo(f"stored credential {info.alias} ({info.provider}, {info.hint})")


def _read_secrets(spec: ProviderSpec) -> dict[str, str]:
    stdin = sys.stdin
    if stdin is not None and stdin.isatty():
        values = {}
        for name in spec.secrets:
            required = name in spec.required
            value = click.prompt(
                name + ("" if required else " (optional, Enter to skip)"),
                hide_input=True,
                default=None if required else "",
                show_default=False,
                err=True,
            )
            if value:
                values[name] = value.strip()
        return values
    text = stdin.read() if stdin is not None else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pairs = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() in spec.fields:
            pairs[name.strip()] = value.strip()
    if pairs and len(pairs) == len(lines):
        return pairs
    if len(spec.secrets) == 1 and len(lines) == 1:
        return {spec.secrets[0]: lines[0]}
    if not lines:
        raise InvalidRequest("no secret on stdin")
    raise InvalidRequest(
        f"stdin for a {spec.name} credential: one NAME=VALUE per line, NAME one of "
        f"{', '.join(spec.fields)}"
    )


@creds.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_(as_json: bool) -> None:
    """Your credentials: alias, provider, dates and a masked hint (never the secret)."""
    infos = _client().vault.list()
    if as_json:
        _json_out([i.model_dump(mode="json") for i in infos])
        return
    if not infos:
        click.echo("no credentials yet: qmlops creds set ALIAS --provider ibm|aws|ionq")
        return
    rows = [["ALIAS", "PROVIDER", "CREATED", "LAST USED", "HINT"]]
    for i in infos:
        used = i.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if i.last_used_at else "never"
        rows.append([i.alias, i.provider, i.created_at.strftime("%Y-%m-%d %H:%M:%S"), used, i.hint])
    _table(rows)


@creds.command("delete")
@click.argument("alias")
@handle_errors
def delete_(alias: str) -> None:
    """Delete credential ALIAS."""
    _client().vault.delete(alias)
    click.echo(f"deleted credential {alias}")


@creds.command("rotate")
@handle_errors
def rotate_() -> None:
    """Re-encrypt all your credentials with the newest key (the first of QMLOPS_CRYPT_KEY)."""
    count = _client().vault.rotate()
    click.echo(f"re-encrypted {count} credential(s) with the newest key")


@creds.command("test")
@click.argument("alias")
@click.option(
    "--backend",
    default=None,
    help="For ionq: the backend whose api_url to ask (default ionq:simulator).",
)
@handle_errors
def test_(alias: str, backend: str | None) -> None:
    """Check credential ALIAS with its provider (a few seconds at most)."""
    from ..vault.check import check_credential

    message = check_credential(_client(), alias, backend)
    click.echo(f"credential {alias} works: {message}")
