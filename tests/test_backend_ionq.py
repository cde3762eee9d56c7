"""The `ionq` adapter: circuit conversion, counts decoding, settings and credentials, and every
error class, against IonQ's v0.3 API as served by the loopback emulator.

IonQ is reached offline: :mod:`qmlops_jupyter.testing.ionq_emulator` runs as a subprocess on
127.0.0.1 (IonQ's routes, field names, error bodies and ``Authorization: apiKey KEY`` header;
Aer runs the circuits). The adapter talks to it over real HTTP with httpx, as it would to
api.ionq.co; nothing in the adapter is mocked. The backend conformance suite runs at the end, for a
simulator and a QPU target, each against its own emulator.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.quantum_info import Operator

from qmlops_jupyter.backends.base import ProviderState
from qmlops_jupyter.backends.ionq import (
    IONQ_STATES,
    IonQBackend,
    decode_measure_maps,
    encode_measure_maps,
    histogram_to_counts,
    job_body,
    largest_remainder,
    to_ionq_program,
)
from qmlops_jupyter.client import Client
from qmlops_jupyter.config import BackendConfig, Settings
from qmlops_jupyter.errors import (
    AmbiguousProviderError,
    AuthProviderError,
    ConfigError,
    InvalidCircuit,
    PermanentProviderError,
    TransientProviderError,
    UnknownBackend,
)
from qmlops_jupyter.states import JobState
from qmlops_jupyter.testing.conformance import BackendConformance, ConformanceEnv, ErrorCase
from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess, start_emulator, to_qiskit

SECRET = "sk-ionq-test-0123456789"


def backend(name: str = "ionq:simulator", **options) -> IonQBackend:
    device = name.partition(":")[2] or None
    return IonQBackend(name, BackendConfig(options=options), device=device)


def x_on(qubit: int, width: int = 3) -> QuantumCircuit:
    qc = QuantumCircuit(width, width)
    qc.x(qubit)
    qc.measure(range(width), range(width))
    return qc


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with start_emulator(tmp_path_factory.mktemp("ionq"), queue_seconds=0.2, api_key=SECRET) as emu:
        yield emu


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("IONQ_API_KEY", SECRET)
    return SECRET


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").clear_faults()


# -- names, settings, credentials (no network) -----------------------------------------------


def test_names_targets_and_capabilities() -> None:
    assert IonQBackend("ionq", BackendConfig()).target == "simulator"
    sim, aria, forte = backend(), backend("ionq:qpu.aria-1"), backend("ionq:qpu.forte-1")
    assert (sim.capabilities.simulator, aria.capabilities.simulator) == (True, False)
    assert (sim.max_qubits, aria.max_qubits, forte.max_qubits) == (29, 25, 36)
    assert backend("ionq:qpu.tomorrow-9").max_qubits is None  # IonQ checks it
    for b in (sim, aria):
        caps = b.capabilities
        assert not caps.local and caps.supports_reattach and caps.supports_cancel
    assert IonQBackend.listed_names("ionq") == [
        "ionq:simulator",
        "ionq:qpu.aria-1",
        "ionq:qpu.forte-1",
    ]
    with pytest.raises(UnknownBackend, match=r"ionq:qpu\.<name>"):
        backend("ionq:aria")
    with pytest.raises(ConfigError, match="api_ulr"):
        backend(api_ulr="http://x")


def test_every_ionq_status_is_mapped() -> None:
    assert IonQBackend.provider_states is IONQ_STATES
    assert IONQ_STATES["completed"] is ProviderState.DONE
    assert IONQ_STATES["failed"] is ProviderState.FAILED
    assert IONQ_STATES["canceled"] is ProviderState.CANCELLED
    assert {IONQ_STATES[s] for s in ("submitted", "ready")} == {ProviderState.QUEUED}
    assert IONQ_STATES["running"] is ProviderState.RUNNING


def test_credential_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IONQ_API_KEY", raising=False)
    b = backend()
    assert b.credential_status() == "missing"
    assert b.availability() == (False, "no API key (set IONQ_API_KEY)")
    with pytest.raises(AuthProviderError, match="set the environment variable IONQ_API_KEY"):
        b.submit([x_on(0)], 10, {})  # refused before any request
    monkeypatch.setenv("TEAM_IONQ_KEY", SECRET)
    other = backend(api_key_env="TEAM_IONQ_KEY")
    assert other.credential_status() == "configured"
    assert other.availability()[0] is True
    assert SECRET not in repr(other.info())


def test_api_url_and_timeout_from_backends_yaml() -> None:
    b = backend(api_url="http://127.0.0.1:9/v0.3/", timeout=2)
    assert (b.api_url, b.timeout) == ("http://127.0.0.1:9/v0.3", 2.0)
    assert backend().api_url == "https://api.ionq.co/v0.3"


# -- circuits in, counts out ------------------------------------------------------------------


def test_gates_map_to_ionq_qis() -> None:
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.rx(0.5, 2)
    qc.sdg(1)
    qc.tdg(2)
    qc.sx(0)
    qc.swap(1, 2)
    program = to_ionq_program(qc)
    assert program.gates == [
        {"gate": "h", "target": 0},
        {"gate": "cnot", "control": 0, "target": 1},
        {"gate": "rx", "target": 2, "rotation": 0.5},
        {"gate": "si", "target": 1},
        {"gate": "ti", "target": 2},
        {"gate": "v", "target": 0},
        {"gate": "swap", "targets": [1, 2]},
    ]
    assert program.qubits == 3 and program.measure_map == [0, 1, 2]  # measured like measure_all


def test_transpiled_circuit_is_the_same_unitary() -> None:
    """Gates outside IonQ's set are transpiled; converting back gives the same operator."""
    qc = QuantumCircuit(3)
    qc.u(0.3, 0.2, 0.1, 0)
    qc.cz(0, 2)
    qc.ccx(0, 1, 2)
    qc.cp(0.7, 1, 0)
    program = to_ionq_program(qc)
    back = to_qiskit(program.gates, 3).remove_final_measurements(inplace=False)
    assert Operator(back).equiv(Operator(qc))


def test_measure_map_gives_qiskit_bit_order() -> None:
    # Qubit 2 -> clbit 0, qubit 0 -> clbit 1; qubit 1 unmeasured; a second register.
    qc = QuantumCircuit(QuantumRegister(3), ClassicalRegister(1, "a"), ClassicalRegister(1, "b"))
    qc.measure(2, 0)
    qc.measure(0, 1)
    program = to_ionq_program(qc)
    assert program.measure_map == [2, 0]
    # |q2 q1 q0> = |100> (4) -> clbit0 = 1: "01"; |001> (1) -> clbit1 = 1: "10"; |010> -> "00".
    counts = histogram_to_counts({"4": 0.25, "1": 0.5, "2": 0.25}, 100, program.measure_map)
    assert counts == {"01": 25, "10": 50, "00": 25}


def test_probabilities_become_counts_summing_to_shots() -> None:
    assert largest_remainder({0: 1 / 3, 1: 1 / 3, 2: 1 / 3}, 100) == {0: 34, 1: 33, 2: 33}
    assert sum(largest_remainder({0: 0.49, 3: 0.5}, 1000).values()) == 1000  # not normalised
    counts = histogram_to_counts({"0": 0.123456, "3": 0.876544}, 7, [0, 1])
    assert counts == {"00": 1, "11": 6}


def test_measure_maps_travel_as_text() -> None:
    maps = [[0, 1, 2], [2, -1, 0], [], list(range(29))]
    text = encode_measure_maps(maps)
    assert text == "=3;2,-1,0;=0;=29"
    assert decode_measure_maps(text) == maps


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda qc: (qc.measure(0, 0), qc.x(0)), "measures every qubit at the end"),
        (lambda qc: (qc.reset(0), qc.measure(0, 0)), "reset"),
        (lambda qc: (qc.rx(Parameter("t"), 0), qc.measure(0, 0)), "unbound parameters|cannot be"),
    ],
)
def test_circuits_ionq_cannot_run_are_refused(build, message) -> None:
    qc = QuantumCircuit(1, 1)
    build(qc)
    with pytest.raises(InvalidCircuit, match=message):
        to_ionq_program(qc)


def test_job_body_follows_ionq_v03() -> None:
    programs = [to_ionq_program(x_on(0))]
    body = job_body(programs, "qpu.aria-1", 100, {"job_id": "j-1", "tags": {"team": "q"}})
    assert body["target"] == "qpu.aria-1" and body["shots"] == 100
    assert body["name"] == "qmlops j-1"
    assert body["metadata"] == {
        "qmlops_clbits": "=3",
        "qmlops_job_id": "j-1",
        "qmlops_tags": '{"team":"q"}',
    }
    assert body["input"]["format"] == "ionq.circuit.v0" and body["input"]["gateset"] == "qis"
    assert body["input"]["circuit"] == [{"gate": "x", "target": 0}]
    multi = job_body(programs * 2, "simulator", 10, {})
    assert [c["name"] for c in multi["input"]["circuits"]] == ["0", "1"]
    assert "circuit" not in multi["input"]


# -- against the emulator ---------------------------------------------------------------------


def test_submit_status_result(emulator, key) -> None:
    b = backend("ionq:qpu.aria-1", api_url=emulator.url)
    handle = b.submit([x_on(0), x_on(1)], 64, {"job_id": "job-a"})
    assert handle.status().state in (
        ProviderState.QUEUED,
        ProviderState.RUNNING,
        ProviderState.DONE,
    )
    result = handle.result(timeout=30)
    assert result.counts == [{"001": 64}, {"010": 64}]
    assert result.metadata["ionq_job_id"] == handle.provider_job_id
    assert len(result.metadata["ionq_child_job_ids"]) == 2
    remote = emulator.job(handle.provider_job_id)
    assert remote["metadata"]["qmlops_job_id"] == "job-a"
    assert remote["name"] == "qmlops job-a" and remote["target"] == "qpu.aria-1"


def test_attach_from_the_id_alone_decodes_with_the_stored_measure_map(emulator, key) -> None:
    qc = QuantumCircuit(3, 2)
    qc.x(2)
    qc.measure(2, 0)
    qc.measure(1, 1)
    handle = backend(api_url=emulator.url).submit([qc], 20, {})
    fresh = backend(api_url=emulator.url).attach(handle.provider_job_id, {})
    assert fresh.result(timeout=30).counts == [{"01": 20}]


def test_cancel_a_queued_job(tmp_path: Path, key) -> None:
    with start_emulator(tmp_path, queue_seconds=30) as emu:
        handle = backend("ionq:qpu.aria-1", api_url=emu.url).submit([x_on(0)], 10, {})
        handle.cancel()
        status = handle.status()
        assert status.state is ProviderState.CANCELLED and status.message == "cancelled at IonQ"
        with pytest.raises(PermanentProviderError, match="cancelled"):
            handle.result(timeout=5)


def test_failed_job_carries_ionqs_reason(emulator, key) -> None:
    emulator.inject({"on": "run", "failure": {"code": "CompilationError", "error": "too deep"}})
    handle = backend(api_url=emulator.url).submit([x_on(0)], 10, {})
    with pytest.raises(PermanentProviderError, match="CompilationError: too deep"):
        handle.result(timeout=30)
    assert handle.status().state is ProviderState.FAILED


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(emulator, monkeypatch) -> None:
    monkeypatch.setenv("IONQ_API_KEY", "not-the-key-42")
    with pytest.raises(AuthProviderError) as caught:
        backend(api_url=emulator.url).submit([x_on(0)], 10, {})
    assert "IonQ refused the API key (401" in str(caught.value)
    assert "not-the-key-42" not in str(caught.value)


@pytest.mark.parametrize(
    "fault, error, text",
    [
        (
            {"status": 429, "retry_after": 3},
            TransientProviderError,
            "rate limit (429); retry after 3",
        ),
        ({"status": 500}, TransientProviderError, "server error (500"),
        ({"status": 503}, TransientProviderError, "server error (503"),
        ({"status": 504}, AmbiguousProviderError, "gateway timeout"),
        ({"status": 400, "message": "bad circuit"}, PermanentProviderError, "bad circuit"),
        ({"status": 403}, AuthProviderError, "refused the API key (403"),
        ({"reset": True}, AmbiguousProviderError, "may or may not have created it"),
        ({"reset": True, "after_accept": True}, AmbiguousProviderError, "may or may not"),
    ],
)
def test_submit_errors_map_to_kinds(emulator, key, fault, error, text) -> None:
    emulator.inject({"on": "POST /v0.3/jobs", **fault})
    with pytest.raises(error, match=None) as caught:
        backend("ionq:qpu.aria-1", api_url=emulator.url).submit([x_on(0)], 10, {})
    assert type(caught.value) is error
    assert text in str(caught.value) and SECRET not in str(caught.value)
    if fault.get("retry_after"):
        assert caught.value.retry_after == 3.0


def test_submit_read_timeout_is_ambiguous(emulator, key) -> None:
    emulator.inject({"on": "POST /v0.3/jobs", "delay": 1.5})
    with pytest.raises(AmbiguousProviderError, match="ReadTimeout"):
        backend(api_url=emulator.url, timeout=0.5).submit([x_on(0)], 10, {})


def test_polling_errors_are_transient_and_unknown_jobs_permanent(emulator, key) -> None:
    b = backend(api_url=emulator.url)
    handle = b.submit([x_on(0)], 10, {})
    for fault in ({"status": 500}, {"reset": True}, {"status": 429}):
        emulator.inject({"on": "GET /v0.3/jobs/*", **fault})
        with pytest.raises(TransientProviderError):
            handle.status()
    assert handle.result(timeout=30).counts == [{"001": 10}]
    with pytest.raises(PermanentProviderError, match="404"):
        b.attach("00000000-0000-0000-0000-000000000000", {}).status()


def test_unreachable_service_is_transient_even_for_a_submit(key) -> None:
    """Connection refused: nothing reached IonQ, so a retry cannot duplicate a job."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientProviderError, match="could not connect"):
        backend("ionq:qpu.aria-1", api_url=f"http://127.0.0.1:{port}/v0.3").submit(
            [x_on(0)], 10, {}
        )


def test_submit_and_wait_through_the_ledger(home: Path, emulator, key) -> None:
    """No engine running: the client advances the remote job itself until it completes."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        f"backends:\n  ionq:simulator:\n    options:\n      api_url: {emulator.url}\n"
    )
    client = Client(Settings.from_env(home=home))
    try:
        client.registry.register("ionq", IonQBackend)
        bell = QuantumCircuit(2)
        bell.h(0)
        bell.cx(0, 1)
        job = client.submit(
            bell,
            backend="ionq:simulator",
            shots=300,
            wait=True,
            wait_timeout=60,
            observables=["ZZ"],
        )
        record = job.refresh()
        assert record.state is JobState.COMPLETED, record.error
        (counts,) = record.result.counts
        assert set(counts) <= {"00", "11"} and sum(counts.values()) == 300
        assert record.result.expectation_values == [1.0]
        assert record.provider_job_id == record.result.metadata["ionq_job_id"]
        # The run phase is IonQ's own execution time, not our polling; the rest was queue.
        run = record.result.metadata["run_seconds"]
        assert run == record.result.metadata["execution_time"] / 1000
        assert record.phases["run"] == pytest.approx(run)
        assert record.phases["queue"] >= 0
    finally:
        client.ledger.close()


# -- the backend conformance suite ------------------------------------------------------------


def ionq_error_cases(emulator: EmulatorProcess, qpu: bool) -> list[ErrorCase]:
    def inject(*faults: dict) -> Callable[[], None]:
        return lambda: emulator.inject(*faults)

    return [
        ErrorCase(
            "401",
            inject({"on": "POST /v0.3/jobs", "status": 401}),
            "FAILED",
            "auth",
            ("IonQ refused the API key", "401"),
        ),
        ErrorCase(
            "429", inject({"on": "POST /v0.3/jobs", "status": 429, "retry_after": 0}), "COMPLETED"
        ),
        ErrorCase("500-on-poll", inject({"on": "GET /v0.3/jobs/*", "status": 500}), "COMPLETED"),
        ErrorCase(
            "400",
            inject({"on": "POST /v0.3/jobs", "status": 400, "message": "bad input"}),
            "FAILED",
            "permanent",
            ("bad input",),
        ),
        ErrorCase(
            "failed-at-ionq",
            inject({"on": "run", "failure": {"code": "CompilationError", "error": "too deep"}}),
            "FAILED",
            "permanent",
            ("CompilationError",),
        ),
        # The emulator records the job, then resets the connection: a QPU job must wait for a
        # person; a simulator job is simply sent again.
        ErrorCase(
            "reset-after-accept",
            inject({"on": "POST /v0.3/jobs", "reset": True, "after_accept": True}),
            "NEEDS_ATTENTION" if qpu else "COMPLETED",
            "ambiguous" if qpu else None,
        ),
    ]


class _IonQConformance(BackendConformance):
    """The conformance suite against the loopback emulator (a quarter-second queue; one
    emulator per test, its own key required)."""

    @pytest.fixture
    def conformance_env(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[ConformanceEnv]:
        with start_emulator(tmp_path / "ionq", queue_seconds=0.25, api_key=SECRET) as emu:
            yield ConformanceEnv(
                env={"IONQ_API_KEY": SECRET},
                backends={self.backend_name: {"options": {"api_url": emu.url, "timeout": 10}}},
                slow_circuit=x_on(0),  # queued 0.25 s: the cancel arrives well before
                error_cases=ionq_error_cases(emu, qpu=self.backend_name != "ionq:simulator"),
                submissions=emu.submission_count,
            )


class TestIonQSimulatorConformance(_IonQConformance):
    backend_name = "ionq:simulator"


class TestIonQQPUConformance(_IonQConformance):
    backend_name = "ionq:qpu.aria-1"
