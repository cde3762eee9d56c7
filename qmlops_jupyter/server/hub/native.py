"""NativeAuthenticator (``jupyterhub-nativeauthenticator``) made to work with JupyterHub 6.

Its login page's POST handler (1.3.0, the newest release) still times the login with the
``statsd`` client JupyterHub 5 removed from its handlers, and renders its form with a
signature JupyterHub's error path no longer calls: every login answered 500. This subclass gives
the login handler a no-op timer and a tolerant ``_render``; everything else (sign-up, admin
approval, password rules, lockout) is NativeAuthenticator's own. Settings stay under
``c.NativeAuthenticator``.
"""

from __future__ import annotations

from typing import Any

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler


class _NoTimer:
    """Stands in for the statsd client: ``timer(name).start()`` ... ``.stop()``."""

    def timer(self, name: str) -> _NoTimer:
        return self

    def start(self) -> _NoTimer:
        return self

    def stop(self, send: bool = True) -> None:
        return None


class LoginHandler(NativeLoginHandler):
    statsd = _NoTimer()

    def _render(self, login_error: Any = None, username: Any = None, **_: Any) -> Any:
        return super()._render(login_error=login_error, username=username)


class LabAuthenticator(NativeAuthenticator):
    """NativeAuthenticator with a login page that works on JupyterHub 6."""

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [
            (path, LoginHandler if handler is NativeLoginHandler else handler)
            for path, handler in super().get_handlers(app)
        ]
