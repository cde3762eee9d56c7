"""Bridges for training loops: a PennyLane device and a Qiskit backend that send every circuit
execution through qmlops (recorded in the ledger, limited, visible everywhere).

- ``qml.device("qmlops", backend="ibm:fake_manila", wires=4, shots=1000)``
  (:mod:`qmlops_jupyter.bridges.pennylane_device`);
- ``QmlopsBackend("braket_local")`` (:mod:`qmlops_jupyter.bridges.qiskit_backend`).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy: the Qiskit bridge imports qiskit, the PennyLane one pennylane.
    if name == "QmlopsBackend":
        from .qiskit_backend import QmlopsBackend

        return QmlopsBackend
    if name == "QmlopsDevice":
        from .pennylane_device import QmlopsDevice

        return QmlopsDevice
    raise AttributeError(f"module 'qmlops_jupyter.bridges' has no attribute {name!r}")
