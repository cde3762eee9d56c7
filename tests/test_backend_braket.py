"""The ``braket_local`` and ``braket`` backends.

How Braket is reached offline:

- ``braket_local`` / ``braket_local:dm``: the SDK's own ``LocalSimulator`` (real execution).
- ``braket:<device>``: real boto3 Braket and S3 clients answered by botocore ``Stubber``s
  (``tests/braket_stubs.py``): either a fixed, strictly ordered script of responses with the
  exact request parameters expected (as the Braket SDK's own tests do), or a small stateful
  fake service behind the stubbers that runs each program on Braket's own simulator and serves
  its ``GateModelTaskResult`` from the fake S3 bucket. No request leaves the machine.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import boto3
import braket_stubs
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from braket.aws import AwsSession
from braket.ir.openqasm import Program
from braket.task_result import (
    AdditionalMetadata,
    GateModelTaskResult,
    TaskMetadata,
)
from braket_stubs import FakeBraket
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit_aer import AerSimulator

from qmlops_jupyter.backends.base import ProviderState
from qmlops_jupyter.backends.braket import (
    BRAKET_STATES,
    MAX_TASKS_PER_JOB,
    PROVIDER_ID_LIMIT,
    SIMULATOR_ARNS,
    BraketBackend,
    BraketLocalBackend,
    decode_clbits,
    encode_clbits,
    join_arns,
    split_arns,
)
from qmlops_jupyter.client import Client
from qmlops_jupyter.config import BackendConfig
from qmlops_jupyter.errors import (
    AmbiguousProviderError,
    AuthProviderError,
    InvalidRequest,
    PermanentProviderError,
    TransientProviderError,
    UnknownBackend,
)
from qmlops_jupyter.testing.conformance import BackendConformance, ConformanceEnv, ErrorCase

SV1 = SIMULATOR_ARNS["sv1"]
IONQ = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"
TASK = "arn:aws:braket:us-east-1:123456789012:quantum-task/5e0c4b3a-0000-4000-8000-000000000001"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = braket_stubs.fake_aws_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env) -> FakeBraket:
    path = tmp_path / "braket-state.json"
    monkeypatch.setenv(braket_stubs.STATE_ENV, str(path))
    return FakeBraket(path)


def remote(device: str = "sv1", **options) -> BraketBackend:
    opts = {
        "session_factory": "braket_stubs:session_factory",
        "s3_bucket": braket_stubs.BUCKET,
        "poll_interval": 0.01,
        **options,
    }
    return BraketBackend(f"braket:{device}", BackendConfig(options=opts), device=device)


def partial_circuit() -> QuantumCircuit:
    """x on qubits 0 and 3; clbit 0 <- qubit 3, clbit 2 <- qubit 1, clbit 1 never written."""
    qc = QuantumCircuit(QuantumRegister(4), ClassicalRegister(3))
    qc.x([0, 3])
    qc.measure(3, 0)
    qc.measure(1, 2)
    return qc


def aer_counts(circuits, shots: int) -> list[dict[str, int]]:
    sim = AerSimulator()
    prepared = [c if c.num_clbits else c.measure_all(inplace=False) for c in circuits]
    result = sim.run(transpile(prepared, sim), shots=shots, seed_simulator=5).result()
    return [
        {k.replace(" ", ""): v for k, v in result.get_counts(i).items()}
        for i in range(len(prepared))
    ]


def tvd(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


# -- names, kinds, helpers ---------------------------------------------------------------------


def test_names_and_kinds() -> None:
    """No SDK call: names resolve to devices and kinds."""
    local = BraketLocalBackend("braket_local")
    dm = BraketLocalBackend("braket_local:dm", device="dm")
    assert (local.simulator_name, dm.simulator_name) == ("braket_sv", "braket_dm")
    assert local.capabilities.local and not local.capabilities.supports_reattach
    assert BraketLocalBackend.listed_names("braket_local") == ["braket_local", "braket_local:dm"]
    assert BraketBackend.listed_names("braket") == ["braket:sv1", "braket:tn1", "braket:dm1"]
    sv1 = BraketBackend("braket:sv1", device="sv1")
    assert sv1.arn == SV1 and sv1.capabilities.simulator and sv1.capabilities.max_qubits == 34
    assert sv1.capabilities.supports_reattach and not sv1.capabilities.local
    qpu = BraketBackend(f"braket:{IONQ}", device=IONQ)
    assert not qpu.capabilities.simulator and qpu.region == "us-east-1"
    assert "cx" in qpu.capabilities.native_gates and "ccx" not in qpu.capabilities.native_gates
    for bad in (None, "sv2", "arn:aws:s3:::bucket"):
        with pytest.raises(UnknownBackend):
            BraketBackend(f"braket:{bad}", device=bad)
    with pytest.raises(UnknownBackend):
        BraketLocalBackend("braket_local:gpu", device="gpu")


def test_state_map_covers_every_braket_state() -> None:
    assert set(BRAKET_STATES) == {
        "CREATED",
        "QUEUED",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLING",
        "CANCELLED",
    }
    assert BRAKET_STATES["COMPLETED"] is ProviderState.DONE
    assert BRAKET_STATES["CANCELLED"] is ProviderState.CANCELLED
    assert BraketBackend.provider_states is BRAKET_STATES


def test_clbit_tags_and_batch_ids_round_trip() -> None:
    for clbits in [(0, 1, 2, 3), (3, None, 1), (), (5,), (0, 1, 5, 6, 7, None, None, 2)]:
        assert decode_clbits(encode_clbits(clbits)) == clbits
    assert encode_clbits((0, 1, 2, 3, None, 7)) == "0-3 x 7"
    arns = [TASK, TASK[:-1] + "2", TASK[:-1] + "3"]
    joined = join_arns(arns)
    assert split_arns(joined) == arns and len(joined) < 90 + 2 * 37
    with pytest.raises(PermanentProviderError):
        split_arns("not-an-arn")
    # The most tasks a job may have still fit the ledger's provider id column.
    longest = "arn:aws:braket:ap-southeast-2:123456789012:quantum-task/" + "f" * 36
    ids = [longest[:-4] + f"{i:04d}" for i in range(MAX_TASKS_PER_JOB)]  # task ids: fixed width
    assert len(join_arns(ids)) <= PROVIDER_ID_LIMIT


def test_too_many_circuits_for_one_job_are_refused_before_submission(fake) -> None:
    from qmlops_jupyter.circuits import prepare

    backend = remote()
    infos = prepare([partial_circuit()] * (MAX_TASKS_PER_JOB + 1)).infos
    with pytest.raises(InvalidRequest, match="split"):
        backend.validate(infos, 10)
    backend.validate(infos[:MAX_TASKS_PER_JOB], 10)
    assert fake.submissions() == 0


# -- the local simulator -----------------------------------------------------------------------


def test_local_counts_agree_with_aer() -> None:
    """LocalSimulator: dominant outcomes and distributions match Aer, in Qiskit's bit order,
    partial and permuted measurements included."""
    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    ghz = QuantumCircuit(5)
    ghz.h(0)
    for q in range(4):
        ghz.cx(q, q + 1)
    ghz.x(2)
    circuits = [bell, ghz, partial_circuit()]
    for name in ("braket_local", "braket_local:dm"):
        device = name.partition(":")[2] or None
        backend = BraketLocalBackend(name, device=device)
        ours = backend.submit(circuits, 2000, {}).result().counts
        theirs = aer_counts(circuits, 2000)
        assert ours[2] == {"001": 2000}  # clbit 0 <- qubit 3 (1), clbit 2 <- qubit 1 (0)
        assert set(ours[1]) == {"00100", "11011"}
        for a, b in zip(ours, theirs, strict=True):
            assert tvd(a, b) < 0.06, (a, b)


def test_every_standard_gate_sampled_like_aer() -> None:
    """One braket_local job with a circuit per Qiskit standard gate (after an entangling
    preparation) samples the same distributions as Aer."""
    circuits = []
    for name, template in sorted(get_standard_gate_name_mapping().items()):
        if name in {"measure", "reset", "delay", "global_phase", "barrier"}:
            continue
        gate = type(template)(*[0.3 + 0.4 * i for i in range(len(template.params))])
        n = gate.num_qubits + 1
        qc = QuantumCircuit(n, name=name)
        for q in range(n):
            qc.ry(0.5 + 0.35 * q, q)
        qc.cx(0, n - 1)
        qc.append(gate, list(range(n))[::-1][: gate.num_qubits])
        circuits.append(qc)
    ours = BraketLocalBackend("braket_local").submit(circuits, 3000, {}).result().counts
    theirs = aer_counts(circuits, 3000)
    for qc, a, b in zip(circuits, ours, theirs, strict=True):
        assert tvd(a, b) < 0.07, (qc.name, a, b)


def test_local_isolated_run_and_cancel() -> None:
    """The worker-process path (engine hosts) gives the same counts; cancel stops it."""
    backend = BraketLocalBackend("braket_local")
    try:
        handle = backend.submit([partial_circuit()], 100, {"isolate": True})
        assert handle.result(timeout=120).counts == [{"001": 100}]
        assert handle.status().state is ProviderState.DONE
    finally:
        backend.close()
    lazy = backend.submit([partial_circuit()], 10, {})
    lazy.cancel()
    assert lazy.status().state is ProviderState.CANCELLED
    with pytest.raises(PermanentProviderError):
        lazy.result()


def test_client_runs_braket_local_and_from_braket(client: Client) -> None:
    """Through the ledger: Qiskit's bit order, and a Braket circuit converted with
    from_braket runs the same."""
    from braket.circuits import Circuit

    from qmlops_jupyter.interop.braket import from_braket

    qc = QuantumCircuit(3, 3)
    qc.x(0)
    qc.measure(range(3), range(3))
    assert client.submit(qc, backend="braket_local", shots=20, wait=True).result().counts == [
        {"001": 20}
    ]
    converted = from_braket(Circuit().x(1).i(2))
    counts = (
        client.submit(converted, backend="braket_local:dm", shots=10, wait=True).result().counts
    )
    assert counts == [{"010": 10}]


# -- AWS devices: a fixed Stubber script ------------------------------------------------------


def gate_model_result(arn: str, measurements: list[list[int]], qubits: list[int]) -> str:
    """A results.json as Braket writes it (schema classes from braket.task_result)."""
    return GateModelTaskResult(
        measurements=measurements,
        measuredQubits=qubits,
        taskMetadata=TaskMetadata(id=arn, shots=len(measurements), deviceId=SV1),
        additionalMetadata=AdditionalMetadata(action=Program(source="OPENQASM 3.0;")),
    ).json()


class ScriptedSession:
    """Plain Stubbers with a strict queue of responses (the Braket SDK tests' way)."""

    def __init__(self) -> None:
        plain = boto3.Session(
            region_name="us-east-1",
            aws_access_key_id=braket_stubs.FAKE_KEY_ID,
            aws_secret_access_key=braket_stubs.FAKE_SECRET,
        )
        self.braket_client = plain.client("braket", region_name="us-east-1")
        self.s3_client = plain.client("s3", region_name="us-east-1")
        self.braket = Stubber(self.braket_client)
        self.s3 = Stubber(self.s3_client)
        # The SDK opens S3 (a resource) from the boto3 session when it reads results.json:
        # hand it the stubbed client.
        fixed = {"braket": self.braket_client, "s3": self.s3_client}
        boto = braket_stubs.stubbed_boto_session(
            lambda service, client: fixed.get(service, client),
            region_name="us-east-1",
            aws_access_key_id=braket_stubs.FAKE_KEY_ID,
            aws_secret_access_key=braket_stubs.FAKE_SECRET,
        )
        self.session = AwsSession(boto_session=boto, braket_client=self.braket_client)

    def __enter__(self) -> ScriptedSession:
        self.braket.activate()
        self.s3.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.braket.deactivate()
        self.s3.deactivate()

    def task(self, status: str, *, queue: str | None = None, tags=None) -> None:
        response = {
            "quantumTaskArn": TASK,
            "status": status,
            "deviceArn": SV1,
            "deviceParameters": "{}",
            "shots": 4,
            "outputS3Bucket": "results",
            "outputS3Directory": "qmlops/task-1",
            "createdAt": "2026-01-01T00:00:00Z",
            "tags": tags or {},
        }
        if queue:
            response["queueInfo"] = {
                "queue": "QUANTUM_TASKS_QUEUE",
                "position": queue,
                "queuePriority": "Normal",
            }
        self.braket.add_response(
            "get_quantum_task",
            response,
            {"quantumTaskArn": TASK, "additionalAttributeNames": ["QueueInfo"]},
        )


def scripted_backend(script: ScriptedSession, device: str = "sv1") -> BraketBackend:
    backend = BraketBackend(
        f"braket:{device}",
        BackendConfig(
            options={"s3_bucket": "results", "s3_prefix": "qmlops", "poll_interval": 0.01}
        ),
        device=device,
    )
    backend._session = script.session
    return backend


def test_stubbed_create_get_result_cancel(aws_env) -> None:
    """botocore Stubber, strict order and exact parameters: CreateQuantumTask with our tags,
    GetQuantumTask (queue position), S3 GetObject of results.json, and counts rebuilt from
    Braket's measurement order into Qiskit's; then CancelQuantumTask."""
    with ScriptedSession() as script:
        script.braket.add_response(
            "create_quantum_task",
            {"quantumTaskArn": TASK},
            {
                "deviceArn": SV1,
                "outputS3Bucket": "results",
                "outputS3KeyPrefix": "qmlops",
                "shots": 4,
                "action": ANY,
                "deviceParameters": ANY,
                "tags": {"qmlops:job_id": "job-1", "qmlops:clbits": "3 x 1", "team": "qml"},
            },
        )
        backend = scripted_backend(script)
        handle = backend.submit(
            [partial_circuit()], 4, {"job_id": "job-1", "tags": {"team": "qml", "bad,tag": "x"}}
        )
        assert handle.provider_job_id == TASK

        script.task("QUEUED", queue="3")
        status = handle.status()
        assert status.state is ProviderState.QUEUED and status.queue_position == 3

        script.task("COMPLETED")  # result(): status
        # Braket's order: q0..q3 left to right; qubit 3 is 1 in every shot, qubit 1 is 0
        # in three shots and 1 in one (a noisy device).
        body = gate_model_result(
            TASK, [[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 0, 1], [1, 0, 0, 1]], [0, 1, 2, 3]
        )
        script.s3.add_response(
            "get_object",
            {"Body": StreamingBody(io.BytesIO(body.encode()), len(body))},
            {"Bucket": "results", "Key": "qmlops/task-1/results.json"},
        )
        script.task("COMPLETED")  # the SDK reads the state once more after the download
        result = handle.result(timeout=5)
        assert result.counts == [{"001": 3, "101": 1}]
        assert result.metadata["task_arns"] == [TASK]

        script.braket.add_response(
            "cancel_quantum_task",
            {"quantumTaskArn": TASK, "cancellationStatus": "CANCELLING"},
            {"quantumTaskArn": TASK},
        )
        handle.cancel()
        script.braket.assert_no_pending_responses()
        script.s3.assert_no_pending_responses()


def test_stubbed_reattach_reads_the_bit_map_from_tags(aws_env) -> None:
    """A new backend instance rebuilds the task from its ARN alone; Qiskit's bit order comes
    back from the task's ``qmlops:clbits`` tag."""
    with ScriptedSession() as script:
        handle = scripted_backend(script).attach(TASK, {})
        tags = {"qmlops:clbits": "3 x 1"}
        script.task("COMPLETED", tags=tags)
        body = gate_model_result(TASK, [[1, 0, 0, 1], [1, 1, 0, 1]], [0, 1, 2, 3])
        script.s3.add_response(
            "get_object",
            {"Body": StreamingBody(io.BytesIO(body.encode()), len(body))},
            {"Bucket": "results", "Key": "qmlops/task-1/results.json"},
        )
        script.task("COMPLETED", tags=tags)
        assert handle.result(timeout=5).counts == [{"001": 1, "101": 1}]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("AccessDeniedException", 403, AuthProviderError),
        ("UnrecognizedClientException", 403, AuthProviderError),
        ("ExpiredTokenException", 403, AuthProviderError),
        ("ThrottlingException", 429, TransientProviderError),
        ("InternalServiceException", 500, TransientProviderError),
        ("ServiceQuotaExceededException", 402, TransientProviderError),
        ("ValidationException", 400, PermanentProviderError),
        ("DeviceRetiredException", 410, PermanentProviderError),
    ],
)
def test_stubbed_submit_errors_are_classified(aws_env, code, status, kind) -> None:
    with ScriptedSession() as script:
        script.braket.add_client_error(
            "create_quantum_task",
            service_error_code=code,
            service_message=f"no ({braket_stubs.FAKE_SECRET})",
            http_status_code=status,
        )
        with pytest.raises(kind) as info:
            scripted_backend(script).submit([partial_circuit()], 4, {})
        assert braket_stubs.FAKE_SECRET not in str(info.value)
        assert code in str(info.value)


@pytest.mark.parametrize(
    ("failure", "device", "kind"),
    [
        ("read_timeout", IONQ, AmbiguousProviderError),
        ("read_timeout", "sv1", AmbiguousProviderError),  # the driver re-runs simulators
        ("connect", IONQ, TransientProviderError),
    ],
)
def test_connection_failures_on_submit(fake: FakeBraket, failure, device, kind) -> None:
    fake.fail_next("create_quantum_task", failure)
    with pytest.raises(kind):
        remote(device).submit([partial_circuit()], 4, {})


def test_partial_batch_failure_cancels_and_is_ambiguous(fake: FakeBraket) -> None:
    backend = remote()
    fake.fail_next("create_quantum_task", "read_timeout")  # the first task goes in
    circuits = [partial_circuit(), partial_circuit()]
    # First call creates the task but the reply is lost; nothing else is sent.
    with pytest.raises(AmbiguousProviderError):
        backend.submit(circuits, 4, {})
    fake.fail_next("create_quantum_task", "ThrottlingException", status=429, after=1)
    calls = len(fake.calls())
    with pytest.raises(AmbiguousProviderError, match="after creating 1 of 2"):
        backend.submit(circuits[:1] * 2, 4, {})  # task 1 created, task 2 throttled
    assert fake.calls()[calls:] == [
        "create_quantum_task",
        "create_quantum_task",
        "cancel_quantum_task",
    ]


# -- AWS devices: the stateful fake behind the stubbers ------------------------------------


def test_fake_service_batch_reattach_and_bit_order(fake: FakeBraket) -> None:
    """Several circuits -> one task each; the provider id re-attaches all of them."""
    backend = remote()
    circuits = [partial_circuit()]
    for q in range(3):
        qc = QuantumCircuit(3)
        qc.x(q)
        circuits.append(qc)
    handle = backend.submit(circuits, 50, {"job_id": "j"})
    assert len(split_arns(handle.provider_job_id)) == 4
    attached = remote().attach(handle.provider_job_id, {})
    result = attached.result(timeout=10)
    assert result.counts == [{"001": 50}, {"001": 50}, {"010": 50}, {"100": 50}]
    tags = [t["tags"] for t in fake.tasks().values()]
    assert all(t["qmlops:job_id"] == "j" for t in tags)


def test_a_failed_task_fails_the_job_and_stops_the_others(fake: FakeBraket) -> None:
    wide = QuantumCircuit(braket_stubs.HOLD_QUBITS)
    wide.h(range(braket_stubs.HOLD_QUBITS))
    fake.fail_next_task("device calibration failed")
    handle = remote().submit([partial_circuit(), wide], 10, {"job_id": "j2"})
    with pytest.raises(PermanentProviderError, match="calibration"):
        handle.result(timeout=5)
    statuses = sorted(t["status"] for t in fake.tasks().values())
    assert statuses == ["CANCELLING", "FAILED"]


def test_fake_service_cancel_while_queued(fake: FakeBraket) -> None:
    wide = QuantumCircuit(braket_stubs.HOLD_QUBITS)
    wide.h(range(braket_stubs.HOLD_QUBITS))
    handle = remote().submit([wide], 10, {})
    status = handle.status()
    assert status.state is ProviderState.QUEUED and status.queue_position == 7
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.05)
    handle.cancel()
    assert handle.status().state is ProviderState.CANCELLED
    with pytest.raises(PermanentProviderError, match="cancelled"):
        handle.result(timeout=1)


def test_availability_from_device_status_and_windows(fake: FakeBraket) -> None:
    """GetDevice (stubbed) answers status and execution windows. The check runs in the
    background and a listing waits ``availability_timeout`` for it (1 s by default): the test
    waits longer, so a machine loaded by other test runs does not turn the answer into
    "not known yet"."""
    patient = {"availability_timeout": 30}
    assert remote(**patient).availability()[0] is True
    fake.set_device(status="OFFLINE")
    assert remote(**patient).availability() == (False, "OFFLINE")
    now = time.gmtime()
    # A window that closed an hour or more ago and opens again in two hours.
    start, end = (now.tm_hour + 2) % 24, (now.tm_hour + 23) % 24
    fake.set_device(
        windows=[
            {
                "executionDay": "Everyday",
                "windowStartHour": f"{start:02d}:00:00",
                "windowEndHour": f"{end:02d}:00:00",
            }
        ],
        device_type="QPU",
    )
    available, why = remote(IONQ, **patient).availability()
    assert not available and "outside its execution windows" in why and "Everyday" in why


def test_availability_offline_without_credentials(monkeypatch, tmp_path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    backend = BraketBackend("braket:sv1", device="sv1")
    started = time.monotonic()
    assert backend.credential_status() == "missing"
    assert backend.availability() == (True, "unknown: not checked (no AWS credentials)")
    assert time.monotonic() - started < 0.5
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQMLOPSFAKEKEY123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 20)
    assert backend.credential_status() == "configured"
    (tmp_path / "creds").write_text("[research]\naws_access_key_id = A\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    monkeypatch.setenv("AWS_PROFILE", "research")
    assert backend.credential_status() == "configured"


def write_backends(home: Path, extra: dict) -> None:
    import yaml

    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(yaml.safe_dump({"backends": extra}))


def test_ledger_jobs_and_no_secret_in_the_ledger(fake: FakeBraket, home: Path) -> None:
    """Through the client and the ledger: a good job, an auth failure and a validation
    failure; the ledger's bytes never contain the (fake) AWS secrets."""
    options = {
        "session_factory": "braket_stubs:session_factory",
        "s3_bucket": braket_stubs.BUCKET,
        "poll_interval": 0.01,
    }
    write_backends(home, {"braket:sv1": {"options": options}})
    from qmlops_jupyter.config import Settings

    client = Client(Settings.from_env(home=home))
    try:
        job = client.submit(partial_circuit(), backend="braket:sv1", shots=30, wait=True)
        assert job.result().counts == [{"001": 30}]
        assert job.record.provider_job_id.startswith("arn:aws:braket:")
        fake.fail_next(
            "create_quantum_task",
            "UnrecognizedClientException",
            status=403,
            message=f"The security token {braket_stubs.FAKE_TOKEN} is invalid "
            f"for {braket_stubs.FAKE_KEY_ID}",
        )
        failed = client.submit(partial_circuit(), backend="braket:sv1", shots=5, wait=True).record
        assert failed.state.value == "FAILED" and failed.error_kind == "auth"
        fake.fail_next("create_quantum_task", "ValidationException", message="shots out of range")
        refused = client.submit(partial_circuit(), backend="braket:sv1", shots=5, wait=True).record
        assert refused.error_kind == "permanent" and "shots out of range" in refused.error
    finally:
        client.ledger.close()
    data = (home / "ledger.sqlite").read_bytes()
    for secret in (braket_stubs.FAKE_SECRET, braket_stubs.FAKE_TOKEN, braket_stubs.FAKE_KEY_ID):
        assert secret.encode() not in data
    assert json.dumps(fake.tasks())  # the fake saw the jobs


# -- the conformance suite ---------------------------------------------------------------------


TESTS_DIR = str(Path(__file__).resolve().parent)


class TestBraketLocalConformance(BackendConformance):
    """braket_local: the SDK's LocalSimulator (state vector), real execution."""

    backend_name = "braket_local"


class TestBraketLocalDensityMatrixConformance(BackendConformance):
    """braket_local:dm: the SDK's LocalSimulator (density matrix), real execution."""

    backend_name = "braket_local:dm"


def stubbed_env(tmp_path: Path, backend_name: str, simulator: bool) -> ConformanceEnv:
    """A ConformanceEnv for an AWS device reached through the Stubber-backed fake."""
    path = tmp_path / "braket-state.json"
    fake = FakeBraket(path)
    pythonpath = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
    slow = QuantumCircuit(braket_stubs.HOLD_QUBITS)
    slow.h(range(braket_stubs.HOLD_QUBITS))
    slow.measure_all()
    lost = (
        ErrorCase(
            "lost reply (simulator: re-run)",
            lambda: fake.fail_next("create_quantum_task", "read_timeout"),
            state="COMPLETED",
        )
        if simulator
        else ErrorCase(
            "lost reply (QPU: never resubmitted)",
            lambda: fake.fail_next("create_quantum_task", "read_timeout"),
            state="NEEDS_ATTENTION",
            kind="ambiguous",
        )
    )
    return ConformanceEnv(
        env={
            **braket_stubs.fake_aws_env(),
            braket_stubs.STATE_ENV: str(path),
            "PYTHONPATH": pythonpath,
        },
        backends={
            backend_name: {
                "options": {
                    "session_factory": "braket_stubs:session_factory",
                    "s3_bucket": braket_stubs.BUCKET,
                    "poll_interval": 0.02,
                }
            }
        },
        slow_circuit=slow,
        error_cases=[
            ErrorCase(
                "auth",
                lambda: fake.fail_next(
                    "create_quantum_task",
                    "UnrecognizedClientException",
                    status=403,
                    message="The security token included in the request is invalid.",
                ),
                state="FAILED",
                kind="auth",
                message_contains=("security token",),
            ),
            ErrorCase(
                "validation",
                lambda: fake.fail_next(
                    "create_quantum_task", "ValidationException", message="bad program"
                ),
                state="FAILED",
                kind="permanent",
                message_contains=("bad program",),
            ),
            ErrorCase(
                "throttled",
                lambda: fake.fail_next("create_quantum_task", "ThrottlingException", status=429),
                state="COMPLETED",
            ),
            lost,
            ErrorCase(
                "task failed at Braket",
                lambda: fake.fail_next_task("simulator ran out of memory"),
                state="FAILED",
                kind="permanent",
                message_contains=("out of memory",),
            ),
            ErrorCase(
                "credential revoked while queued",
                lambda: fake.fail_next("get_quantum_task", "AccessDeniedException", status=403),
                state="NEEDS_ATTENTION",
                kind="auth",
            ),
        ],
        submissions=fake.submissions,
        reattach_bootstrap="braket_stubs:bootstrap",
    )


class TestBraketSV1Conformance(BackendConformance):
    """braket:sv1 through botocore Stubbers on real boto3 clients, answered by the stateful
    fake service of tests/braket_stubs.py (shared through a state file with the re-attach
    child, which loads the same session factory from backends.yaml)."""

    backend_name = "braket:sv1"

    @pytest.fixture
    def conformance_env(self, tmp_path):
        yield stubbed_env(tmp_path, self.backend_name, simulator=True)


class TestBraketQPUConformance(BackendConformance):
    """An IonQ QPU by ARN, same Stubber-backed fake: a lost reply to CreateQuantumTask
    needs attention instead of a resubmission."""

    backend_name = f"braket:{IONQ}"

    @pytest.fixture
    def conformance_env(self, tmp_path):
        yield stubbed_env(tmp_path, self.backend_name, simulator=False)
