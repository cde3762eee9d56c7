"""What every qmlops API handler shares: authentication (the server's, or a kernel's scoped
token), authorization resources, JSON in and out, and one mapping of errors to statuses.

Errors: every :class:`~qmlops_jupyter.errors.QmlopsError` becomes its ``http_status`` with
``{"error": code, "message": one line}``; a body that is not JSON or does not match its model is
400. Nothing a client sends can produce a 500.
"""

from __future__ import annotations

import hmac
import json
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ...errors import Forbidden, InvalidRequest, QmlopsError
from ..app import KERNEL_TOKEN_HEADER

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ...access import Access

M = TypeVar("M", bound="BaseModel")

#: REST base, under the server's base_url.
API = "qmlops/api/v1"


class QmlopsHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every ``/qmlops/api/v1/`` handler. Subclasses set ``auth_resource`` and decorate
    each method with ``@web.authenticated`` and ``@authorized``."""

    auth_resource = "qmlops"
    #: Whether requests wait for the extension's client (built by its start hook).
    needs_client = True

    @property
    def app(self) -> Any:
        return self.extensionapp

    @property
    def access(self) -> Access:
        """What the caller may do: on a team's service, what the hub's scopes on its token say
        (see :mod:`qmlops_jupyter.access`); on a single-user server, everything of the owner's."""
        access = getattr(self.current_user, "qmlops_access", None)
        if access is not None:
            return access
        if self.extensionapp.multi_user:
            from ...access import Access

            return Access(str(getattr(self.current_user, "username", "")))  # no rights
        from ...access import Access

        return Access.single_user(self.extensionapp.client.owner)

    @property
    def client(self) -> Any:
        """The core client acting as the caller."""
        app = self.extensionapp
        if app.multi_user:
            return app.client_for(self.access.user)
        return app.client

    def owner_query(self) -> str | None:
        """``?owner=NAME`` (None when absent; 400 when given empty)."""
        if self.get_query_argument("owner", None) == "":
            raise InvalidRequest("owner is empty")
        return self.query("owner")

    def client_of(self, owner: str | None) -> Any:
        """The client acting as ``owner`` (``?owner=``) when the caller may read that owner's
        work; 403 otherwise. None: the caller's own."""
        if owner is None or owner == self.access.user:
            return self.client
        if not self.access.can_read(owner):
            raise Forbidden(f"you may not read {owner}'s work")
        return self.extensionapp.client_for(owner) if self.extensionapp.multi_user else self.client

    def audit(self, action: str, owner: str, target: str | None = None, **detail: Any) -> Any:
        """Record an act on another user's work (an admin's) in the audit log."""
        from ... import audit

        return self.run(
            audit.record,
            self.extensionapp.client.ledger,
            actor=f"{self.access.role}:{self.access.user}",
            action=action,
            owner=owner,
            target=target,
            detail=detail,
        )

    async def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await self.extensionapp.run(func, *args, **kwargs)

    # -- authentication ------------------------------------------------------------------------

    def _kernel_token_ok(self) -> bool:
        given = self.request.headers.get(KERNEL_TOKEN_HEADER)
        expected = getattr(self.extensionapp, "kernel_token", None)
        return bool(given and expected and hmac.compare_digest(given, expected))

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        # A request in the moments between the server listening and the extension's start
        # hook building the client waits for it (503 if it failed).
        if self.needs_client:
            await self.extensionapp.ready()
        if self.current_user is None and self._kernel_token_ok():
            from jupyter_server.auth.identity import User

            owner = self.extensionapp.local_owner
            self.current_user = User(username=owner, name=owner)

    def check_xsrf_cookie(self) -> None:
        # A kernel's scoped token is a header, never a cookie: no cross-site risk.
        if self._kernel_token_ok():
            return None
        return super().check_xsrf_cookie()

    # -- JSON in and out -----------------------------------------------------------------------

    def body(self, model: type[M]) -> M:
        """The request body as ``model``; 400 naming the first problem otherwise."""
        raw = self.request.body or b""
        try:
            data = json.loads(raw.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        from pydantic import ValidationError

        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InvalidRequest(f"{where}: {first['msg']}") from None

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def query(self, name: str, default: str | None = None) -> str | None:
        value = self.get_query_argument(name, default)
        return value if value not in ("", None) else default

    def int_query(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.query(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidRequest(f"{name} must be an integer, not {raw!r}") from None
        if not low <= value <= high:
            raise InvalidRequest(f"{name} must be between {low} and {high}, not {value}")
        return value

    # -- errors ----------------------------------------------------------------------------------

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, QmlopsError):
            status_code = exc.http_status
        elif _is_validation_error(exc):
            status_code = 400
        super().send_error(status_code, **kwargs)

    @classmethod
    def allowed_methods(cls) -> list[str]:
        return [
            m
            for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
            if getattr(cls, m.lower()) is not getattr(web.RequestHandler, m.lower())
        ]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        from ...vault.redaction import redact

        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, QmlopsError):
            body = {"error": exc.code, "message": redact(str(exc))}
        elif isinstance(exc, web.HTTPError):
            message = (
                exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
            )
            body = {"error": _code(status_code), "message": message or self._reason}
        else:
            body = {"error": _code(status_code), "message": self._reason}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, QmlopsError):
            self.log.info(
                "qmlops API %s %s: %s %s",
                self.request.method,
                self.request.path,
                value.http_status,
                value,
            )
            return
        super().log_exception(typ, value, tb)


def _is_validation_error(exc: BaseException | None) -> bool:
    """A pydantic ValidationError, without importing pydantic to find out (if it is not
    loaded, no such error can exist)."""
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


def _code(status: int) -> str:
    return {
        400: "invalid_request",
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        422: "unprocessable",
        503: "unavailable",
    }.get(status, "error")
