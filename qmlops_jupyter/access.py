"""Who may do what to whose jobs, credentials, runs and budgets: the roles of a team's
deployment, read from the caller's JupyterHub scopes.

The hub defines three custom scopes (``jupyterhub/jupyterhub_config.py``) and three roles made of
them; the ``qmlops`` service reads the scopes of the token a request carries (its owner's
permissions intersected with what the token was issued for) and enforces them:

=====================  =======================================================================
``custom:qmlops:read``   read jobs, runs, pipelines, budgets; filtered ``!user=NAME`` to the users
                         whose work may be read (``!user`` on a role means the holder's own)
``custom:qmlops:write``  submit and cancel jobs, keep credentials, set budgets, save pipelines,
                         always as oneself (``!user``)
``custom:qmlops:admin``  read every user's jobs, runs and budgets; cancel anyone's job; set
                         anyone's budget (each such act is audited); never anyone's secrets
=====================  =======================================================================

Roles: **user** = read + write of one's own; **viewer** = read of the users it is granted, no
write (so no submission and no credentials at all); **admin** = user + admin.

No import of Jupyter here: the service's authorizer is a thin shell on :class:`Access`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

READ = "custom:qmlops:read"
WRITE = "custom:qmlops:write"
ADMIN = "custom:qmlops:admin"

#: Every scope a server's token may carry for the service (the hub gives each token the part
#: its owner holds): what ``c.Spawner.server_token_scopes`` lists besides the hub's own.
SERVICE_SCOPES = (READ, WRITE, ADMIN)


@dataclass(frozen=True)
class Access:
    """What one caller may do. ``readable`` is None when every owner's work may be read."""

    user: str
    write: bool = False
    admin: bool = False
    readable: frozenset[str] | None = field(default_factory=frozenset)

    @classmethod
    def single_user(cls, owner: str) -> Access:
        """A single-user server's owner: everything of their own, nobody else's."""
        return cls(owner, write=True, readable=frozenset({owner}))

    @classmethod
    def from_scopes(cls, user: str, scopes: Iterable[str]) -> Access:
        """Read a hub user's (expanded) scopes. A filter other than ``!user=`` (a group, a
        server) grants nothing here: the hub resolves groups into users when it expands a
        role's scopes for a user, but not in a token's filters."""
        admin = write = read_all = False
        readable: set[str] = set()
        for scope in scopes:
            base, _, where = scope.partition("!")
            if base == ADMIN and not where:
                admin = True
            elif base == WRITE and where in ("", f"user={user}"):
                write = True
            elif base == READ:
                if not where:
                    read_all = True
                elif where.startswith("user="):
                    readable.add(where.removeprefix("user="))
        if write:
            readable.add(user)
        everyone = admin or read_all
        return cls(
            user, write=write, admin=admin, readable=None if everyone else frozenset(readable)
        )

    @property
    def role(self) -> str:
        if self.admin:
            return "admin"
        return "user" if self.write else "viewer"

    def can_read(self, owner: str) -> bool:
        return self.readable is None or owner in self.readable

    def owners(self) -> list[str] | None:
        """The owners a listing covers (None: all), own first."""
        if self.readable is None:
            return None
        return sorted(self.readable, key=lambda o: (o != self.user, o))

    def can_change(self, owner: str) -> bool:
        """Cancel a job of ``owner``, or set ``owner``'s budget."""
        return self.admin or (self.write and owner == self.user)
