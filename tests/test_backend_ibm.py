"""The ``ibm`` backend on qiskit-ibm-runtime, offline.

Two ways the provider is reached without a network:

- ``ibm:fake_manila``: the runtime's own local testing mode (``FakeManilaV2``, Aer with the
  device's noise model) through the real sampler/estimator primitives;
- ``ibm:ibm_test``: a remote-like device served by the fake runtime client in
  ``tests/fake_ibm_runtime.py`` (jobs on disk, queue, failures, re-attach from a new process),
  plugged in with the backend option ``service_factory``. Its jobs run through the same local
  testing mode, so results are real noisy samples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fake_ibm_runtime as fir  # tests/ is on the path; it needs the runtime
import pytest
import yaml
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit_aer import AerSimulator

from qmlops_jupyter.backends.ibm import (
    PROVIDER_STATES,
    IBMBackend,
    counts_of,
    provider_error,
)
from qmlops_jupyter.client import Client
from qmlops_jupyter.config import BackendConfig
from qmlops_jupyter.engine.driver import RetryPolicy
from qmlops_jupyter.errors import ProviderError, UnknownBackend
from qmlops_jupyter.states import JobState
from qmlops_jupyter.testing.conformance import BackendConformance, ConformanceEnv, ErrorCase

TESTS = Path(__file__).parent
TOKEN = "tok-Secret-4f1c9e2a7b"


def bell(measure: bool = True) -> QuantumCircuit:
    qc = QuantumCircuit(2, 2) if measure else QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    if measure:
        qc.measure([0, 1], [0, 1])
    return qc


def two_registers() -> QuantumCircuit:
    """Register a (1 bit) then b (2 bits); X on qubits 0 and 1: a = 1, b = '01' -> '011'.
    Joining the registers the wrong way round would give '101'."""
    q = QuantumRegister(3, "q")
    a, b = ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    qc = QuantumCircuit(q, a, b)
    qc.x(0)
    qc.x(1)
    qc.measure(q[0], a[0])
    qc.measure(q[1], b[0])
    qc.measure(q[2], b[1])
    return qc


def dominant(counts: dict[str, int]) -> str:
    return max(counts, key=counts.__getitem__)


def fast(client: Client) -> Client:
    client.driver.retry = RetryPolicy(base=0.02, cap=0.05, poll_base=0.02, poll_cap=0.05)
    return client


# -- the conformance suite ---------------------------------------------------------------------


class TestLocalTestingModeConformance(BackendConformance):
    """The runtime's local testing mode on FakeManilaV2 (Aer with Manila's noise model)."""

    backend_name = "ibm:fake_manila"


class TestFakeRuntimeConformance(BackendConformance):
    """A remote-like device (``ibm:ibm_test``) on the fake runtime client of
    tests/fake_ibm_runtime.py: jobs on disk, queued, re-attachable from a new process (which
    finds the fake through backends.yaml's service_factory and PYTHONPATH)."""

    backend_name = "ibm:ibm_test"

    @pytest.fixture
    def conformance_env(self, tmp_path: Path) -> Iterator[ConformanceEnv]:
        directory = tmp_path / "ibm-cloud"
        cloud = fir.FakeIBMCloud(directory)
        slow = bell()
        slow.name = "slow"  # the fake holds jobs with a circuit of this name in its queue
        yield ConformanceEnv(
            env={
                "QISKIT_IBM_TOKEN": TOKEN,
                "PYTHONPATH": os.pathsep.join(
                    [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            },
            backends={
                "ibm:ibm_test": {
                    "max_qubits": 5,
                    "options": {"service_factory": fir.FACTORY, "fake_dir": str(directory)},
                }
            },
            slow_circuit=slow,
            error_cases=[
                ErrorCase(
                    "401",
                    lambda: cloud.fail_next("submit", "auth"),
                    "FAILED",
                    "auth",
                    ("credential",),
                ),
                ErrorCase("503", lambda: cloud.fail_next("submit", "unavailable", 2), "COMPLETED"),
                ErrorCase("poll-429", lambda: cloud.fail_next("status", "rate_limit"), "COMPLETED"),
                ErrorCase(
                    "job-failed",
                    lambda: cloud.set_next_plan(outcome="ERROR"),
                    "FAILED",
                    "permanent",
                    ("1517",),
                ),
                ErrorCase(
                    "reset-on-submit",
                    lambda: cloud.fail_next("submit", "reset"),
                    "NEEDS_ATTENTION",
                    "ambiguous",
                ),
                ErrorCase(
                    "cancelled-at-ibm",
                    lambda: cloud.set_next_plan(outcome="CANCELLED"),
                    "CANCELLED",
                ),
            ],
            submissions=cloud.submission_count,
        )


# -- local testing mode ----------------------------------------------------------------------


def test_names_and_unknown_devices() -> None:
    """No provider needed: names resolve against the runtime's fake_provider module."""
    backend = IBMBackend("ibm:fake_manila", device="fake_manila")
    caps = backend.capabilities
    assert caps.simulator and caps.local and not caps.supports_reattach and caps.estimator
    assert caps.max_qubits == 5 and "cx" in caps.native_gates
    assert backend.credential_status() == "not needed"
    assert IBMBackend.listed_names("ibm") == ["ibm:fake_manila"]
    with pytest.raises(UnknownBackend, match="ibm:fake_manila"):
        IBMBackend("ibm:fake_nowhere", device="fake_nowhere")
    # Devices whose class has no V2 suffix (FakeBrisbane) are there too.
    assert IBMBackend("ibm:fake_brisbane", device="fake_brisbane").capabilities.max_qubits == 127
    with pytest.raises(UnknownBackend, match="needs a device"):
        IBMBackend("ibm")
    remote = IBMBackend("ibm:ibm_brisbane", device="ibm_brisbane")
    assert not remote.capabilities.simulator and remote.capabilities.supports_reattach
    for terminal in ("DONE", "ERROR", "CANCELLED", "COMPLETED", "FAILED"):
        assert terminal in IBMBackend.provider_states
    assert IBMBackend.provider_states is PROVIDER_STATES


def test_local_mode_bell_through_the_ledger(client: Client) -> None:
    """Local testing mode on FakeManilaV2: the real runtime sampler on Aer, noise included."""
    job = client.submit(bell(), backend="ibm:fake_manila", shots=2000, seed=7, wait=True)
    result = job.result()
    counts = result.counts[0]
    assert sum(counts.values()) == 2000
    assert counts.get("00", 0) + counts.get("11", 0) > 0.85 * 2000
    assert result.metadata["primitive"] == "sampler"
    assert "transpile" in job.record.phases


def test_local_mode_bit_order_matches_aer(client: Client) -> None:
    """Local testing mode: keys as Aer's get_counts() with the spaces removed."""
    one = QuantumCircuit(3, 3)
    one.x(0)
    one.measure(range(3), range(3))
    two = QuantumCircuit(3, 3)
    two.x(1)
    two.measure(range(3), range(3))
    circuits = [one, two, two_registers()]
    counts = (
        client.submit(circuits, backend="ibm:fake_manila", shots=500, seed=3, wait=True)
        .result()
        .counts
    )
    aer = AerSimulator().run(transpile(circuits, AerSimulator()), shots=10).result()
    expected = [
        dominant({k.replace(" ", ""): v for k, v in aer.get_counts(i).items()}) for i in range(3)
    ]
    assert expected == ["001", "010", "011"]
    assert [dominant(c) for c in counts] == expected
    assert all(len(k) == 3 for c in counts for k in c)


def test_counts_of_joins_registers_last_leftmost() -> None:
    """No provider: a SamplerPubResult built by hand with two registers of BitArrays."""
    from qiskit.primitives import BitArray, DataBin, SamplerPubResult

    a = BitArray.from_samples(["1", "1", "0"], num_bits=1)
    b = BitArray.from_samples(["01", "01", "10"], num_bits=2)
    result = SamplerPubResult(DataBin(a=a, b=b, shape=()))
    assert counts_of(result) == {"011": 2, "100": 1}


def test_local_mode_estimator_bell(client: Client) -> None:
    """Local testing mode estimator: <ZZ> and <XX> of a Bell state are 1, <ZI> is 0."""
    job = client.submit(
        [bell(False)] * 3,
        backend="ibm:fake_manila",
        shots=4000,
        seed=5,
        observables=["ZZ", "XX", "ZI"],
        wait=True,
    )
    result = job.result()
    zz, xx, zi = result.expectation_values
    assert zz > 0.8 and xx > 0.8 and abs(zi) < 0.15
    assert result.counts == [{}, {}, {}]
    assert result.metadata["primitive"] == "estimator"


# -- the remote-like device on the fake runtime client ----------------------------------------


@pytest.fixture
def cloud(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[fir.FakeIBMCloud]:
    """The fake IBM cloud in a directory, named in backends.yaml for ``ibm:ibm_test``."""
    directory = tmp_path / "ibm-cloud"
    fake = fir.FakeIBMCloud(directory)
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "ibm:ibm_test": {
                        "max_qubits": 5,
                        "options": {
                            "service_factory": fir.FACTORY,
                            "fake_dir": str(directory),
                            "channel": "ibm_quantum_platform",
                            "instance": "crn:test",
                        },
                    },
                }
            }
        )
    )
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    yield fake


@pytest.fixture
def remote(cloud: fir.FakeIBMCloud, client: Client) -> Client:
    return fast(client)


def test_remote_device_capabilities(remote: Client) -> None:
    """Fake runtime client: a queued, re-attachable device, not a simulator."""
    backend = remote.registry.get("ibm:ibm_test")
    caps = backend.capabilities
    assert not caps.simulator and not caps.local and caps.supports_reattach and caps.estimator
    assert backend.credential_status() == "configured"
    info = backend.info()
    assert info.kind == "qpu" and info.available


def test_remote_submit_tags_isa_and_queue(remote: Client, cloud: fir.FakeIBMCloud) -> None:
    """Fake runtime client: job tags carry the ledger id; the circuits it received are ISA for
    the device; the queue position shows in the status."""
    cloud.set_plan(queue_polls=3, queue_position=5)
    backend = remote.registry.get("ibm:ibm_test")
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 2)  # not an edge of Manila's line 0-1-2-3-4: must be routed
    qc.rz(0.3, 2)
    qc.measure(range(3), range(3))
    handle = backend.submit([qc], 100, {"job_id": "job-123", "seed": 1})
    record = cloud.record(handle.provider_job_id)
    assert record["tags"] == ["qmlops", "qmlops:job-123"]
    target = backend._target.target
    for circuit in cloud.circuits(handle.provider_job_id):
        for inst in circuit.data:
            qargs = tuple(circuit.find_bit(q).index for q in inst.qubits)
            assert inst.operation.name == "barrier" or target.instruction_supported(
                inst.operation.name, qargs
            )
    assert "transpile" in handle.phases
    first = handle.status()
    assert first.state.value == "QUEUED" and first.queue_position == 5
    assert handle.status().queue_position == 4


def test_remote_job_through_the_ledger(remote: Client, cloud: fir.FakeIBMCloud) -> None:
    """Fake runtime client: submit + wait through the ledger; the job passes QUEUED/RUNNING."""
    job = remote.submit(bell(), backend="ibm:ibm_test", shots=1000, seed=11, wait=True)
    record = job.record
    assert record.state is JobState.COMPLETED
    counts = job.result().counts[0]
    assert counts.get("00", 0) + counts.get("11", 0) > 850
    provider_id = record.provider_job_id
    assert cloud.record(provider_id)["tags"] == ["qmlops", f"qmlops:{job.id}"]
    meta = job.result().metadata
    assert meta["provider_job_id"] == provider_id and meta["backend"] == "ibm_test"
    assert f"qmlops:{job.id}" in meta["job_tags"]
    states = [e.to_state for e in job.events() if e.to_state is not None]
    assert states[-3:] == [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]


def test_remote_estimator(remote: Client) -> None:
    """Fake runtime client: the estimator with the observable laid out on the ISA circuit."""
    job = remote.submit(
        [bell(False), bell(False)],
        backend="ibm:ibm_test",
        shots=4000,
        seed=2,
        observables=["ZZ", "XX"],
        wait=True,
    )
    zz, xx = job.result().expectation_values
    assert zz > 0.8 and xx > 0.8


def _submit_one_step(client: Client, circuit: QuantumCircuit, **kw) -> str:
    """Record a job and take it one step (submitted, QUEUED) with this process's driver, then
    forget it as a crashed engine would."""
    job = client.submit(circuit, backend="ibm:ibm_test", shots=400, seed=4, **kw)
    holder = client.driver.holder
    [claimed] = client.ledger.claim(holder, 30.0, job_id=job.id)
    assert client.driver.advance(claimed) is not None
    client.driver.handles.clear()
    client.ledger.release(holder, [job.id])
    return job.id


def test_reattach_from_a_new_process(remote: Client, cloud: fir.FakeIBMCloud) -> None:
    """Fake runtime client on disk: a new Python process re-attaches by the provider job id
    alone (service_factory comes from backends.yaml, the fake from PYTHONPATH)."""
    job_id = _submit_one_step(remote, two_registers())
    record = remote.ledger.get_job(job_id)
    assert record.state is JobState.QUEUED and record.provider_job_id
    code = (
        "import json, qmlops_jupyter as q; "
        f"r = q.get_job({job_id!r}).result(timeout=60); print(json.dumps(r.counts))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert dominant(counts[0]) == "011"
    assert cloud.submission_count() == 1  # re-attached, never resubmitted
    notes = [e.message or "" for e in remote.events(job_id)]
    assert any("re-attached" in n for n in notes)


def test_cancel_a_queued_job(remote: Client, cloud: fir.FakeIBMCloud) -> None:
    """Fake runtime client: a cancel reaches the provider job."""
    cloud.set_plan(queue_polls=1000)
    job_id = _submit_one_step(remote, bell())
    remote.cancel(job_id)
    record = remote.wait(job_id, timeout=30)
    assert record.state is JobState.CANCELLED
    assert cloud.record(record.provider_job_id)["cancelled"] is True


@pytest.mark.parametrize(
    ("arrange", "state", "kind", "words"),
    [
        (lambda c: c.fail_next("submit", "auth"), JobState.FAILED, "auth", "credential"),
        (lambda c: c.fail_next("connect", "forbidden"), JobState.FAILED, "auth", "credential"),
        (lambda c: c.set_next_plan(outcome="ERROR"), JobState.FAILED, "permanent", "1517"),
        (lambda c: c.fail_next("submit", "invalid"), JobState.FAILED, "permanent", "400"),
        (
            lambda c: c.fail_next("submit", "reset"),
            JobState.NEEDS_ATTENTION,
            "ambiguous",
            "may exist",
        ),
        (lambda c: c.fail_next("status", "auth"), JobState.NEEDS_ATTENTION, "auth", "credential"),
    ],
)
def test_error_cases(remote: Client, cloud: fir.FakeIBMCloud, arrange, state, kind, words) -> None:
    """Fake runtime client raising what qiskit-ibm-runtime raises; no token ever recorded."""
    arrange(cloud)
    job = remote.submit(bell(), backend="ibm:ibm_test", shots=100, wait=True)
    record = job.record
    assert (record.state, record.error_kind) == (state, kind), record.error
    assert words in (record.error or "")
    assert TOKEN not in (record.error or "")


@pytest.mark.parametrize("fault", ["unavailable", "rate_limit", "network"])
def test_transient_errors_are_retried(remote: Client, cloud: fir.FakeIBMCloud, fault: str) -> None:
    """Fake runtime client: 503/429/unreachable on submit and on a poll, then success."""
    cloud.fail_next("submit", fault)
    cloud.fail_next("status", fault)
    job = remote.submit(bell(), backend="ibm:ibm_test", shots=100, wait=True)
    assert job.record.state is JobState.COMPLETED, job.record.error
    assert cloud.submission_count() == 1
    retries = [e for e in job.events() if "transient" in (e.message or "")]
    assert len(retries) == 2


def test_cancelled_at_the_provider(remote: Client, cloud: fir.FakeIBMCloud) -> None:
    """Fake runtime client: a job IBM reports CANCELLED ends CANCELLED."""
    cloud.set_plan(outcome="CANCELLED")
    job = remote.submit(bell(), backend="ibm:ibm_test", shots=100, wait=True)
    assert job.record.state is JobState.CANCELLED


def test_no_token_anywhere(remote: Client, cloud: fir.FakeIBMCloud, home: Path) -> None:
    """Fake runtime client echoing the token in its errors (as a URL can): the ledger file, the
    errors and the results never hold it."""
    cloud.fail_next("submit", "auth")
    failed = remote.submit(bell(), backend="ibm:ibm_test", shots=100, wait=True)
    cloud.fail_next("submit", "unavailable")
    cloud.fail_next("status", "rate_limit")
    ok = remote.submit(bell(), backend="ibm:ibm_test", shots=100, seed=1, wait=True)
    assert failed.record.state is JobState.FAILED and ok.record.state is JobState.COMPLETED
    assert "***" in (failed.record.error or "")
    remote.ledger.close()
    remote._ledger = None
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in json.dumps(ok.result().metadata)


def test_real_service_unreachable_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real QiskitRuntimeService with no network (its IAM host does not resolve here): a
    transient 'cannot reach IBM Quantum' error without the token. With a network it would be
    IBM refusing the made-up token: auth."""
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    crn = "crn:v1:bluemix:public:quantum-computing:us-east:a/abc123:def456::"
    backend = IBMBackend(
        "ibm:ibm_brisbane", BackendConfig(options={"instance": crn}), device="ibm_brisbane"
    )
    assert backend.credential_status() == "configured"
    with pytest.raises(ProviderError) as err:
        backend.submit([bell()], 10, {"job_id": "x"})
    assert TOKEN not in str(err.value)
    assert err.value.kind in ("transient", "auth"), str(err.value)
    if err.value.kind == "transient":
        assert str(err.value).startswith("cannot reach IBM Quantum")


def test_error_mapping() -> None:
    """No provider: qiskit-ibm-runtime's exception types mapped to our kinds."""
    import requests
    from qiskit_ibm_runtime.api.exceptions import RequestsApiError
    from qiskit_ibm_runtime.exceptions import (
        IBMNotAuthorizedError,
        RuntimeJobFailureError,
    )

    def kind(exc: BaseException, during: str = "poll") -> str:
        return provider_error(exc, during=during, where="d", clean=str).kind

    def wrapped(cause: BaseException) -> BaseException:
        try:
            raise cause
        except Exception as inner:
            try:
                raise RequestsApiError(f"'{inner}'") from inner
            except RequestsApiError as outer:
                return outer

    assert kind(IBMNotAuthorizedError("401")) == "auth"
    assert kind(RequestsApiError("x", 403)) == "auth"
    assert kind(RequestsApiError("x", 503)) == "transient"
    assert kind(RequestsApiError("x", 503), "submit") == "transient"
    assert kind(RequestsApiError("x", 504), "submit") == "ambiguous"
    assert kind(RequestsApiError("x", 429), "submit") == "transient"
    assert kind(RequestsApiError("x", 400)) == "permanent"
    assert kind(RuntimeJobFailureError("boom")) == "permanent"
    http_400 = wrapped(requests.exceptions.HTTPError("400 Client Error: Bad Request"))
    http_400.status_code = 400
    assert kind(http_400, "submit") == "permanent"
    refused = requests.exceptions.ConnectionError("NewConnectionError: Connection refused")
    assert kind(wrapped(refused), "submit") == "transient"
    reset = requests.exceptions.ConnectionError("Connection reset by peer")
    assert kind(wrapped(reset), "submit") == "ambiguous"
    assert kind(wrapped(reset), "poll") == "transient"
    assert kind(wrapped(requests.exceptions.ReadTimeout("read")), "submit") == "ambiguous"
    assert (
        IBMBackend(name="ibm:x", device="x")._clean("GET https://h/x?apikey=abc&b=1 Bearer xyz")
        == "GET https://h/x?apikey=***&b=1 Bearer ***"
    )


def test_credential_settings_and_nothing_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No provider: building the client of a remote device writes nothing under HOME."""
    monkeypatch.setenv("HOME", str(tmp_path))
    calls = []

    def factory(**kwargs):
        calls.append(kwargs)
        return object()

    monkeypatch.setattr(IBMBackend, "service_factory", staticmethod(factory))
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setenv("QISKIT_IBM_INSTANCE", "crn:env")
    backend = IBMBackend(
        "ibm:ibm_x", BackendConfig(options={"channel": "ibm_cloud"}), device="ibm_x"
    )
    backend._runtime()
    assert calls[0]["channel"] == "ibm_cloud" and calls[0]["instance"] == "crn:env"
    assert calls[0]["token"] == TOKEN
    assert not list(tmp_path.rglob("*"))


def test_reattach_with_the_bootstrap_hook(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake runtime client found through the conformance child's ``--bootstrap`` hook
    (``fake_ibm_runtime:install``) and QMLOPS_FAKE_IBM_DIR, with no backends.yaml entry."""
    monkeypatch.setenv(fir.ENV_DIR, str(tmp_path / "cloud"))
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setattr(IBMBackend, "service_factory", fir.FakeRuntimeClient.factory)
    handle = IBMBackend("ibm:ibm_test", device="ibm_test").submit([two_registers()], 200, {})
    command = [
        sys.executable,
        "-m",
        "qmlops_jupyter.testing.conformance",
        "reattach",
        "ibm:ibm_test",
        handle.provider_job_id,
        "--bootstrap",
        "fake_ibm_runtime:install",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["state"] == "DONE" and dominant(out["counts"][0]) == "011"


def test_the_fake_refuses_circuits_that_are_not_isa(cloud: fir.FakeIBMCloud) -> None:
    """Fake runtime client alone: like IBM, it refuses a circuit the device cannot run as is
    (so the ISA tests above prove the adapter transpiled)."""
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    client = fir.FakeRuntimeClient(cloud.dir)
    device = client.backend("ibm_test")
    with pytest.raises(IBMInputValueError, match="not supported"):
        client.run("sampler", device, [bell()], shots=10, tags=[])  # h is not a Manila gate
    assert cloud.submission_count() == 0
