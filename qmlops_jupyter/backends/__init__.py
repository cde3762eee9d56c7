"""Backends are plugins in the entry-point group ``qmlops_jupyter.backends``.

A name like ``aer`` picks the plugin registered as ``aer``; ``ibm:fake_manila`` picks plugin
``ibm`` with device ``fake_manila``. Limits come from ``backends.yaml`` (the full name first,
then the plugin's name).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..errors import MissingBackendDependency, UnknownBackend

if TYPE_CHECKING:
    from ..config import BackendsFile
    from .base import Backend

GROUP = "qmlops_jupyter.backends"


class BackendRegistry:
    """Finds backend classes (entry points, or registered in code) and builds configured
    instances, one per name."""

    def __init__(self, backends_file: BackendsFile, vault: Callable[[], Any] | None = None) -> None:
        self.backends_file = backends_file
        #: The owning client's vault, fetched when a backend asks (see ``Backend.owner_vault``).
        self.vault = vault
        self._classes: dict[str, type[Backend]] = {}
        self._instances: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def register(self, plugin: str, cls: type[Backend]) -> None:
        """Add a backend class by hand (tests, notebooks); entry points need no call."""
        self._classes[plugin] = cls
        self._instances = {k: v for k, v in self._instances.items() if k.split(":", 1)[0] != plugin}

    def plugin_names(self) -> list[str]:
        names = {ep.name for ep in entry_points(group=GROUP)} | set(self._classes)
        return sorted(names)

    def configured_names(self) -> list[str]:
        """Backends to list: every name in backends.yaml, and the names each installed plugin
        offers by default (a plugin whose SDK is missing is listed by its bare name)."""
        names = set(self.backends_file.backends)
        for plugin in self.plugin_names():
            if any(n == plugin or n.startswith(plugin + ":") for n in names):
                continue
            try:
                cls = self._classes.get(plugin) or self._load(plugin, plugin)
            except MissingBackendDependency:
                names.add(plugin)
                continue
            names.update(cls.listed_names(plugin))
        return sorted(names)

    def get(self, name: str) -> Backend:
        name = (name or "").strip()
        with self._lock:
            backend = self._instances.get(name)
            if backend is None:
                backend = self._build(name)
                self._instances[name] = backend
            return backend

    def _build(self, name: str) -> Backend:
        plugin, _, device = name.partition(":")
        cls = self._classes.get(plugin) or self._load(plugin, name)
        config = self.backends_file.backends.get(name) or self.backends_file.backends.get(plugin)
        check_requirements(cls, plugin)
        backend = cls(name, config, device=device or None)
        backend.vault_source = self.vault
        return backend

    def _load(self, plugin: str, name: str) -> type[Backend]:
        matches = [ep for ep in entry_points(group=GROUP) if ep.name == plugin]
        if not matches:
            known = ", ".join(self.plugin_names()) or "none"
            raise UnknownBackend(f"unknown backend {name!r}; known backends: {known}")
        try:
            cls = matches[0].load()
        except ImportError as exc:
            raise MissingBackendDependency(
                f"backend {plugin!r} needs a package that is not installed ({exc.name}); "
                f"install it with: pip install 'qmlops-jupyter[{plugin}]'"
            ) from None
        self._classes[plugin] = cls
        return cls


def check_requirements(cls: type[Backend], plugin: str) -> None:
    """Refuse a backend whose SDK is not installed before anything is recorded, with the exact
    install hint (found without importing the SDK, so it costs nothing)."""
    from importlib.util import find_spec

    for module in cls.requires:
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            extra = cls.extra or plugin
            raise MissingBackendDependency(
                f"backend {plugin!r} needs {module!r}, which is not installed; install it "
                f"with: pip install 'qmlops-jupyter[{extra}]'"
            )
