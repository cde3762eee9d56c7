"""``braket`` and ``braket_local``: Amazon Braket, on amazon-braket-sdk.

- ``braket_local`` (state vector, ``LocalSimulator("braket_sv")``) and ``braket_local:dm``
  (density matrix, ``braket_dm``) run on this machine, free and offline.
- ``braket:<device ARN>`` runs on an AWS device: the managed simulators (aliases
  ``braket:sv1``, ``braket:tn1``, ``braket:dm1``) and the QPUs behind Braket (IonQ, Rigetti,
  IQM ...), by ARN. One Braket quantum task per circuit; the job's provider id is the task
  ARN, or the ARNs of a batch joined by commas, and :meth:`BraketBackend.attach` rebuilds
  every ``AwsQuantumTask`` from it in any process.

Circuits go through :mod:`qmlops_jupyter.interop.braket` (Braket's own gate classes, no gate
modifiers) and counts come back in Qiskit's bit order, whatever Braket measured.

The AWS session is built by :meth:`BraketBackend.make_session`, or by an injectable factory
(``session_factory`` class attribute, or ``session_factory: "module:callable"`` in the
backend's backends.yaml options): the offline tests install botocore ``Stubber``s that way.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import (
    AmbiguousProviderError,
    AuthProviderError,
    InvalidCircuit,
    InvalidRequest,
    MissingBackendDependency,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    UnknownBackend,
    one_line,
)
from ..interop.braket import QPU_BASIS, SIMULATOR_BASIS, BraketProgram, translate
from .base import Backend, Capabilities, JobHandle, ProviderResult, ProviderState, ProviderStatus
from .workers import WorkerHandle, WorkerPool

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from ..models import CircuitInfo

INSTALL_HINT = "install it with: pip install 'qmlops-jupyter[braket]'"

#: Braket quantum task states -> ours. CANCELLING is still in flight: keep polling.
BRAKET_STATES: dict[str, ProviderState] = {
    "CREATED": ProviderState.QUEUED,
    "QUEUED": ProviderState.QUEUED,
    "RUNNING": ProviderState.RUNNING,
    "COMPLETED": ProviderState.DONE,
    "FAILED": ProviderState.FAILED,
    "CANCELLING": ProviderState.QUEUED,
    "CANCELLED": ProviderState.CANCELLED,
}

#: LocalQuantumTask states of the local simulator (it runs to the end when started).
LOCAL_STATES: dict[str, ProviderState] = {
    "CREATED": ProviderState.QUEUED,
    "RUNNING": ProviderState.RUNNING,
    "COMPLETED": ProviderState.DONE,
    "FAILED": ProviderState.FAILED,
    "CANCELLED": ProviderState.CANCELLED,
}

SIMULATOR_ARNS: dict[str, str] = {
    "sv1": "arn:aws:braket:::device/quantum-simulator/amazon/sv1",
    "tn1": "arn:aws:braket:::device/quantum-simulator/amazon/tn1",
    "dm1": "arn:aws:braket:::device/quantum-simulator/amazon/dm1",
}
#: Widest circuits of the managed simulators (Braket's documented limits).
SIMULATOR_QUBITS: dict[str, int] = {"sv1": 34, "tn1": 50, "dm1": 17}

LOCAL_DEVICES: dict[str | None, tuple[str, int, str]] = {
    None: ("braket_sv", 26, "state vector"),
    "sv": ("braket_sv", 26, "state vector"),
    "dm": ("braket_dm", 13, "density matrix"),
}

#: Error codes of the Braket and S3 APIs, by what the engine should do about them.
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServiceException",
        "InternalServerException",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "SlowDown",
        "RequestTimeout",
        "ServiceQuotaExceededException",
        "DeviceOfflineException",
    }
)

#: One job is one quantum task per circuit; its provider id is the first task ARN (~88
#: characters) and 37 more per further task (see :func:`join_arns`). A thousand tasks is far
#: past what Braket queues at once for one account, so no real batch meets this bound.
PROVIDER_ID_LIMIT = 37_100
MAX_TASKS_PER_JOB = 1 + (PROVIDER_ID_LIMIT - 90) // 37

_ARN_DEVICE = re.compile(r"^arn:aws[\w-]*:braket:[\w-]*:\d*:device/.+$")
_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
_TAG_TEXT = re.compile(r"^[\w .:/=+\-@]*$")


def _sdk() -> Any:
    try:
        import braket.aws as aws
    except ImportError:
        raise MissingBackendDependency(
            f"backend 'braket' needs amazon-braket-sdk; {INSTALL_HINT}"
        ) from None
    return aws


def scrub(text: object) -> str:
    """One line, with any AWS secret of this process (and anything shaped like an access key
    id) replaced by ``***``."""
    message = one_line(text)
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(var)
        if value and len(value) >= 8:
            message = message.replace(value, "***")
    return _ACCESS_KEY.sub("***", message)


def provider_error(exc: BaseException, *, during: str) -> ProviderError:
    """Map a botocore/Braket SDK exception to a ProviderError kind.

    A connection that broke after the request may have been sent, while creating a quantum
    task, leaves its outcome unknown: ambiguous (the driver re-runs simulators anyway).
    """
    from botocore import exceptions as bx

    if isinstance(exc, ProviderError):
        return exc
    what = f"Braket {during} failed"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        message = scrub(f"{what}: {code}: {error.get('Message', '')}")
        if code in AUTH_CODES or status in (401, 403):
            return AuthProviderError(message)
        if code in TRANSIENT_CODES or status == 429 or status >= 500:
            return TransientProviderError(message)
        return PermanentProviderError(message)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.NoRegionError):
        return AuthProviderError(
            scrub(f"{what}: {exc} (set the AWS credentials; see docs/backends/braket.md)")
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        # Never connected: nothing was sent.
        return TransientProviderError(scrub(f"{what}: {exc}"))
    if isinstance(
        exc,
        bx.ReadTimeoutError
        | bx.ConnectionClosedError
        | bx.HTTPClientError
        | ConnectionError
        | TimeoutError,
    ):
        if during == "submit":
            return AmbiguousProviderError(
                scrub(
                    f"{what}: the connection broke before the reply ({type(exc).__name__}); "
                    "the quantum task may or may not exist"
                )
            )
        return TransientProviderError(scrub(f"{what}: {exc}"))
    if isinstance(exc, ValueError | TypeError):
        return PermanentProviderError(scrub(f"{what}: {exc}"))
    return PermanentProviderError(scrub(f"{what}: {type(exc).__name__}: {exc}"))


def _load_factory(spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UnknownBackend(f"session_factory must be 'module:callable', not {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"session_factory {spec!r} cannot be loaded: {exc}") from None


def _tags(
    options: dict[str, Any], index: int, count: int, program: BraketProgram
) -> dict[str, str]:
    """Braket task tags: our job id, the circuit's place in the job, the qubit each classical
    bit reads (so a re-attach in another process rebuilds Qiskit's bit order), and the user's
    tags that are valid AWS tags (others are left out: tags are metadata, not worth a
    refusal)."""
    tags: dict[str, str] = {}
    if options.get("job_id"):
        tags["qmlops:job_id"] = str(options["job_id"])
    if count > 1:
        tags["qmlops:circuit"] = f"{index}/{count}"
    encoded = encode_clbits(program.clbit_qubits)
    for part in range(0, max(1, len(encoded)), 256):
        key = CLBITS_TAG if not part else f"{CLBITS_TAG}:{part // 256}"
        tags[key] = encoded[part : part + 256]
    for key, value in (options.get("tags") or {}).items():
        key, value = str(key), str(value)
        if (
            0 < len(key) <= 128
            and len(value) <= 256
            and not key.startswith("aws:")
            and _TAG_TEXT.match(key)
            and _TAG_TEXT.match(value)
        ):
            tags.setdefault(key, value)
    return dict(list(tags.items())[:50])


CLBITS_TAG = "qmlops:clbits"


def encode_clbits(clbit_qubits: Sequence[int | None]) -> str:
    """The qubit each classical bit reads, as an AWS tag value: ``0-4 x 7`` says bits 0-4
    read qubits 0-4, bit 5 reads nothing, bit 6 reads qubit 7 (runs of consecutive qubits
    are folded; tag values allow letters, digits, spaces and ``_.:/=+-@``)."""
    parts: list[str] = []
    i = 0
    while i < len(clbit_qubits):
        q = clbit_qubits[i]
        if q is None:
            parts.append("x")
            i += 1
            continue
        j = i
        while j + 1 < len(clbit_qubits) and clbit_qubits[j + 1] == clbit_qubits[j] + 1:
            j += 1
        parts.append(str(q) if j == i else f"{q}-{clbit_qubits[j]}")
        i = j + 1
    return " ".join(parts)


def decode_clbits(text: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in text.split():
        if part == "x":
            out.append(None)
        elif "-" in part:
            first, last = (int(v) for v in part.split("-", 1))
            out.extend(range(first, last + 1))
        else:
            out.append(int(part))
    return tuple(out)


def clbits_from_tags(tags: dict[str, str]) -> tuple[int | None, ...] | None:
    if CLBITS_TAG not in tags:
        return None
    parts = [tags[CLBITS_TAG]]
    k = 1
    while f"{CLBITS_TAG}:{k}" in tags:
        parts.append(tags[f"{CLBITS_TAG}:{k}"])
        k += 1
    return decode_clbits("".join(parts))


def join_arns(arns: Sequence[str]) -> str:
    """The provider job id of a batch: the first task ARN in full, then only the task ids of
    the others (they share its ``arn:aws:braket:<region>:<account>:quantum-task/`` prefix),
    comma-separated; a lone task's id is its ARN."""
    if not arns:
        return ""
    prefix = arns[0].rsplit("/", 1)[0] + "/"
    rest = [a[len(prefix) :] if a.startswith(prefix) else a for a in arns[1:]]
    return ",".join([arns[0], *rest])


def split_arns(provider_job_id: str) -> list[str]:
    parts = [p.strip() for p in provider_job_id.split(",") if p.strip()]
    if not parts or not parts[0].startswith("arn:") or "/" not in parts[0]:
        raise PermanentProviderError(
            f"not a Braket quantum task ARN (or a batch of them): {provider_job_id!r}"
        )
    prefix = parts[0].rsplit("/", 1)[0] + "/"
    return [parts[0], *[p if p.startswith("arn:") else prefix + p for p in parts[1:]]]


# -- AWS devices ---------------------------------------------------------------------------------


class BraketBackend(Backend):
    """An AWS Braket device, named ``braket:<ARN>`` or ``braket:sv1`` / ``tn1`` / ``dm1``.

    backends.yaml options: ``region``, ``profile``, ``s3_bucket``, ``s3_prefix``,
    ``session_factory`` ("module:callable" taking the backend, returning an ``AwsSession``),
    ``basis_gates`` (Qiskit names), ``poll_interval`` (s), ``connect_timeout``,
    ``read_timeout``, ``availability_timeout`` (s, default 1).
    """

    requires = ("braket",)
    extra = "braket"
    provider = "amazon-braket"
    description = "Amazon Braket device (managed simulator or QPU) by ARN"
    provider_states: ClassVar[dict[str, ProviderState]] = BRAKET_STATES
    #: Builds the ``AwsSession`` instead of :meth:`make_session` when set (tests install
    #: botocore Stubbers this way); takes the backend.
    session_factory: ClassVar[Callable[[BraketBackend], Any] | None] = None

    def __init__(self, name: str, config: Any = None, device: str | None = None) -> None:
        super().__init__(name, config, device)
        if not device:
            raise UnknownBackend(
                f"unknown backend {name!r}: name a device, as braket:sv1, braket:tn1, "
                "braket:dm1 or braket:<device ARN>"
            )
        alias = device.lower()
        if alias in SIMULATOR_ARNS:
            self.arn = SIMULATOR_ARNS[alias]
        elif _ARN_DEVICE.match(device):
            self.arn = device
        else:
            raise UnknownBackend(
                f"unknown backend {name!r}: braket takes sv1, tn1, dm1 or a device ARN "
                "(arn:aws:braket:<region>::device/...)"
            )
        self.is_simulator = "/quantum-simulator/" in self.arn
        self._session: Any = None
        #: Sessions built from stored credentials, by alias.
        self._vault_sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._availability: tuple[float, tuple[bool, str]] | None = None
        self._checking: threading.Thread | None = None

    @classmethod
    def listed_names(cls, plugin: str) -> list[str]:
        return [f"{plugin}:{alias}" for alias in SIMULATOR_ARNS]

    @property
    def options(self) -> dict[str, Any]:
        return self.config.options

    @property
    def device_region(self) -> str | None:
        """The region in the device ARN (QPUs live in one region); None for simulators."""
        return self.arn.split(":")[3] or None

    @property
    def region(self) -> str:
        return (
            self.device_region
            or self.options.get("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )

    @property
    def basis(self) -> tuple[str, ...]:
        configured = self.options.get("basis_gates")
        if configured:
            return tuple(configured)
        return SIMULATOR_BASIS if self.is_simulator else QPU_BASIS

    @property
    def capabilities(self) -> Capabilities:
        alias = self.arn.rsplit("/", 1)[-1] if self.is_simulator else None
        return Capabilities(
            provider=self.provider,
            simulator=self.is_simulator,
            local=False,
            max_qubits=SIMULATOR_QUBITS.get(alias or ""),
            native_gates=tuple(sorted(self.basis)),
            supports_reattach=True,
            supports_cancel=True,
        )

    def check(self, circuits: Sequence[CircuitInfo], shots: int) -> None:
        _check_ops(circuits)
        if len(circuits) > MAX_TASKS_PER_JOB:
            raise InvalidRequest(
                f"backend {self.name} runs one Braket quantum task per circuit and takes at "
                f"most {MAX_TASKS_PER_JOB} circuits per job; split the {len(circuits)} circuits "
                "into several jobs"
            )

    # -- credentials and session -------------------------------------------------------------

    def credential_status(self) -> str:
        """From the vault, the environment and files only (no network, no instance metadata)."""
        if self.has_stored_credential("aws"):
            return "configured"
        if self.session_factory is not None or self.options.get("session_factory"):
            return "configured"
        env = os.environ
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return "configured"
        profile = self.options.get("profile") or env.get("AWS_PROFILE")
        files = [
            Path(env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")),
            Path(env.get("AWS_CONFIG_FILE", "~/.aws/config")),
        ]
        for path in files:
            try:
                text = path.expanduser().read_text(encoding="utf-8")
            except OSError:
                continue
            wanted = profile or "default"
            if re.search(rf"^\[(profile )?{re.escape(wanted)}\]", text, re.MULTILINE):
                return "configured"
        return "missing"

    def make_session(self, credential: dict[str, str] | None = None) -> Any:
        """An ``AwsSession`` from the standard AWS credential chain (environment variables,
        ``profile`` option / AWS_PROFILE, shared files), in the device's region; or, given a
        stored credential's fields, from its keys (and its region, unless the device has one)."""
        aws = _sdk()
        import boto3
        from botocore.config import Config

        if credential:
            region = self.device_region or credential.get("region") or self.region
            boto = boto3.Session(
                aws_access_key_id=credential.get("aws_access_key_id"),
                aws_secret_access_key=credential.get("aws_secret_access_key"),
                aws_session_token=credential.get("aws_session_token") or None,
                region_name=region,
            )
        else:
            region = self.region
            boto = boto3.Session(profile_name=self.options.get("profile"), region_name=region)
        client_config = Config(
            connect_timeout=float(self.options.get("connect_timeout", 10)),
            read_timeout=float(self.options.get("read_timeout", 60)),
            # Retries inside botocore reuse create_quantum_task's clientToken: idempotent.
            retries={"mode": "standard", "max_attempts": 3},
        )
        braket_client = boto.client("braket", region_name=region, config=client_config)
        return aws.AwsSession(
            boto_session=boto,
            braket_client=braket_client,
            default_bucket=self.options.get("s3_bucket"),
        )

    def session(self, options: dict[str, Any] | None = None) -> Any:
        """The AWS session; for a job naming a stored credential, one made from it (per alias)."""
        alias = str((options or {}).get("credential") or "")
        if alias:
            return self._vault_session(alias, options or {})
        with self._lock:
            if self._session is None:
                factory = type(self).session_factory
                if factory is None and self.options.get("session_factory"):
                    factory = _load_factory(str(self.options["session_factory"]))
                try:
                    self._session = factory(self) if factory else self.make_session()
                except (ProviderError, MissingBackendDependency, UnknownBackend):
                    raise
                except Exception as exc:
                    raise provider_error(exc, during="session setup") from None
            return self._session

    def _vault_session(self, alias: str, options: dict[str, Any]) -> Any:
        from ..vault import credential_fields

        # Aliases are per owner: one engine serves several owners' same-named credentials.
        key = f"{options.get('owner') or ''}\0{alias}"
        with self._lock:
            cached = self._vault_sessions.get(key)
            if cached is not None:
                return cached
            fields = credential_fields(options, "aws")
            try:
                session = self.make_session(fields)
            except (ProviderError, MissingBackendDependency, UnknownBackend):
                raise
            except Exception as exc:
                raise provider_error(exc, during="session setup") from None
            self._vault_sessions[key] = session
            return session

    def s3_destination(self, session: Any) -> tuple[str, str]:
        bucket = self.options.get("s3_bucket")
        if not bucket:
            try:
                bucket = session.default_bucket()  # amazon-braket-<region>-<account>
            except Exception as exc:
                raise provider_error(exc, during="finding the default S3 bucket") from None
        prefix = str(self.options.get("s3_prefix", "qmlops")).strip("/") or "qmlops"
        return bucket, prefix

    # -- jobs -----------------------------------------------------------------------------------

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        started = time.perf_counter()
        programs = [_translate(c, self.basis) for c in circuits]
        phases = {"transpile": time.perf_counter() - started}
        aws = _sdk()
        session = self.session(options)
        destination = aws.AwsSession.S3DestinationFolder(*self.s3_destination(session))
        tasks: list[Any] = []
        for index, program in enumerate(programs):
            try:
                task = aws.AwsQuantumTask.create(
                    session,
                    self.arn,
                    program.circuit,
                    destination,
                    shots,
                    tags=_tags(options, index, len(programs), program),
                    quiet=True,
                )
            except Exception as exc:
                error = provider_error(exc, during="submit")
                self._cancel_quietly(tasks)
                if tasks and isinstance(error, AmbiguousProviderError | TransientProviderError):
                    # Part of the batch exists: never resubmit the whole of it blindly.
                    created = ",".join(t.id for t in tasks)
                    raise AmbiguousProviderError(
                        f"{error} (after creating {len(tasks)} of {len(programs)} tasks, "
                        f"cancelled: {created})"
                    ) from None
                raise error from None
            tasks.append(task)
        return BraketTaskHandle(self, tasks, programs, phases)

    def attach(self, provider_job_id: str, options: dict[str, Any] | None = None) -> JobHandle:
        aws = _sdk()
        arns = split_arns(provider_job_id)
        session = self.session(options)
        tasks = [aws.AwsQuantumTask(arn, session, quiet=True) for arn in arns]
        return BraketTaskHandle(self, tasks, None, {})

    def _cancel_quietly(self, tasks: Sequence[Any]) -> None:
        for task in tasks:
            with contextlib.suppress(Exception):
                task.cancel()

    # -- availability ---------------------------------------------------------------------------

    def availability(self) -> tuple[bool, str]:
        """Device status and execution windows from GetDevice, cached for five minutes. The
        call runs in the background: a listing never waits more than ``availability_timeout``
        (default 1 s); without credentials nothing is asked at all."""
        cached = self._availability
        if cached is not None and time.monotonic() - cached[0] < 300:
            return cached[1]
        if self.credential_status() == "missing":
            return True, "unknown: not checked (no AWS credentials)"
        with self._lock:
            if self._checking is None or not self._checking.is_alive():
                self._checking = threading.Thread(
                    target=self._check_device, daemon=True, name=f"braket-availability-{self.name}"
                )
                self._checking.start()
            checking = self._checking
        checking.join(float(self.options.get("availability_timeout", 1.0)))
        cached = self._availability
        if cached is not None:
            return cached[1]
        return True, "unknown: not checked (device status not known yet)"

    def _check_device(self) -> None:
        try:
            answer = device_availability(_sdk().AwsDevice(self.arn, self.session()))
        except Exception as exc:
            answer = (True, f"unknown: {provider_error(exc, during='GetDevice')}")
        self._availability = (time.monotonic(), answer)


def device_availability(device: Any) -> tuple[bool, str]:
    """(available, why) from an ``AwsDevice``: its status, and its execution windows."""
    status = str(device.status or "UNKNOWN")
    if status != "ONLINE":
        return False, status
    windows = list(
        getattr(getattr(device.properties, "service", None), "executionWindows", None) or []
    )
    text = ", ".join(
        f"{getattr(w.executionDay, 'value', w.executionDay)} "
        f"{w.windowStartHour:%H:%M}-{w.windowEndHour:%H:%M} UTC"
        for w in windows
    )
    if device.is_available:
        return True, f"ONLINE (execution windows: {text})" if text else "ONLINE"
    return False, f"ONLINE but outside its execution windows ({text})"


class BraketTaskHandle(JobHandle):
    """One Braket quantum task per circuit; rebuilt from the comma-joined task ARNs."""

    def __init__(
        self,
        backend: BraketBackend,
        tasks: list[Any],
        programs: list[BraketProgram] | None,
        phases: dict[str, float],
    ) -> None:
        self._backend = backend
        self._tasks = tasks
        self._programs = programs
        self.provider_job_id = join_arns([t.id for t in tasks])
        self.phases = phases

    def _metadata(self) -> list[dict[str, Any]]:
        out = []
        for task in self._tasks:
            try:
                out.append(task.metadata())
            except Exception as exc:
                raise provider_error(exc, during="GetQuantumTask") from None
        return out

    def status(self) -> ProviderStatus:
        metadata = self._metadata()
        states = [str(m.get("status", "")) for m in metadata]
        mapped = [BRAKET_STATES.get(s, ProviderState.QUEUED) for s in states]
        extra = {"braket_states": states}
        ended = (ProviderState.FAILED, ProviderState.CANCELLED)
        if any(s in ended for s in mapped):
            # The job has ended: stop the batch's other tasks from running (and costing).
            self._backend._cancel_quietly(
                [
                    t
                    for t, s in zip(self._tasks, states, strict=True)
                    if s in ("CREATED", "QUEUED", "RUNNING")
                ]
            )
        if ProviderState.FAILED in mapped:
            reasons = [
                m.get("failureReason") or "no reason given"
                for m, s in zip(metadata, mapped, strict=True)
                if s is ProviderState.FAILED
            ]
            return ProviderStatus(
                ProviderState.FAILED,
                scrub("Braket quantum task failed: " + "; ".join(reasons)),
                extra=extra,
            )
        if ProviderState.CANCELLED in mapped:
            return ProviderStatus(
                ProviderState.CANCELLED, "cancelled at Amazon Braket", extra=extra
            )
        if all(s is ProviderState.DONE for s in mapped):
            return ProviderStatus(ProviderState.DONE, extra=extra)
        if any(s in (ProviderState.RUNNING, ProviderState.DONE) for s in mapped):
            return ProviderStatus(ProviderState.RUNNING, extra=extra)
        position = None
        for m in metadata:
            raw = (m.get("queueInfo") or {}).get("position")
            if raw not in (None, "None"):
                extra["queue_position"] = raw
                with contextlib.suppress(ValueError):
                    position = int(raw)
                break
        return ProviderStatus(ProviderState.QUEUED, queue_position=position, extra=extra)

    def result(self, timeout: float | None = None) -> ProviderResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = float(self._backend.options.get("poll_interval", 1.0))
        while True:
            status = self.status()
            if status.state is ProviderState.DONE:
                break
            if status.state in (ProviderState.FAILED, ProviderState.CANCELLED):
                raise PermanentProviderError(status.message or "the Braket task did not finish")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the Braket quantum tasks have not finished yet")
            wait = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, wait))
        counts = []
        metadata: dict[str, Any] = {
            "task_arns": [t.id for t in self._tasks],
            "device_arn": self._backend.arn,
        }
        for index, task in enumerate(self._tasks):
            try:
                result = task.result()
            except Exception as exc:
                raise provider_error(exc, during="result download") from None
            if result is None:
                raise PermanentProviderError(f"Braket task {task.id} has no result")
            counts.append(_counts(result, self._program(index, result)))
        return ProviderResult(counts=counts, metadata=metadata)

    def _program(self, index: int, result: Any) -> BraketProgram:
        if self._programs is not None:
            return self._programs[index]
        # Re-attached: the measurement map travelled in the task's tags.
        tags = self._tasks[index].metadata(use_cached_value=True).get("tags") or {}
        clbits = clbits_from_tags(tags)
        if clbits is None:  # a task not created by qmlops: bit i reads qubit i
            qubits = [int(q) for q in result.measured_qubits]
            clbits = tuple(range(max(qubits) + 1)) if qubits else ()
        return BraketProgram(None, clbits, len(clbits))

    def cancel(self) -> None:
        for task in self._tasks:
            try:
                task.cancel()
            except Exception as exc:
                raise provider_error(exc, during="cancel") from None


def _counts(result: Any, program: BraketProgram) -> dict[str, int]:
    return program.counts(dict(result.measurement_counts), [int(q) for q in result.measured_qubits])


def _translate(circuit: QuantumCircuit, basis: Sequence[str]) -> BraketProgram:
    try:
        return translate(circuit, basis)
    except InvalidCircuit as exc:
        raise PermanentProviderError(str(exc)) from None


def _check_ops(circuits: Sequence[CircuitInfo]) -> None:
    for info in circuits:
        refused = {"if_else", "while_loop", "for_loop", "switch_case"} & set(info.gate_counts)
        if refused:
            raise InvalidCircuit(
                f"circuit {info.index} uses {sorted(refused)}: Braket runs no classical control"
            )


# -- the local simulator ---------------------------------------------------------------------


class BraketLocalBackend(Backend):
    """Braket's ``LocalSimulator`` on this machine: ``braket_local`` (state vector) and
    ``braket_local:dm`` (density matrix)."""

    requires = ("braket",)
    extra = "braket"
    provider = "amazon-braket-local"
    description = "Amazon Braket LocalSimulator on this machine (offline, free)"
    provider_states: ClassVar[dict[str, ProviderState]] = LOCAL_STATES

    def __init__(self, name: str, config: Any = None, device: str | None = None) -> None:
        super().__init__(name, config, device)
        key = device.lower() if device else None
        if key not in LOCAL_DEVICES:
            raise UnknownBackend(
                f"unknown backend {name!r}: braket_local takes no device, or 'dm' (density matrix)"
            )
        self.simulator_name, self._max_qubits, kind = LOCAL_DEVICES[key]
        self.description = f"Amazon Braket LocalSimulator, {kind} (offline, free)"
        self.workers = WorkerPool("Braket LocalSimulator", self.config.max_concurrent_jobs)

    @classmethod
    def listed_names(cls, plugin: str) -> list[str]:
        return [plugin, f"{plugin}:dm"]

    @cached_property
    def simulator(self) -> Any:
        try:
            from braket.devices import LocalSimulator
        except ImportError:
            raise MissingBackendDependency(
                f"backend 'braket_local' needs amazon-braket-sdk; {INSTALL_HINT}"
            ) from None
        return LocalSimulator(self.simulator_name)

    @cached_property
    def basis(self) -> tuple[str, ...]:
        configured = self.config.options.get("basis_gates")
        return tuple(configured) if configured else SIMULATOR_BASIS

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.provider,
            simulator=True,
            local=True,
            max_qubits=self._max_qubits,
            native_gates=tuple(sorted(self.basis)),
            supports_reattach=False,
            supports_cancel=True,
            statevector_memory=self.simulator_name == "braket_sv",
        )

    def check(self, circuits: Sequence[CircuitInfo], shots: int) -> None:
        _check_ops(circuits)

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        started = time.perf_counter()
        programs = [_translate(c, self.basis) for c in circuits]
        phases = {"transpile": time.perf_counter() - started}
        sources = [_openqasm(p) for p in programs]
        if options.get("isolate"):
            future = self.workers.submit(_run_local, self.simulator_name, sources, shots)
            simulator = self.simulator_name
            return WorkerHandle(
                self.workers, future, lambda raw: _local_result(raw, programs, simulator), phases
            )
        return LocalHandle(self.simulator_name, sources, programs, shots, phases)

    def close(self) -> None:
        self.workers.close()


def _openqasm(program: BraketProgram) -> str:
    from braket.circuits.serialization import IRType

    return program.circuit.to_ir(IRType.OPENQASM).source


def _run_local(simulator_name: str, sources: list[str], shots: int) -> list[dict[str, Any]]:
    """Run OpenQASM programs on the LocalSimulator; plain data back (picklable)."""
    from braket.devices import LocalSimulator
    from braket.ir.openqasm import Program

    device = LocalSimulator(simulator_name)
    out = []
    for source in sources:
        try:
            with warnings.catch_warnings():
                # The density-matrix simulator's advice to use the state vector one.
                warnings.filterwarnings("ignore", "You are running a noise-free circuit")
                result = device.run(Program(source=source), shots=shots).result()
        except MemoryError as exc:
            raise TransientProviderError(
                f"Braket LocalSimulator ran out of memory: {exc}"
            ) from None
        except Exception as exc:
            raise PermanentProviderError(
                f"Braket LocalSimulator refused the circuit: {one_line(exc)}"
            ) from None
        out.append(
            {
                "counts": dict(result.measurement_counts),
                "measured_qubits": [int(q) for q in result.measured_qubits],
            }
        )
    return out


def _local_result(
    raw: list[dict[str, Any]], programs: list[BraketProgram], simulator_name: str
) -> ProviderResult:
    counts = [
        p.counts(r["counts"], r["measured_qubits"]) for p, r in zip(programs, raw, strict=True)
    ]
    return ProviderResult(counts=counts, metadata={"simulator": simulator_name})


class LocalHandle(JobHandle):
    """A LocalSimulator run in this process, started when first waited on (like Aer's)."""

    def __init__(
        self,
        simulator_name: str,
        sources: list[str],
        programs: list[BraketProgram],
        shots: int,
        phases: dict[str, float],
    ) -> None:
        self._simulator_name = simulator_name
        self._sources = sources
        self._programs = programs
        self._shots = shots
        self._result: ProviderResult | None = None
        self._error: ProviderError | None = None
        self._cancelled = False
        self.provider_job_id = None
        self.phases = phases

    def status(self) -> ProviderStatus:
        if self._cancelled:
            return ProviderStatus(ProviderState.CANCELLED)
        if self._error is not None:
            return ProviderStatus(ProviderState.FAILED, str(self._error))
        if self._result is None:
            with contextlib.suppress(ProviderError):
                self.result()
        if self._error is not None:
            return ProviderStatus(ProviderState.FAILED, str(self._error))
        return ProviderStatus(ProviderState.DONE)

    def result(self, timeout: float | None = None) -> ProviderResult:
        if self._cancelled:
            raise PermanentProviderError("the Braket LocalSimulator job was cancelled")
        if self._error is not None:
            raise self._error
        if self._result is None:
            try:
                raw = _run_local(self._simulator_name, self._sources, self._shots)
            except ProviderError as exc:
                self._error = exc
                raise
            self._result = _local_result(raw, self._programs, self._simulator_name)
        return self._result

    def cancel(self) -> None:
        self._cancelled = True
