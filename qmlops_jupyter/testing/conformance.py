"""The backend conformance suite: what every adapter, ours or a third party's, must do.

Use it from a pytest module::

    from qmlops_jupyter.testing.conformance import BackendConformance, ConformanceEnv

    class TestMyBackend(BackendConformance):
        backend_name = "myplugin:device"

        @pytest.fixture
        def conformance_env(self, tmp_path, monkeypatch):
            with start_my_emulator(tmp_path) as emu:
                yield ConformanceEnv(env={"MY_API_URL": emu.url},
                                     submissions=emu.submission_count)

It checks, against the real adapter (reaching its provider however the fixture arranges it):

- the backend describes itself (kind, limits, credential status) without touching the network;
- limits are enforced before anything is sent: the provider receives nothing and the ledger
  records nothing;
- submit / status / result at the adapter level, and submit + wait through the ledger;
- one bit order everywhere: Qiskit's, classical bit 0 rightmost;
- the provider's states map onto ours, terminal states included;
- cancel;
- re-attach from a new process, for backends that can (others must refuse plainly);
- the error cases the fixture can provoke end in the right state with the right error kind.

Noisy backends are fine: outcomes are compared by their dominant values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

#: A share of the shots the expected outcome must get, on a noisy backend too.
DOMINANT = 0.75


@dataclass
class ErrorCase:
    """A provider failure the fixture can provoke: ``arrange()`` makes the provider's next
    calls fail; a job submitted afterwards must end in ``state`` with ``error_kind == kind``
    (``state="COMPLETED"`` for a transient failure the engine retries past)."""

    name: str
    arrange: Callable[[], None]
    state: str
    kind: str | None = None
    #: Words the job's error message must contain (say, "401" or "API key").
    message_contains: tuple[str, ...] = ()


@dataclass
class ConformanceEnv:
    """How the suite reaches a backend's provider; yielded by the ``conformance_env`` fixture."""

    #: Environment variables set for the test and for the re-attach subprocess.
    env: dict[str, str] = field(default_factory=dict)
    #: Extra ``backends.yaml`` entries (name -> BackendConfig fields).
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: A circuit that stays queued or running long enough to be cancelled; None when the
    #: backend finishes every job before a cancel could reach it (local simulators).
    slow_circuit: Any = None
    error_cases: list[ErrorCase] = field(default_factory=list)
    #: How many jobs the provider side has received so far, when the fixture can tell.
    submissions: Callable[[], int] | None = None
    #: ``module:function`` called in the re-attach subprocess before it attaches (installs
    #: the fake client or stubs there, or registers an adapter that has no entry point yet).
    reattach_bootstrap: str | None = None
    #: Backend classes to register by plugin name, for an adapter not installed under the
    #: ``qmlops_jupyter.backends`` entry point (yet).
    plugins: dict[str, type] = field(default_factory=dict)


def bell() -> Any:
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2, 2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def basis_state(width: int, ones: tuple[int, ...]) -> Any:
    """X on the qubits in ``ones``, every qubit measured into its own classical bit."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(width, width, name="x" + "".join(map(str, ones)))
    for q in ones:
        qc.x(q)
    qc.measure(range(width), range(width))
    return qc


def dominant(counts: dict[str, int]) -> tuple[str, float]:
    total = sum(counts.values())
    key = max(counts, key=counts.__getitem__)
    return key, counts[key] / total if total else 0.0


class BackendConformance:
    """Subclass in a test module and set :attr:`backend_name`; override ``conformance_env``
    to reach the provider (emulator, stubs, fake client)."""

    backend_name: ClassVar[str]
    shots: ClassVar[int] = 256
    #: Seconds one small job may take from submission to result.
    job_timeout: ClassVar[float] = 120.0

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture
    def conformance_env(self) -> Iterator[ConformanceEnv]:
        yield ConformanceEnv()

    @pytest.fixture
    def conformance(
        self, conformance_env: ConformanceEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[_Harness]:
        import yaml

        from ..client import Client, reset_client
        from ..config import DEFAULT_BACKENDS_YAML, Settings
        from ..engine.driver import RetryPolicy

        home = tmp_path / "conformance-home"
        home.mkdir()
        entries = yaml.safe_load(DEFAULT_BACKENDS_YAML)["backends"]
        entries.update(conformance_env.backends)
        backends_file = home / "backends.yaml"
        backends_file.write_text(yaml.safe_dump({"backends": entries}), encoding="utf-8")
        env = {
            "QMLOPS_HOME": str(home),
            "QMLOPS_BACKENDS_FILE": str(backends_file),
            **conformance_env.env,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("QMLOPS_DATABASE_URL", raising=False)
        reset_client()
        client = Client(Settings.from_env(home=home))
        for plugin, cls in conformance_env.plugins.items():
            client.registry.register(plugin, cls)
        # Fast retries and polls: the suite checks the decisions, not the waiting.
        client.driver.retry = RetryPolicy(base=0.05, cap=0.5, poll_base=0.05, poll_cap=0.5)
        harness = _Harness(
            self.backend_name, client, conformance_env, env, self.shots, self.job_timeout
        )
        try:
            yield harness
        finally:
            harness.close()
            reset_client()

    # -- the checks ----------------------------------------------------------------------------

    def test_describes_itself_without_network(self, conformance: _Harness) -> None:
        backend = conformance.backend
        started = time.monotonic()
        info = backend.info()
        elapsed = time.monotonic() - started
        assert info.name == self.backend_name
        assert info.kind in ("simulator", "qpu")
        assert info.kind == ("simulator" if backend.capabilities.simulator else "qpu")
        assert info.credentials in ("not needed", "configured", "missing")
        assert info.max_shots >= 1
        assert isinstance(info.available, bool) and info.status
        if backend.capabilities.local:
            assert not backend.capabilities.supports_reattach, (
                "a local backend has nothing to re-attach to"
            )
        assert elapsed < 5.0, f"describing {self.backend_name} took {elapsed:.1f} s"
        assert (
            self.backend_name in conformance.client.registry.configured_names()
            or self.backend_name in conformance.env.backends
        )

    def test_limits_enforced_before_submission(self, conformance: _Harness) -> None:
        from ..errors import CircuitTooLarge, InvalidRequest

        backend = conformance.backend
        before = conformance.provider_submissions()
        with pytest.raises(InvalidRequest, match="shots"):
            conformance.client.submit(
                bell(), backend=self.backend_name, shots=backend.config.max_shots + 1
            )
        with pytest.raises(InvalidRequest, match="shots"):
            conformance.client.submit(bell(), backend=self.backend_name, shots=0)
        limit = backend.max_qubits
        if limit is not None and limit < 40:
            from qiskit import QuantumCircuit

            wide = QuantumCircuit(limit + 1)
            wide.h(0)
            wide.measure_all()
            with pytest.raises(CircuitTooLarge, match=str(limit)):
                conformance.client.submit(wide, backend=self.backend_name, shots=10)
        if not backend.capabilities.estimator:
            with pytest.raises(InvalidRequest, match="Z basis"):
                conformance.client.submit(
                    bell(), backend=self.backend_name, shots=10, observables=["XX"]
                )
        assert conformance.client.jobs(backend=self.backend_name) == []
        assert conformance.provider_submissions() == before

    def test_submit_status_result(self, conformance: _Harness) -> None:
        from ..backends.base import ProviderResult, ProviderState, ProviderStatus

        backend = conformance.backend
        handle = backend.submit([bell()], self.shots, conformance.options())
        if not backend.capabilities.local:
            assert handle.provider_job_id, "a remote job must have a provider id"
        seen = conformance.wait_done(handle)
        assert all(
            isinstance(s, ProviderStatus) and isinstance(s.state, ProviderState) for s in seen
        )
        result = handle.result(timeout=self.job_timeout)
        assert isinstance(result, ProviderResult)
        assert len(result.counts) == 1
        counts = result.counts[0]
        assert sum(counts.values()) == self.shots
        assert all(len(k) == 2 and set(k) <= {"0", "1"} for k in counts)
        correlated = counts.get("00", 0) + counts.get("11", 0)
        assert correlated / self.shots >= DOMINANT, counts
        json.dumps(result.metadata)  # must be storable as it is

    def test_submit_and_wait_through_the_ledger(self, conformance: _Harness) -> None:
        client = conformance.client
        before = conformance.provider_submissions()
        job = client.submit(
            [bell(), basis_state(2, (1,))],
            backend=self.backend_name,
            shots=self.shots,
            wait=True,
            wait_timeout=self.job_timeout,
            name="conformance",
        )
        record = job.record
        assert record.state.value == "COMPLETED", (record.state, record.error)
        counts = job.result().counts
        assert len(counts) == 2
        assert all(sum(c.values()) == self.shots for c in counts)
        assert dominant(counts[1])[0] == "10"
        if not conformance.backend.capabilities.local:
            assert record.provider_job_id
        if before is not None:
            assert conformance.provider_submissions() == before + 1, (
                "one ledger job must be one provider submission"
            )
        # The record is whole when read back by another reader.
        again = client.get_job(record.id).record
        assert again.result is not None and again.result.counts == counts

    def test_bit_order_is_qiskits(self, conformance: _Harness) -> None:
        from qiskit import QuantumCircuit

        partial = QuantumCircuit(3, 2, name="partial")
        partial.x(2)
        partial.measure(2, 0)  # qubit 2 -> classical bit 0 (rightmost)
        partial.measure(0, 1)
        circuits = [basis_state(3, (0,)), basis_state(3, (1,)), basis_state(3, (0, 2)), partial]
        job = conformance.client.submit(
            circuits,
            backend=self.backend_name,
            shots=self.shots,
            wait=True,
            wait_timeout=self.job_timeout,
        )
        assert job.record.state.value == "COMPLETED", job.record.error
        keys = [dominant(c)[0] for c in job.result().counts]
        assert keys == ["001", "010", "101", "01"]
        for counts in job.result().counts:
            assert dominant(counts)[1] >= DOMINANT, counts

    def test_states_map_onto_ours(self, conformance: _Harness) -> None:
        from ..backends.base import ProviderState

        mapping = getattr(type(conformance.backend), "provider_states", None)
        assert isinstance(mapping, dict) and mapping, (
            "a backend declares provider_states: its provider's states -> ProviderState"
        )
        assert all(isinstance(v, ProviderState) for v in mapping.values())
        targets = set(mapping.values())
        assert ProviderState.DONE in targets
        assert ProviderState.FAILED in targets or conformance.backend.capabilities.local
        if (
            conformance.backend.capabilities.supports_cancel
            and not conformance.backend.capabilities.local
        ):
            assert ProviderState.CANCELLED in targets

    def test_cancel(self, conformance: _Harness) -> None:
        from ..backends.base import ProviderState

        client = conformance.client
        # A job no engine has picked up is cancelled in the ledger alone.
        before = conformance.provider_submissions()
        job = client.submit(bell(), backend=self.backend_name, shots=self.shots)
        record = client.cancel(job.id)
        assert record.state.value == "CANCELLED"
        assert conformance.provider_submissions() == before
        slow = conformance.env.slow_circuit
        if slow is None or not conformance.backend.capabilities.supports_cancel:
            return
        # A job at the provider: the cancel reaches it.
        handle = conformance.backend.submit([slow], self.shots, conformance.options())
        handle.cancel()
        seen = conformance.wait_done(handle)
        assert seen[-1].state is ProviderState.CANCELLED, seen[-1]

    def test_reattach_from_a_new_process(self, conformance: _Harness) -> None:
        backend = conformance.backend
        if not backend.capabilities.supports_reattach:
            with pytest.raises(NotImplementedError):
                backend.attach("no-such-job", {})
            return
        handle = backend.submit([basis_state(3, (0,))], self.shots, conformance.options())
        assert handle.provider_job_id
        out = conformance.reattach_in_child(handle.provider_job_id)
        assert out["state"] == "DONE", out
        assert len(out["counts"]) == 1
        assert sum(out["counts"][0].values()) == self.shots
        assert dominant(out["counts"][0])[0] == "001"

    def test_error_cases(self, conformance: _Harness) -> None:
        for case in conformance.env.error_cases:
            case.arrange()
            job = conformance.client.submit(
                bell(), backend=self.backend_name, shots=self.shots, name=f"error-{case.name}"
            )
            try:
                record = conformance.client.wait(job.id, timeout=self.job_timeout)
            except Exception as exc:  # a WaitTimeout is a failure of the case, said plainly
                pytest.fail(f"error case {case.name}: {exc}")
            assert record.state.value == case.state, (case.name, record.state, record.error)
            if case.kind is not None:
                assert record.error_kind == case.kind, (case.name, record.error_kind)
            for words in case.message_contains:
                assert words in (record.error or ""), (case.name, record.error)


class _Harness:
    """What one conformance test works with."""

    def __init__(
        self,
        backend_name: str,
        client: Any,
        env: ConformanceEnv,
        process_env: dict[str, str],
        shots: int,
        timeout: float,
    ) -> None:
        self.backend_name = backend_name
        self.client = client
        self.env = env
        self.process_env = process_env
        self.shots = shots
        self.timeout = timeout

    @property
    def backend(self) -> Any:
        return self.client.registry.get(self.backend_name)

    def options(self) -> dict[str, Any]:
        return {"job_id": "conformance", "tags": {"suite": "conformance"}}

    def provider_submissions(self) -> int | None:
        return None if self.env.submissions is None else self.env.submissions()

    def wait_done(self, handle: Any) -> list[Any]:
        from ..backends.base import ProviderState

        deadline = time.monotonic() + self.timeout
        seen = []
        pause = 0.02
        while True:
            status = handle.status()
            seen.append(status)
            if status.state in (ProviderState.DONE, ProviderState.FAILED, ProviderState.CANCELLED):
                return seen
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.backend_name}: job still {status.state} after {self.timeout:g} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def reattach_in_child(self, provider_job_id: str) -> dict[str, Any]:
        command = [
            sys.executable,
            "-m",
            "qmlops_jupyter.testing.conformance",
            "reattach",
            self.backend_name,
            provider_job_id,
            "--timeout",
            str(self.timeout),
        ]
        if self.env.reattach_bootstrap:
            command += ["--bootstrap", self.env.reattach_bootstrap]
        env = {**os.environ, **self.process_env}
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=self.timeout + 60
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        client = self.client
        if client._registry is not None:
            for backend in list(client.registry._instances.values()):
                backend.close()
        if client._ledger is not None:
            client.ledger.close()


def _reattach_main(argv: list[str]) -> int:
    """``python -m qmlops_jupyter.testing.conformance reattach NAME PROVIDER_JOB_ID``: attach
    to a job from a fresh process, wait for it, print its state and counts as JSON."""
    import argparse
    import importlib

    from ..backends.base import ProviderState
    from ..client import get_client

    parser = argparse.ArgumentParser(prog="qmlops_jupyter.testing.conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    re = sub.add_parser("reattach")
    re.add_argument("backend")
    re.add_argument("provider_job_id")
    re.add_argument("--bootstrap", default=None)
    re.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.bootstrap:
        module, _, function = args.bootstrap.partition(":")
        getattr(importlib.import_module(module), function)()
    backend = get_client().registry.get(args.backend)
    handle = backend.attach(args.provider_job_id, {})
    deadline = time.monotonic() + args.timeout
    while True:
        status = handle.status()
        if status.state in (ProviderState.DONE, ProviderState.FAILED, ProviderState.CANCELLED):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    out: dict[str, Any] = {"state": status.state.value, "counts": None}
    if status.state is ProviderState.DONE:
        out["counts"] = handle.result(timeout=args.timeout).counts
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(_reattach_main(sys.argv[1:]))
