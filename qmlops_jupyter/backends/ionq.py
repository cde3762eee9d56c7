"""``ionq``: IonQ's Quantum Cloud through its documented REST API (v0.3), with httpx.

Backend names: ``ionq`` and ``ionq:simulator`` (IonQ's cloud simulator), ``ionq:qpu.<name>``
(``ionq:qpu.aria-1``, ``ionq:qpu.forte-1`` ...): the part after the colon is IonQ's ``target``.

Settings come from the backend's ``options`` in ``backends.yaml``: ``api_url`` (default
``https://api.ionq.co/v0.3``), ``timeout`` (seconds per HTTP request, default 30) and
``api_key_env`` (the environment variable holding the API key, default ``IONQ_API_KEY``). The
key is sent as IonQ asks, ``Authorization: apiKey KEY``, and never appears in a message.

What is sent: the circuits, transpiled to IonQ's QIS gate set, as one ``ionq.circuit.v0`` job
(several circuits make one *multicircuit* job). IonQ measures every qubit and answers with a
probability histogram over qubit states (qubit 0 the least significant bit); it is turned back
into counts per classical bit, in Qiskit's bit order, from the circuit's measure map. The map
travels with the job in IonQ's ``metadata`` so a new process can decode a job it re-attaches to.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import (
    AmbiguousProviderError,
    AuthProviderError,
    ConfigError,
    InvalidCircuit,
    MissingBackendDependency,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    UnknownBackend,
    one_line,
)
from .base import Backend, Capabilities, JobHandle, ProviderResult, ProviderState, ProviderStatus

if TYPE_CHECKING:
    import httpx
    from qiskit import QuantumCircuit

DEFAULT_API_URL = "https://api.ionq.co/v0.3"
DEFAULT_TIMEOUT = 30.0
API_KEY_ENV = "IONQ_API_KEY"
OPTION_KEYS = frozenset({"api_url", "timeout", "api_key_env"})
USER_AGENT = {"User-Agent": "qmlops-jupyter"}

#: IonQ job statuses (v0.3: submitted, ready, running, completed, failed, canceled; the user
#: manual also names ``started``) and what they mean to the engine.
IONQ_STATES: dict[str, ProviderState] = {
    "submitted": ProviderState.QUEUED,
    "ready": ProviderState.QUEUED,
    "started": ProviderState.RUNNING,
    "running": ProviderState.RUNNING,
    "completed": ProviderState.DONE,
    "failed": ProviderState.FAILED,
    "canceled": ProviderState.CANCELLED,
}

#: Qiskit gate -> IonQ QIS gate. Circuits are transpiled to these Qiskit gates first.
QIS_GATES: dict[str, str] = {
    "x": "x",
    "y": "y",
    "z": "z",
    "h": "h",
    "s": "s",
    "sdg": "si",
    "t": "t",
    "tdg": "ti",
    "sx": "v",
    "sxdg": "vi",
    "rx": "rx",
    "ry": "ry",
    "rz": "rz",
    "cx": "cnot",
    "swap": "swap",
}
_ROTATIONS = frozenset({"rx", "ry", "rz"})
_SKIPPED = frozenset({"barrier", "delay", "id"})
_NOT_RUNNABLE = frozenset(
    {"reset", "if_else", "while_loop", "for_loop", "switch_case", "initialize", "store"}
)

#: Qubits per target (IonQ's published sizes); targets not listed are checked by IonQ.
TARGET_QUBITS: dict[str, int] = {
    "simulator": 29,
    "qpu.harmony": 11,
    "qpu.aria-1": 25,
    "qpu.aria-2": 25,
    "qpu.forte-1": 36,
    "qpu.forte-enterprise-1": 36,
}

#: IonQ keeps metadata values as strings; these keys are ours.
META_JOB_ID = "qmlops_job_id"
META_CLBITS = "qmlops_clbits"
META_TAGS = "qmlops_tags"


class IonQBackend(Backend):
    requires = ("httpx",)
    extra = "ionq"
    provider = "ionq"
    description = "IonQ Quantum Cloud (REST API v0.3): cloud simulator and trapped-ion QPUs"
    provider_states: ClassVar[dict[str, ProviderState]] = IONQ_STATES

    def __init__(self, name: str, config: Any = None, device: str | None = None) -> None:
        super().__init__(name, config, device)
        self.target = _target_of(name, device)
        self._http: httpx.Client | None = None
        self._client_lock = threading.Lock()
        unknown = set(self.config.options) - OPTION_KEYS
        if unknown:
            raise ConfigError(
                f"backend {name}: unknown option(s) {', '.join(sorted(unknown))} in "
                f"backends.yaml; IonQ takes {', '.join(sorted(OPTION_KEYS))}"
            )

    @classmethod
    def listed_names(cls, plugin: str) -> list[str]:
        return [f"{plugin}:simulator", f"{plugin}:qpu.aria-1", f"{plugin}:qpu.forte-1"]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.provider,
            simulator=self.target == "simulator",
            local=False,
            max_qubits=TARGET_QUBITS.get(self.target),
            native_gates=tuple(sorted(QIS_GATES)),
            supports_reattach=True,
            supports_cancel=True,
        )

    # -- settings and credentials --------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return str(self.config.options.get("api_url") or DEFAULT_API_URL).rstrip("/")

    @property
    def timeout(self) -> float:
        value = self.config.options.get("timeout", DEFAULT_TIMEOUT)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"backend {self.name}: timeout must be a number of seconds, not {value!r}"
            ) from None

    @property
    def api_key_env(self) -> str:
        return str(self.config.options.get("api_key_env") or API_KEY_ENV)

    def _api_key(self, options: dict[str, Any] | None = None) -> str:
        """The API key for a job: from the vault when ``options["credential"]`` names a stored
        credential, else from the environment variable ``api_key_env``. Held in memory only."""
        from ..vault import credential_fields

        stored = credential_fields(options, "ionq").get("api_key", "")
        if stored:
            return stored
        key = (os.environ.get(self.api_key_env) or "").strip()
        if not key:
            raise AuthProviderError(
                f"no IonQ API key: set the environment variable {self.api_key_env}, or store one "
                f"with 'qmlops creds set ALIAS --provider ionq' and submit with credential=ALIAS "
                f"(backend {self.name})"
            )
        return key

    def credential_status(self) -> str:
        if (os.environ.get(self.api_key_env) or "").strip() or self.has_stored_credential("ionq"):
            return "configured"
        return "missing"

    def availability(self) -> tuple[bool, str]:
        if self.credential_status() == "missing":
            return False, f"no API key (set {self.api_key_env})"
        return True, "not checked (remote service; listings make no network calls)"

    def api(self, options: dict[str, Any] | None = None) -> IonQApi:
        """A client for this backend's API URL, with the key for ``options``' credential."""
        key = self._api_key(options)
        return IonQApi(self.api_url, self.timeout, lambda: key, self._client)

    @property
    def _client(self) -> httpx.Client:
        """One pooled client per backend for polls (submissions get their own)."""
        with self._client_lock:
            if self._http is None:
                self._http = _httpx().Client(
                    timeout=self.timeout, follow_redirects=False, headers=USER_AGENT
                )
            return self._http

    def close(self) -> None:
        with self._client_lock:
            client, self._http = self._http, None
        if client is not None:
            client.close()

    # -- submit and attach ---------------------------------------------------------------------

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        api = self.api(options)  # no key: fail before any work
        started = time.perf_counter()
        programs = [to_ionq_program(c) for c in circuits]
        phases = {"transpile": time.perf_counter() - started}
        body = job_body(programs, self.target, shots, options)
        reply = api.submit(body)
        job_id = reply.get("id")
        if not isinstance(job_id, str) or not job_id:
            # Something answered but without a job id: whether a job exists is unknown.
            raise AmbiguousProviderError(
                f"IonQ accepted the submission but returned no job id ({_short(reply)})"
            )
        handle = IonQHandle(
            api, job_id, measure_maps=[p.measure_map for p in programs], shots=shots
        )
        handle.phases = phases
        return handle

    def attach(self, provider_job_id: str, options: dict[str, Any] | None = None) -> JobHandle:
        # Nothing is fetched here: the handle reads the job (and its measure maps, from its
        # metadata) on first use, so a re-attach costs no request.
        return IonQHandle(self.api(options), provider_job_id)


# -- the HTTP API ------------------------------------------------------------------------------


class IonQApi:
    """The few calls of IonQ's v0.3 API we use, each mapped to our error kinds."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        api_key: Callable[[], str],
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._api_key = api_key
        self._client = client

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/jobs", json=body, submit=True)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{_quoted(job_id)}")

    def results(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{_quoted(job_id)}/results")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("PUT", f"/jobs/{_quoted(job_id)}/status/cancel")

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/jobs").get("jobs") or [])

    def _request(
        self, method: str, path: str, *, json: Any = None, submit: bool = False
    ) -> dict[str, Any]:
        httpx = _httpx()
        key = self._api_key()
        url = self.base_url + path
        headers = {"Authorization": f"apiKey {key}", "Accept": "application/json"}
        what = f"IonQ {method} {path}"
        try:
            if submit or self._client is None:
                # A submission gets a connection of its own: a pooled connection the server
                # closed while idle would turn a harmless retry into an unknown outcome.
                with httpx.Client(
                    timeout=self.timeout, follow_redirects=False, headers=USER_AGENT
                ) as client:
                    response = client.request(method, url, json=json, headers=headers)
            else:
                response = self._client.request(method, url, json=json, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection was made: nothing reached IonQ, so even a submit is safe to retry.
            raise TransientProviderError(
                f"{what}: could not connect to {self.base_url} ({_scrub(exc, key)})"
            ) from None
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            detail = f"{type(exc).__name__}: {_scrub(exc, key)}"
            if submit:
                raise AmbiguousProviderError(
                    f"{what}: the connection failed after the job was sent ({detail}); IonQ "
                    "may or may not have created it"
                ) from None
            raise TransientProviderError(f"{what}: {detail}") from None
        except httpx.HTTPError as exc:  # a bad URL and the like: a configuration problem
            raise PermanentProviderError(f"{what}: {_scrub(exc, key)}") from None
        if response.status_code >= 400:
            raise _http_error(response, what, key, submit=submit)
        try:
            data = response.json()
        except ValueError:
            message = f"{what}: IonQ answered {response.status_code} with a body that is not JSON"
            raise (AmbiguousProviderError if submit else TransientProviderError)(message) from None
        if not isinstance(data, dict):
            raise PermanentProviderError(f"{what}: unexpected reply {_short(data)}")
        return data


def _http_error(response: httpx.Response, what: str, key: str, *, submit: bool) -> ProviderError:
    status = response.status_code
    detail = _scrub(_error_detail(response), key)
    if status in (401, 403):
        return AuthProviderError(
            f"IonQ refused the API key ({status} {detail}); check the job's stored credential "
            "(qmlops creds test ALIAS) or the environment variable the backend reads "
            "(IONQ_API_KEY by default), and its project access"
        )
    if status == 429:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        hint = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        error = TransientProviderError(f"{what}: IonQ rate limit (429){hint}")
        error.retry_after = retry_after  # type: ignore[attr-defined]
        return error
    if status == 504 and submit:
        # A gateway gave up waiting for IonQ: the submission may have gone through.
        return AmbiguousProviderError(f"{what}: gateway timeout (504) after the job was sent")
    if status >= 500:
        return TransientProviderError(f"{what}: IonQ server error ({status} {detail})")
    if status == 404:
        return PermanentProviderError(f"{what}: not found at IonQ (404 {detail})")
    return PermanentProviderError(f"{what}: IonQ rejected the request ({status} {detail})")


def _error_detail(response: httpx.Response) -> str:
    """IonQ's error body is ``{"error": ..., "message": ..., "statusCode": ...}``."""
    try:
        body = response.json()
    except ValueError:
        return one_line(response.text[:200]) or response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if parts:
            return one_line(": ".join(parts))[:300]
    return _short(body)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, moment.timestamp() - time.time())


def _scrub(text: object, key: str) -> str:
    """The message without the key (as is, or as Python would print it in a bytes repr)."""
    message = one_line(text)
    if key:
        for form in {key, repr(key)[1:-1], repr(key.encode())[2:-1]}:
            message = message.replace(form, "***")
    return message


def _quoted(job_id: str) -> str:
    return urllib.parse.quote(str(job_id), safe="")


def _short(value: object, limit: int = 200) -> str:
    text = one_line(json.dumps(value, default=str) if not isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise MissingBackendDependency(
            "backend 'ionq' needs httpx; install it with: pip install 'qmlops-jupyter[ionq]'"
        ) from None
    return httpx


# -- the job handle ----------------------------------------------------------------------------


class IonQHandle(JobHandle):
    """An IonQ job, known by its id alone (re-attachable from any process)."""

    def __init__(
        self,
        api: IonQApi,
        provider_job_id: str,
        measure_maps: list[list[int]] | None = None,
        shots: int | None = None,
    ) -> None:
        self.api = api
        self.provider_job_id = provider_job_id
        self._measure_maps = measure_maps
        self._shots = shots
        self._lock = threading.Lock()
        self.phases: dict[str, float] = {}

    def status(self) -> ProviderStatus:
        return status_of(self.api.job(self.provider_job_id))

    def result(self, timeout: float | None = None) -> ProviderResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.25
        while True:
            job = self.api.job(self.provider_job_id)
            status = status_of(job)
            if status.state is ProviderState.DONE:
                return self._result_of(job)
            if status.state in (ProviderState.FAILED, ProviderState.CANCELLED):
                raise PermanentProviderError(status.message or f"IonQ job {job.get('status')}")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"IonQ job {self.provider_job_id} is still {job.get('status')}")
            wait = pause if deadline is None else min(pause, deadline - time.monotonic())
            time.sleep(max(0.0, wait))
            pause = min(pause * 2, 2.0)

    def _result_of(self, job: dict[str, Any]) -> ProviderResult:
        raw = self.api.results(self.provider_job_id)
        shots = int(job.get("shots") or self._shots or 0)
        if shots <= 0:
            raise PermanentProviderError(f"IonQ job {self.provider_job_id} has no shot count")
        maps = self._measure_maps or measure_maps_from_metadata(job)
        children = [str(c) for c in job.get("children") or []]
        if raw and all(isinstance(v, dict) for v in raw.values()):
            # A multicircuit job: one histogram per child job, in circuit order.
            order = children or list(raw)
            missing = [c for c in order if c not in raw]
            if missing:
                raise PermanentProviderError(
                    f"IonQ job {self.provider_job_id}: no results for child job(s) "
                    f"{', '.join(missing)}"
                )
            histograms = [raw[c] for c in order]
        else:
            histograms = [raw]
        if maps is None:
            qubits = int(job.get("qubits") or 0)
            maps = [list(range(qubits))] * len(histograms)
        if len(maps) != len(histograms):
            raise PermanentProviderError(
                f"IonQ job {self.provider_job_id}: {len(histograms)} result(s) for "
                f"{len(maps)} circuit(s)"
            )
        counts = [histogram_to_counts(h, shots, m) for h, m in zip(histograms, maps, strict=True)]
        metadata = {
            "ionq_job_id": self.provider_job_id,
            "target": job.get("target"),
            "execution_time": job.get("execution_time"),
            "predicted_execution_time": job.get("predicted_execution_time"),
            "cost_usd": job.get("cost_usd"),
        }
        if children:
            metadata["ionq_child_job_ids"] = children
        if isinstance(job.get("execution_time"), int | float):
            # IonQ's own measure of the run (ms): the run phase, without our poll latency.
            metadata["run_seconds"] = job["execution_time"] / 1000
        return ProviderResult(
            counts=counts, metadata={k: v for k, v in metadata.items() if v is not None}
        )

    def cancel(self) -> None:
        self.api.cancel(self.provider_job_id)


def status_of(job: dict[str, Any]) -> ProviderStatus:
    """Our view of an IonQ job record (GET /jobs/{id})."""
    raw = str(job.get("status") or "").lower()
    state = IONQ_STATES.get(raw)
    extra = {
        k: job[k]
        for k in ("predicted_execution_time", "execution_time", "children")
        if job.get(k) is not None
    }
    extra["ionq_status"] = raw
    if state is None:
        return ProviderStatus(ProviderState.QUEUED, f"unknown IonQ status {raw!r}", extra=extra)
    message = None
    if state is ProviderState.FAILED:
        failure = job.get("failure") or {}
        code, error = failure.get("code"), failure.get("error")
        detail = ": ".join(str(p) for p in (code, error) if p) or "no reason given"
        message = f"IonQ job failed: {one_line(detail)}"
    elif state is ProviderState.CANCELLED:
        message = "cancelled at IonQ"
    return ProviderStatus(state, message, extra=extra)


# -- circuits in, counts out ------------------------------------------------------------------


class IonQProgram:
    """One circuit as IonQ's QIS JSON, with the measure map to decode its results: for each
    classical bit (index 0 first), the qubit measured into it, or -1 if none is."""

    def __init__(
        self,
        qubits: int,
        gates: list[dict[str, Any]],
        measure_map: list[int],
        name: str | None = None,
    ) -> None:
        self.qubits = qubits
        self.gates = gates
        self.measure_map = measure_map
        self.name = name


def to_ionq_program(circuit: QuantumCircuit) -> IonQProgram:
    """Transpile to IonQ's QIS gates and convert; measurements must come last."""
    if circuit.num_clbits == 0:
        circuit = circuit.measure_all(inplace=False)
    ops = set(circuit.count_ops())
    unsupported = sorted(ops & _NOT_RUNNABLE)
    if unsupported:
        raise InvalidCircuit(
            f"circuit {circuit.name!r}: IonQ cannot run {', '.join(unsupported)} (no resets, "
            "mid-circuit measurements or classical control)"
        )
    if not ops <= set(QIS_GATES) | _SKIPPED | {"measure"}:
        from qiskit import transpile

        from ..circuits import _QISKIT_LOCK  # Qiskit's native code is unsafe across threads

        try:
            with _QISKIT_LOCK:
                circuit = transpile(
                    circuit, basis_gates=[*QIS_GATES, "measure"], optimization_level=0
                )
        except Exception as exc:
            raise InvalidCircuit(
                f"circuit {circuit.name!r} cannot be expressed in IonQ's gates: {one_line(exc)}"
            ) from None
    measure_map = [-1] * circuit.num_clbits
    measured: set[int] = set()
    gates: list[dict[str, Any]] = []
    for instruction in circuit.data:
        op = instruction.operation
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        if op.name == "measure":
            clbit = circuit.find_bit(instruction.clbits[0]).index
            measure_map[clbit] = qubits[0]
            measured.add(qubits[0])
            continue
        if op.name in _SKIPPED:
            continue
        if op.name not in QIS_GATES:
            raise InvalidCircuit(
                f"circuit {circuit.name!r}: IonQ cannot run {op.name!r} (no resets, mid-circuit "
                "measurements or classical control)"
            )
        if measured.intersection(qubits):
            raise InvalidCircuit(
                f"circuit {circuit.name!r}: IonQ measures every qubit at the end; a {op.name!r} "
                "after a measurement cannot run there"
            )
        gate: dict[str, Any] = {"gate": QIS_GATES[op.name]}
        if op.name == "cx":
            gate["control"], gate["target"] = qubits
        elif op.name == "swap":
            gate["targets"] = qubits
        else:
            gate["target"] = qubits[0]
        if op.name in _ROTATIONS:
            try:
                gate["rotation"] = float(op.params[0])
            except TypeError:
                raise InvalidCircuit(
                    f"circuit {circuit.name!r} has unbound parameters; bind them first"
                ) from None
        gates.append(gate)
    return IonQProgram(circuit.num_qubits, gates, measure_map, circuit.name)


def job_body(
    programs: Sequence[IonQProgram], target: str, shots: int, options: dict[str, Any]
) -> dict[str, Any]:
    """The POST /jobs body: one circuit, or a multicircuit job for several."""
    job_id = str(options.get("job_id") or "")
    metadata = {META_CLBITS: encode_measure_maps([p.measure_map for p in programs])}
    if job_id:
        metadata[META_JOB_ID] = job_id
    tags = options.get("tags") or {}
    if tags:
        text = json.dumps(tags, sort_keys=True, separators=(",", ":"))
        if len(text) <= 400:  # IonQ's example limit for a metadata value
            metadata[META_TAGS] = text
    body: dict[str, Any] = {
        "target": target,
        "shots": int(shots),
        "name": f"qmlops {job_id}".strip(),
        "metadata": metadata,
    }
    if len(programs) == 1:
        body["input"] = {
            "format": "ionq.circuit.v0",
            "gateset": "qis",
            "qubits": programs[0].qubits,
            "circuit": programs[0].gates,
        }
    else:
        body["input"] = {
            "format": "ionq.circuit.v0",
            "gateset": "qis",
            "qubits": max(p.qubits for p in programs),
            "circuits": [{"name": f"{i}", "circuit": p.gates} for i, p in enumerate(programs)],
        }
    return body


def encode_measure_maps(maps: Sequence[Sequence[int]]) -> str:
    """Compact text for IonQ's string-only metadata: ``;`` between circuits; ``=n`` for the
    usual ``clbit i <- qubit i`` of n bits, otherwise the qubit of each clbit (-1: none)."""
    parts = []
    for m in maps:
        if list(m) == list(range(len(m))):
            parts.append(f"={len(m)}")
        else:
            parts.append(",".join(str(q) for q in m))
    return ";".join(parts)


def decode_measure_maps(text: str) -> list[list[int]]:
    maps: list[list[int]] = []
    for part in text.split(";"):
        if part.startswith("="):
            maps.append(list(range(int(part[1:]))))
        elif part:
            maps.append([int(q) for q in part.split(",")])
        else:
            maps.append([])
    return maps


def measure_maps_from_metadata(job: dict[str, Any]) -> list[list[int]] | None:
    text = (job.get("metadata") or {}).get(META_CLBITS)
    if not isinstance(text, str):
        return None
    try:
        return decode_measure_maps(text)
    except ValueError:
        return None


def histogram_to_counts(
    histogram: dict[str, Any], shots: int, measure_map: Sequence[int]
) -> dict[str, int]:
    """IonQ's histogram (qubit-state integers as strings, qubit 0 the least significant bit;
    probabilities) to counts per classical-bit string in Qiskit's order (bit 0 rightmost).

    Probabilities become whole counts summing to ``shots`` exactly (largest remainder),
    before qubit states are folded onto the classical bits."""
    states = largest_remainder({int(k): float(v) for k, v in histogram.items()}, shots)
    counts: dict[str, int] = {}
    width = len(measure_map)
    for state, n in states.items():
        if not n:
            continue
        bits = ["1" if q >= 0 and (state >> q) & 1 else "0" for q in measure_map]
        key = "".join(reversed(bits)) if width else ""
        counts[key] = counts.get(key, 0) + n
    return counts


def largest_remainder(probabilities: dict[int, float], shots: int) -> dict[int, int]:
    """Whole counts proportional to ``probabilities`` that sum to ``shots``."""
    total = sum(p for p in probabilities.values() if p > 0)
    if total <= 0:
        return {}
    exact = {k: shots * p / total for k, p in probabilities.items() if p > 0}
    counts = {k: math.floor(v) for k, v in exact.items()}
    short = shots - sum(counts.values())
    by_remainder = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[:short]:
        counts[k] += 1
    return counts


def _target_of(name: str, device: str | None) -> str:
    if not device or device == "simulator":
        return "simulator"
    if device.startswith("qpu.") and len(device) > 4:
        return device
    raise UnknownBackend(
        f"unknown backend {name!r}: IonQ targets are ionq:simulator and ionq:qpu.<name> "
        "(for example ionq:qpu.aria-1)"
    )
