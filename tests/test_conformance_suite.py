"""The conformance suite catches broken adapters: it is run (in a separate pytest process)
against Aer adapters broken on purpose, and must fail exactly the checks they break while
passing the rest."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

SUITE = textwrap.dedent('''
    import pytest
    from qmlops_jupyter.backends.aer import AerBackend
    from qmlops_jupyter.backends.base import Capabilities, ProviderResult
    from qmlops_jupyter.testing.conformance import BackendConformance, ConformanceEnv


    class ReversedHandle:
        """Counts with classical bit 0 leftmost: the classic bit-order slip."""

        def __init__(self, inner):
            self.inner = inner
            self.provider_job_id = None
            self.phases = {}

        def status(self):
            return self.inner.status()

        def result(self, timeout=None):
            got = self.inner.result(timeout)
            return ProviderResult([{k[::-1]: v for k, v in c.items()} for c in got.counts],
                                  got.metadata)

        def cancel(self):
            self.inner.cancel()


    class ReversedBitOrder(AerBackend):
        def submit(self, circuits, shots, options):
            return ReversedHandle(super().submit(circuits, shots, {}))


    class NoLimits(AerBackend):
        """Claims no width limit and says it is a remote QPU that cannot re-attach."""

        @property
        def capabilities(self):
            caps = super().capabilities
            return Capabilities(provider=caps.provider, simulator=False, local=True,
                                max_qubits=None, supports_reattach=True)


    class TestReversed(BackendConformance):
        backend_name = "reversed"

        @pytest.fixture
        def conformance_env(self):
            yield ConformanceEnv(plugins={"reversed": ReversedBitOrder})


    class TestNoLimits(BackendConformance):
        backend_name = "nolimits"

        @pytest.fixture
        def conformance_env(self):
            yield ConformanceEnv(plugins={"nolimits": NoLimits})
''')


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("suite")
    (folder / "test_broken_adapters.py").write_text(SUITE)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=folder,
    )
    found = dict(
        (m.group(2), m.group(1))
        for m in re.finditer(r"^(PASSED|FAILED|ERROR) [^:\s]+::(\S+)", done.stdout, re.M)
    )
    assert found, done.stdout[-3000:] + done.stderr[-2000:]
    return found


def test_a_reversed_bit_order_fails_the_bit_order_checks(outcomes: dict[str, str]) -> None:
    assert outcomes["TestReversed::test_bit_order_is_qiskits"] == "FAILED"
    assert outcomes["TestReversed::test_submit_and_wait_through_the_ledger"] == "FAILED"
    # What it does not break still passes.
    for name in (
        "test_limits_enforced_before_submission",
        "test_states_map_onto_ours",
        "test_cancel",
        "test_describes_itself_without_network",
    ):
        assert outcomes[f"TestReversed::{name}"] == "PASSED", name


def test_false_capabilities_fail_their_checks(outcomes: dict[str, str]) -> None:
    # A "local" backend that claims re-attach, and cannot do it from a new process.
    assert outcomes["TestNoLimits::test_describes_itself_without_network"] == "FAILED"
    assert outcomes["TestNoLimits::test_reattach_from_a_new_process"] in ("FAILED", "ERROR")
    assert outcomes["TestNoLimits::test_bit_order_is_qiskits"] == "PASSED"
