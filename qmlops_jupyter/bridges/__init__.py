"""Bridges for training loops: a PennyLane device and a Qiskit backend that send every circuit
execution through qmlops (recorded in the ledger, limited, visible everywhere).

- ``qml.device("qmlops", backend="ibm:fake_manila", wires=4, shots=1000)``
  (:mod:`qmlops_jupyter.bridges.pennylane_device`);
- ``QmlopsBackend("braket_local")`` (:mod:`qmlops_jupyter.bridges.qiskit_backend`).
"""
