"""The backend conformance suite against Aer, the offline default (real simulation, in-process
and in worker processes)."""

from __future__ import annotations

from qmlops_jupyter.testing.conformance import BackendConformance


class TestAerConformance(BackendConformance):
    backend_name = "aer"
