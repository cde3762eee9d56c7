"""The ``qmlops`` JupyterHub service: the team's engine host, with the same REST API as the server
extension.

``python -m qmlops_jupyter.server.hub.service`` is the command the hub runs (and restarts) as a
managed service. It is a jupyter server process whose only extension is qmlops in multi-user
mode (``c.QmlopsApp.multi_user``): one engine, one ledger (PostgreSQL), the vault, budgets and
pipeline schedules for every user, running whether or not their own servers are.

- **Who is calling** (:class:`HubTokenIdentityProvider`): the token of each request
  (``Authorization: token|bearer``; a user server sends its ``JUPYTERHUB_API_TOKEN``) is
  resolved by the hub (cached briefly); a token without ``access:services!service=qmlops`` is
  nobody (403). Its scopes become the caller's :class:`~qmlops_jupyter.access.Access`.
- **What they may do** (:class:`RoleAuthorizer`): the qmlops API only (kernels, contents,
  terminals, the event bus and every other route of a jupyter server are closed to everyone);
  reads for every role (the handlers narrow them to what the role may read), writes for users
  and admins, credentials for users and admins (their own), the audit log as the handler says.

Settings come from the hub (``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_SERVICE_PREFIX``,
``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``) and from ``QMLOPS_*`` variables
(``QMLOPS_DATABASE_URL``, ``QMLOPS_HOME``, ``QMLOPS_CRYPT_KEY``, ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import IdentityProvider, User
from traitlets import Float

from ...access import Access

#: The extension a service process loads; every other installed one is switched off in it.
EXTENSION = "qmlops_jupyter"


@dataclass
class HubUser(User):
    """A hub user (or service) and what the qmlops roles let them do."""

    qmlops_access: Access | None = None


class HubTokenIdentityProvider(IdentityProvider):
    """Identify callers by their hub token (header only: no cookie, no login page)."""

    cache_max_age = Float(
        60.0,
        config=True,
        help="Seconds the hub's answer for a token is kept (a role change, or a revoked "
        "token, takes effect within this time).",
    )

    def _hub_auth(self) -> Any:
        hub_auth = getattr(self, "_hub", None)
        if hub_auth is None:
            from jupyterhub.services.auth import HubAuth

            hub_auth = self._hub = HubAuth(cache_max_age=int(self.cache_max_age))
        return hub_auth

    async def get_user(self, handler: Any) -> HubUser | None:  # type: ignore[override]
        hub_auth = self._hub_auth()
        token = hub_auth.get_token(handler, in_cookie=False)
        if not token:
            return None
        try:
            model = await hub_auth.user_for_token(token, sync=False)
        except Exception as exc:  # the hub unreachable: nobody is let in
            self.log.warning("qmlops service: the hub could not check a token: %s", exc)
            return None
        if not model or not hub_auth.check_scopes(hub_auth.access_scopes, model):
            return None
        handler._token_authenticated = True  # a header, never a cookie: no XSRF check
        name = str(model.get("name", ""))
        if model.get("kind", "user") != "user":
            return HubUser(username=f"service:{name}", name=name, qmlops_access=Access(name))
        access = Access.from_scopes(name, model.get("scopes") or [])
        return HubUser(username=name, name=name, qmlops_access=access)

    @property
    def login_available(self) -> bool:
        return False

    @property
    def logout_available(self) -> bool:
        return False

    def get_handlers(self) -> list[tuple[str, object]]:
        return []

    def validate_security(self, app: Any, ssl_options: Any = None) -> None:
        return None


class RoleAuthorizer(Authorizer):
    """The qmlops API only, by role; everything else a jupyter server offers is closed."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        access: Access | None = getattr(user, "qmlops_access", None)
        if access is None or not resource.startswith("qmlops"):
            return False
        if resource == "qmlops:credentials":
            return access.write
        if action == "read":
            return True
        return access.write or access.admin


def server_arguments(environ: dict[str, str] | None = None) -> list[str]:
    """The jupyter server's command-line configuration for the service, from the hub's
    variables: on 127.0.0.1 at the port and prefix the hub routes to, qmlops alone."""
    env = dict(os.environ if environ is None else environ)
    url = urlparse(env.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:10101")
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or "/services/qmlops/"
    port = url.port or 10101
    home = env.get("QMLOPS_HOME")
    root = os.path.join(home, "service-root") if home else os.getcwd()
    os.makedirs(root, exist_ok=True)
    enabled = {name: False for name in _installed_extensions()}
    enabled[EXTENSION] = True
    module = __name__
    argv = [
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        # It listens on loopback only, but is reached through the hub's proxy under the hub's
        # public name: the Host check guards cookie logins against DNS rebinding, and this
        # server takes hub tokens in a header only, never a cookie.
        "--ServerApp.allow_remote_access=True",
        f"--ServerApp.base_url={prefix}",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.identity_provider_class={module}.HubTokenIdentityProvider",
        f"--ServerApp.authorizer_class={module}.RoleAuthorizer",
        *(f"--ServerApp.jpserver_extensions={name}={on}" for name, on in enabled.items()),
        "--ServerApp.terminals_enabled=False",
        "--IdentityProvider.token=",  # no server token to print: callers bring hub tokens
        "--QmlopsApp.multi_user=True",
        "--QmlopsApp.expose_to_kernels=False",
        "--QmlopsApp.owner=qmlops-service",
    ]
    if env.get("QMLOPS_LEASE_TTL"):
        argv.append(f"--QmlopsApp.lease_ttl={float(env['QMLOPS_LEASE_TTL'])}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    return argv


def _installed_extensions() -> list[str]:
    """Server extensions enabled by the environment's config files (JupyterLab, Voila, ...)."""
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    manager = ExtensionConfigManager(read_config_path=jupyter_config_path())
    return sorted(manager.get_jpserver_extensions())


def main(argv: list[str] | None = None) -> None:
    from jupyter_server.serverapp import ServerApp

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http") and os.environ.get(
        "JUPYTERHUB_API_TOKEN"
    ):
        # The team's MLflow is behind the hub: the service logs runs with its own hub token.
        os.environ.setdefault("MLFLOW_TRACKING_TOKEN", os.environ["JUPYTERHUB_API_TOKEN"])
    ServerApp.launch_instance(argv=[*server_arguments(), *(argv or sys.argv[1:])])


if __name__ == "__main__":
    main()
