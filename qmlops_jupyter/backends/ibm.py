"""``ibm``: IBM Quantum through qiskit-ibm-runtime's primitives.

Two kinds of names:

- ``ibm:fake_<device>`` (``ibm:fake_manila``): the runtime's *local testing mode* on the fake
  backend ``Fake<Device>V2`` (Aer with that device's coupling map, basis and noise model). It
  runs on this machine, costs nothing, needs no account; its jobs cannot be found again by id.
- ``ibm:<device>`` (``ibm:ibm_brisbane``): a device of IBM Quantum Platform, reached through
  ``QiskitRuntimeService``; queued, cancellable, re-attachable by job id from any process.

Both go through the same path: circuits are transpiled here to the device's ISA (preset pass
manager, optimization level 1), then sent to the sampler primitive (counts) or, when the job
asks for observables, to the estimator primitive (expectation values of any Pauli string; such
a job's counts are empty dicts). Each job carries the runtime job tags ``qmlops`` and
``qmlops:<ledger job id>``.

Credentials: the job's stored credential (its ``credential`` alias, from the vault), else
``QISKIT_IBM_TOKEN`` in the environment (or ``token`` in the
backend's options in backends.yaml, discouraged); the channel and instance from the backend's
options (``channel``, ``instance``) or ``QISKIT_IBM_CHANNEL`` / ``QISKIT_IBM_INSTANCE``. Accounts
are never saved to disk. How the adapter reaches IBM is swappable (tests use a fake runtime
client): set ``IBMBackend.service_factory``, or ``service_factory: "module:callable"`` in the
backend's options.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import (
    AmbiguousProviderError,
    AuthProviderError,
    ConfigError,
    MissingBackendDependency,
    PermanentProviderError,
    ProviderError,
    QmlopsError,
    TransientProviderError,
    UnknownBackend,
    one_line,
)
from ..models import CircuitInfo
from .aer import CLIFFORD_OPS
from .base import Backend, Capabilities, JobHandle, ProviderResult, ProviderState, ProviderStatus

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

INSTALL_HINT = (
    "backend 'ibm' needs qiskit-ibm-runtime; install it with: pip install 'qmlops-jupyter[ibm]'"
)
#: The channel qiskit-ibm-runtime 0.51 uses for IBM Quantum Platform (the other is ibm_cloud).
DEFAULT_CHANNEL = "ibm_quantum_platform"
TAG = "qmlops"

#: Job states of qiskit-ibm-runtime (``RuntimeJobV2.status()`` strings, the older ``JobStatus``
#: enum names, and the API's own ``Completed``/``Failed``) and of the local testing mode.
PROVIDER_STATES: dict[str, ProviderState] = {
    "INITIALIZING": ProviderState.QUEUED,
    "QUEUED": ProviderState.QUEUED,
    "VALIDATING": ProviderState.QUEUED,
    "RUNNING": ProviderState.RUNNING,
    "DONE": ProviderState.DONE,
    "COMPLETED": ProviderState.DONE,
    "ERROR": ProviderState.FAILED,
    "FAILED": ProviderState.FAILED,
    "CANCELLED": ProviderState.CANCELLED,
    "CANCELED": ProviderState.CANCELLED,
}

_NON_GATES = frozenset(
    {
        "measure",
        "barrier",
        "reset",
        "delay",
        "if_else",
        "while_loop",
        "for_loop",
        "switch_case",
        "box",
        "store",
    }
)


_IMPORT_LOCK = threading.Lock()


def _require_runtime() -> Any:
    # One thread imports it (engine hosts load backends from several threads; a first import
    # of Qiskit's packages from two threads at once can fail).
    with _IMPORT_LOCK:
        try:
            import qiskit_ibm_runtime
        except ImportError:
            raise MissingBackendDependency(INSTALL_HINT) from None
    return qiskit_ibm_runtime


def fake_device_classes() -> dict[str, type]:
    """The runtime's fake devices by device name: ``FakeManilaV2`` is ``fake_manila``,
    ``FakeBrisbane`` is ``fake_brisbane`` (imports the runtime: seconds, the first time)."""
    _require_runtime()
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    found = {}
    for attr in dir(fake_provider):
        cls = getattr(fake_provider, attr)
        match = re.fullmatch(r"Fake([A-Za-z0-9]+?)(?:V2|Backend)?", attr)
        if match and isinstance(cls, type) and issubclass(cls, FakeBackendV2):
            found["fake_" + match.group(1).lower()] = cls
    return found


@functools.lru_cache(maxsize=1)
def fake_device_files() -> dict[str, Path]:
    """Each fake device's configuration file (qubits, basis gates), found among the runtime's
    files without importing it, so naming and describing a fake device stays instant."""
    spec = importlib.util.find_spec("qiskit_ibm_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendDependency(INSTALL_HINT)
    root = Path(next(iter(spec.submodule_search_locations))) / "fake_provider" / "backends"
    found = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            conf = folder / f"conf_{folder.name}.json"
            if conf.is_file():
                found[f"fake_{folder.name}"] = conf
    return found


@functools.cache
def _fake_configuration(device: str) -> tuple[int | None, tuple[str, ...]]:
    try:
        conf = json.loads(fake_device_files()[device].read_text(encoding="utf-8"))
        return int(conf["n_qubits"]), tuple(sorted(set(conf["basis_gates"]) - _NON_GATES))
    except (KeyError, ValueError, TypeError, OSError):
        return None, ()


# -- the runtime client: what the adapter needs of IBM Quantum -----------------------------------


class RuntimeClient:
    """A device by name, the two primitives, and a job by id.

    With ``service=None`` it is the runtime's local testing mode (devices are the fake backends);
    otherwise it wraps a ``QiskitRuntimeService``. Test doubles implement the same four methods
    (see ``tests/fake_ibm_runtime.py``).
    """

    def __init__(self, service: Any | None = None) -> None:
        self.service = service

    def backend(self, name: str) -> Any:
        if self.service is None:
            classes = fake_device_classes()
            if name not in classes:
                raise UnknownBackend(_unknown_fake(name, classes))
            return classes[name]()
        return self.service.backend(name)

    def run(
        self,
        primitive: str,
        backend: Any,
        pubs: list[Any],
        *,
        shots: int,
        tags: list[str],
        seed: int | None = None,
    ) -> Any:
        """Submit ``pubs`` (ISA circuits, or (circuit, observable) pairs) to a primitive."""
        runner = _primitive_class(primitive)(mode=backend)
        options = runner.options
        if self.service is not None:
            options.environment.job_tags = list(tags)
        elif seed is not None:
            options.simulator.seed_simulator = int(seed)
        if primitive == "estimator":
            # Shots decide the precision the estimator aims at: 1/sqrt(shots), as local mode does.
            return runner.run(pubs, precision=1 / shots**0.5)
        return runner.run(pubs, shots=shots)

    def job(self, job_id: str) -> Any:
        if self.service is None:
            raise PermanentProviderError(
                "jobs of the runtime's local testing mode cannot be found again by id"
            )
        return self.service.job(job_id)


def _primitive_class(primitive: str) -> type:
    """The executor-based primitive (``executor_sampler.Sampler`` in 0.51; ``SamplerV2`` in
    some releases): the top-level ``SamplerV2``/``EstimatorV2`` are deprecated."""
    _require_runtime()
    module = importlib.import_module(
        "qiskit_ibm_runtime.executor_estimator"
        if primitive == "estimator"
        else "qiskit_ibm_runtime.executor_sampler"
    )
    base = "Estimator" if primitive == "estimator" else "Sampler"
    return getattr(module, base, None) or getattr(module, base + "V2")


def default_service_factory(
    *,
    channel: str,
    token: str | None,
    instance: str | None,
    url: str | None = None,
    options: dict[str, Any] | None = None,
) -> RuntimeClient:
    """A :class:`RuntimeClient` on ``QiskitRuntimeService`` (never saves the account)."""
    _require_runtime()
    from qiskit_ibm_runtime import QiskitRuntimeService

    kwargs: dict[str, Any] = {"channel": channel}
    if token:
        kwargs["token"] = token
    if instance:
        kwargs["instance"] = instance
    if url:
        kwargs["url"] = url
    return RuntimeClient(QiskitRuntimeService(**kwargs))


def load_factory(path: str) -> Callable[..., Any]:
    """``"package.module:attribute.path"`` to the callable it names (jupyterhub style)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"service_factory must look like 'module:callable', not {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load service_factory {path!r}: {one_line(exc)}") from None
    return target


# -- the adapter ---------------------------------------------------------------------------------


class IBMBackend(Backend):
    requires = ("qiskit_ibm_runtime",)
    extra = "ibm"
    provider = "ibm"
    description = "IBM Quantum through qiskit-ibm-runtime (fake_* devices: local testing mode)"
    provider_states: ClassVar[dict[str, ProviderState]] = PROVIDER_STATES
    #: Builds the runtime client of remote devices: ``factory(channel=, token=, instance=,
    #: url=, options=)``. None: :func:`default_service_factory`, or the ``service_factory``
    #: option of backends.yaml.
    service_factory: ClassVar[Callable[..., Any] | None] = None

    def __init__(self, name: str, config: Any = None, device: str | None = None) -> None:
        super().__init__(name, config, device)
        if not device:
            raise UnknownBackend(
                f"backend {name!r} needs a device: ibm:fake_manila (local "
                "testing mode) or ibm:<device> (e.g. ibm:ibm_brisbane)"
            )
        self.local = device.startswith("fake_")
        if self.local:
            devices = fake_device_files()
            if device not in devices:
                raise UnknownBackend(_unknown_fake(name, devices))
        self._client: Any = None
        #: Runtime clients built from stored credentials, by alias.
        self._vault_clients: dict[str, Any] = {}
        self._target: Any = None
        self._lock = threading.Lock()

    @classmethod
    def listed_names(cls, plugin: str) -> list[str]:
        return [f"{plugin}:fake_manila"]

    # -- what it can do ------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        gates: tuple[str, ...] = ()
        qubits = None
        if self.local:  # from the device's file: describing it must not import the runtime
            qubits, gates = _fake_configuration(self.device or "")
        elif self._target is not None:  # a remote device is known once a job fetched it
            gates = tuple(sorted(set(self._target.operation_names) - _NON_GATES))
            qubits = self._target.num_qubits
        return Capabilities(
            provider=self.provider,
            simulator=self.local,
            local=self.local,
            max_qubits=qubits,
            native_gates=gates,
            supports_reattach=not self.local,
            supports_cancel=True,
            statevector_memory=self.local,
            estimator=True,
        )

    def needs_statevector(self, info: CircuitInfo) -> bool:
        return not set(info.gate_counts) <= CLIFFORD_OPS

    def credential_status(self) -> str:
        if self.local:
            return "not needed"
        if (
            self._token()
            or self.has_stored_credential("ibm")
            or (Path.home() / ".qiskit" / "qiskit-ibm.json").exists()
        ):
            return "configured"
        return "missing"

    def availability(self) -> tuple[bool, str]:
        if self.local:
            return True, "ok (local testing mode, with the device's noise)"
        try:
            custom = self._custom_factory()
        except ConfigError as exc:
            return False, str(exc)
        if self.credential_status() == "missing" and not custom:
            return False, "no IBM Quantum token: set QISKIT_IBM_TOKEN"
        return True, "unknown: not checked"

    # -- submitting and re-attaching -----------------------------------------------------------

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        client = self._runtime(options)
        target = self._fetch_device(client)
        observables = options.get("observables")
        primitive = "estimator" if observables else "sampler"
        started = time.perf_counter()
        try:
            isa = self._isa(
                circuits, target, measured=primitive == "sampler", seed=options.get("seed")
            )
            pubs: list[Any] = isa
            if observables:
                from qiskit.quantum_info import SparsePauliOp

                pubs = [
                    (c, SparsePauliOp(p).apply_layout(c.layout))
                    for c, p in zip(isa, observables, strict=True)
                ]
        except QmlopsError:
            raise
        except Exception as exc:
            raise PermanentProviderError(
                f"cannot transpile for {self.device}: {self._clean(exc)}"
            ) from None
        phases = {"transpile": time.perf_counter() - started}
        tags = [TAG]
        if options.get("job_id"):
            tags.append(f"{TAG}:{options['job_id']}")
        try:
            job = client.run(
                primitive, target, pubs, shots=shots, tags=tags, seed=options.get("seed")
            )
        except Exception as exc:
            raise self._error(exc, during="submit") from None
        return IBMJobHandle(self, job, primitive, phases=phases)

    def attach(self, provider_job_id: str, options: dict[str, Any] | None = None) -> JobHandle:
        if self.local:
            return super().attach(provider_job_id, options)
        client = self._runtime(options)
        try:
            job = client.job(provider_job_id)
        except Exception as exc:
            raise self._error(exc, during="attach") from None
        primitive = "estimator" if (options or {}).get("observables") else "sampler"
        return IBMJobHandle(self, job, primitive)

    # -- helpers -------------------------------------------------------------------------------

    def _device(self) -> Any:
        """A local device (the fake backend), built once."""
        if self._target is None:
            self._target = RuntimeClient(None).backend(self.device or "")
        return self._target

    def _fetch_device(self, client: Any) -> Any:
        if self.local:
            return self._device()
        with self._lock:
            if self._target is None:
                try:
                    self._target = client.backend(self.device)
                except Exception as exc:
                    raise self._error(exc, during="connect") from None
            return self._target

    def _isa(
        self,
        circuits: Sequence[QuantumCircuit],
        target: Any,
        *,
        measured: bool,
        seed: int | None = None,
    ) -> list[QuantumCircuit]:
        """The device's ISA circuits. A pass manager per job (about 10 ms): it carries the
        job's seed, and is never shared between threads."""
        prepared = []
        for circuit in circuits:
            if measured and circuit.num_clbits == 0:
                circuit = circuit.measure_all(inplace=False)
            elif not measured:
                circuit = circuit.remove_final_measurements(inplace=False)
            prepared.append(circuit)
        from qiskit.transpiler import generate_preset_pass_manager

        manager = generate_preset_pass_manager(
            optimization_level=1,
            backend=target,
            seed_transpiler=None if seed is None else int(seed),
        )
        return list(manager.run(prepared))

    def _runtime(self, options: dict[str, Any] | None = None) -> Any:
        """The runtime client; for a job naming a stored credential (``options["credential"]``),
        one built from that credential's token, channel and instance (kept per alias)."""
        if self.local:
            return RuntimeClient(None)
        from ..vault import credential_fields

        alias = str((options or {}).get("credential") or "")
        # Aliases are per owner: one engine serves several owners' same-named credentials.
        key = f"{(options or {}).get('owner') or ''}\0{alias}"
        with self._lock:
            cached = self._vault_clients.get(key) if alias else self._client
            if cached is not None:
                return cached
            stored = credential_fields(options, "ibm") if alias else {}
            factory = self._custom_factory() or default_service_factory
            try:
                client = factory(
                    channel=stored.get("channel")
                    or self._setting("channel", "QISKIT_IBM_CHANNEL")
                    or DEFAULT_CHANNEL,
                    token=stored.get("token") or self._token(),
                    instance=stored.get("instance")
                    or self._setting("instance", "QISKIT_IBM_INSTANCE"),
                    url=self._setting("url", "QISKIT_IBM_URL"),
                    options=dict(self.config.options),
                )
            except QmlopsError:  # a missing SDK, a bad service_factory
                raise
            except Exception as exc:
                raise self._error(exc, during="connect") from None
            if alias:
                self._vault_clients[key] = client
            else:
                self._client = client
            return client

    def _custom_factory(self) -> Callable[..., Any] | None:
        path = self.config.options.get("service_factory")
        if path:
            return load_factory(str(path))
        return type(self).service_factory

    def _setting(self, option: str, env: str) -> str | None:
        return self.config.options.get(option) or os.environ.get(env) or None

    def _token(self) -> str | None:
        return os.environ.get("QISKIT_IBM_TOKEN") or self.config.options.get("token") or None

    def _clean(self, exc: BaseException | str) -> str:
        """One line, with the token (if any) blanked out."""
        text = one_line(exc if isinstance(exc, str) else (str(exc) or type(exc).__name__))
        token = self._token()
        if token:
            text = text.replace(token, "***")
        from ..vault import redact

        text = redact(text)  # tokens of stored credentials
        # API keys and bearer tokens some HTTP errors echo back in URLs or headers.
        return re.sub(r"(?i)(bearer\s+|apikey=|token=)[^\s&'\"]+", r"\1***", text)

    def _error(self, exc: BaseException, *, during: str) -> ProviderError:
        return provider_error(
            exc, during=during, where=self.device or "", clean=self._clean, simulator=self.local
        )


def _unknown_fake(name: str, devices: Any) -> str:
    known = sorted(devices)
    favourites = [
        n for n in ("fake_manila", "fake_brisbane", "fake_sherbrooke", "fake_torino") if n in known
    ] or known[:4]
    some = ", ".join(f"ibm:{n}" for n in favourites)
    return (
        f"unknown backend {name!r}: no such fake device; try {some} "
        f"({len(known)} fake devices in all, named after qiskit_ibm_runtime.fake_provider)"
    )


# -- errors -------------------------------------------------------------------------------------

_AUTH_ERRORS = {
    "IBMNotAuthorizedError",
    "AccountNotFoundError",
    "InvalidAccountError",
    "AuthenticationLicenseError",
    "IBMAccountError",
}
_SAFE_NETWORK = (
    "NewConnectionError",
    "Connection refused",
    "Name or service not known",
    "Failed to resolve",
    "Temporary failure in name resolution",
    "No route to host",
    "Network is unreachable",
)


def provider_error(
    exc: BaseException,
    *,
    during: str,
    where: str,
    clean: Callable[[BaseException | str], str],
    simulator: bool = False,
) -> ProviderError:
    """The :class:`ProviderError` kind for an exception of qiskit-ibm-runtime (or requests).

    401/403 and account errors are ``auth``; 429, 5xx and network errors ``transient`` (during a
    submit to a device, a reply that may have been lost -- a reset, a read timeout, a 502/504 --
    is ``ambiguous``: the job may exist); job failures and other 4xx ``permanent``.
    """
    if isinstance(exc, ProviderError):
        return exc
    message = clean(exc)
    names = {type(e).__name__ for e in _chain(exc)}
    status = next(
        (s for e in _chain(exc) if isinstance(s := getattr(e, "status_code", None), int) and s > 0),
        None,
    )
    if status in (401, 403):
        return AuthProviderError(f"IBM Quantum refused the credential ({during}): {message}")
    if names & {"RuntimeJobFailureError", "RuntimeJobMaxTimeoutError"}:
        return PermanentProviderError(f"IBM job failed: {message}")
    # Before the account errors: offline, the runtime reports an unreachable IAM endpoint as
    # InvalidAccountError ("check that you are using a valid API token") caused by a DNS error.
    network = _network_cause(exc)
    if (status is not None and (status == 429 or status >= 500)) or network is not None:
        lost_reply = status in (502, 504) or (
            network is not None
            and not any(marker in f"{type(network).__name__} {network}" for marker in _SAFE_NETWORK)
            and type(network).__name__ not in ("ConnectTimeout", "ConnectionRefusedError")
        )
        if during == "submit" and lost_reply and not simulator:
            return AmbiguousProviderError(
                f"no reply from IBM Quantum to the submission for {where}; the job may "
                f"exist: {message}"
            )
        if network is not None:
            message = clean(network)
        return TransientProviderError(f"cannot reach IBM Quantum ({during}): {message}")
    if names & _AUTH_ERRORS:
        return AuthProviderError(f"IBM Quantum refused the credential ({during}): {message}")
    if names & {"RequestsApiError", "IBMRuntimeError", "ApiError"} and status is None:
        # The runtime wraps network failures in these without a status code.
        return TransientProviderError(f"cannot reach IBM Quantum ({during}): {message}")
    if names & {"RuntimeJobNotFound", "QiskitBackendNotFoundError"}:
        return PermanentProviderError(f"not found at IBM Quantum: {message}")
    if during == "connect":
        return PermanentProviderError(
            f"cannot set up the IBM Quantum service (check channel and instance): {message}"
        )
    return PermanentProviderError(f"IBM Quantum refused the {during}: {message}")


_NETWORK_ERRORS = frozenset(
    {
        "ConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "ChunkedEncodingError",
        "ProtocolError",
        "NewConnectionError",
        "NameResolutionError",
        "MaxRetryError",
        "SSLError",
        "ProxyError",
    }
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _network_cause(exc: BaseException) -> BaseException | None:
    """The network error behind ``exc``: requests' ConnectionError/Timeout or an OSError."""
    for e in _chain(exc):
        module = type(e).__module__ or ""
        if module.startswith(("requests", "urllib3")):
            # requests' exceptions are OSErrors too, HTTPError (a reply) included: by name.
            if type(e).__name__ in _NETWORK_ERRORS:
                return e
            continue
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError | PermissionError):
            return e
    return None


# -- jobs ---------------------------------------------------------------------------------------


class IBMJobHandle(JobHandle):
    """A runtime job (a sampler or estimator job), remote or in local testing mode."""

    def __init__(
        self, backend: IBMBackend, job: Any, primitive: str, phases: dict[str, float] | None = None
    ) -> None:
        self._backend = backend
        self._job = job
        self.primitive = primitive
        self.phases = phases or {}
        try:
            self.provider_job_id = str(job.job_id())
        except Exception as exc:
            raise backend._error(exc, during="submit") from None

    def status(self) -> ProviderStatus:
        try:
            raw = self._job.status()
        except Exception as exc:
            raise self._backend._error(exc, during="poll") from None
        name = str(getattr(raw, "name", raw)).upper()
        state = PROVIDER_STATES.get(name, ProviderState.QUEUED)
        status = ProviderStatus(state, extra={"provider_state": name})
        if state is ProviderState.QUEUED:
            self._queue_info(status)
        elif state is ProviderState.FAILED:
            status.message = self._failure_message()
        elif state is ProviderState.CANCELLED:
            status.message = "cancelled at IBM Quantum"
        return status

    def _queue_info(self, status: ProviderStatus) -> None:
        """Where the service tells it (``queue_position()``/``queue_info()``): the position and
        the estimated start. IBM Quantum Platform's V2 jobs do not; nothing is fetched then."""
        position = getattr(self._job, "queue_position", None)
        if callable(position):
            try:
                value = position()
            except Exception:  # optional information: never fail a poll over it
                value = None
            if isinstance(value, int):
                status.queue_position = value
        info = getattr(self._job, "queue_info", None)
        if callable(info):
            try:
                details = info() or {}
            except Exception:
                details = {}
            start = getattr(details, "estimated_start_time", None) or (
                details.get("estimated_start_time") if isinstance(details, dict) else None
            )
            if start is not None:
                status.extra["estimated_start_time"] = str(start)

    def _failure_message(self) -> str:
        reason = None
        getter = getattr(self._job, "error_message", None)
        if callable(getter):
            try:
                reason = getter()
            except Exception:
                reason = None
        text = self._backend._clean(reason) if reason else "no reason given"
        return f"IBM job {self.provider_job_id} failed: {text}"

    def result(self, timeout: float | None = None) -> ProviderResult:
        job = self._job
        if self._backend.local and timeout is not None:
            self._wait_local(timeout)
        try:
            raw = job.result(timeout=timeout) if not self._backend.local else job.result()
        except Exception as exc:
            names = {type(e).__name__ for e in _chain(exc)}
            if names & {"RuntimeJobTimeoutError", "JobTimeoutError"}:
                raise TimeoutError(str(exc)) from None
            if "RuntimeInvalidStateError" in names:
                raise PermanentProviderError(
                    f"IBM job {self.provider_job_id} has no result: {self._backend._clean(exc)}"
                ) from None
            raise self._backend._error(exc, during="result") from None
        return self._decode(raw)

    def _wait_local(self, timeout: float) -> None:
        """Local testing mode jobs run in a thread: wait for them without blocking forever."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                state = str(getattr(s := self._job.status(), "name", s)).upper()
            except Exception:
                return  # let result() raise what went wrong
            if PROVIDER_STATES.get(state) in (
                ProviderState.DONE,
                ProviderState.FAILED,
                ProviderState.CANCELLED,
            ):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"IBM local job {self.provider_job_id} still {state}")
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)

    def _decode(self, raw: Any) -> ProviderResult:
        metadata: dict[str, Any] = {
            "provider_job_id": self.provider_job_id,
            "backend": self._backend.device,
            "primitive": self.primitive,
        }
        tags = getattr(self._job, "tags", None)
        if isinstance(tags, list | tuple):
            metadata["job_tags"] = list(tags)
        if not self._backend.local:
            usage = getattr(self._job, "usage", None)
            if callable(usage):
                # Usage is bookkeeping: the result stands without it.
                with contextlib.suppress(Exception):
                    metadata["usage_seconds"] = usage()
                    metadata["run_seconds"] = float(metadata["usage_seconds"])
        try:
            pubs = list(raw)
            # What the job holds decides (a re-attached job's options may not say).
            if pubs and all(hasattr(p.data, "evs") for p in pubs):
                self.primitive = metadata["primitive"] = "estimator"
            if self.primitive == "estimator":
                metadata["expectation_values"] = [float(p.data.evs) for p in pubs]
                metadata["standard_errors"] = [float(p.data.stds) for p in pubs]
                counts: list[dict[str, int]] = [{} for _ in pubs]
            else:
                counts = [counts_of(p) for p in pubs]
        except Exception as exc:
            raise PermanentProviderError(
                f"cannot read the result of IBM job {self.provider_job_id}: "
                f"{self._backend._clean(exc)}"
            ) from None
        return ProviderResult(counts=counts, metadata=metadata)

    def cancel(self) -> None:
        try:
            self._job.cancel()
        except Exception as exc:
            names = {type(e).__name__ for e in _chain(exc)}
            if "RuntimeInvalidStateError" in names:
                return  # already finished: nothing to cancel
            raise self._backend._error(exc, during="cancel") from None


def counts_of(pub_result: Any) -> dict[str, int]:
    """Counts of one sampler result in Qiskit's bit order: one ``BitArray`` per classical
    register, in the circuit's register order; the last register is leftmost, like
    ``Result.get_counts()`` with the spaces removed."""
    data = pub_result.data
    registers = [data[name] for name in data]
    if not registers:
        return {}
    if len(registers) == 1:
        return {key: int(n) for key, n in registers[0].get_counts().items()}
    per_register = [array.get_bitstrings() for array in registers]
    counts: dict[str, int] = {}
    for shot in zip(*per_register, strict=True):
        key = "".join(reversed(shot))
        counts[key] = counts.get(key, 0) + 1
    return counts
