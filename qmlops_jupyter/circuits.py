"""Circuits in: OpenQASM 2/3 text and Qiskit ``QuantumCircuit``; stored as QPY + OpenQASM 3.

Every circuit of a job is kept in the ledger as one QPY blob for the job (exact, fast to write
and load, so a job can be re-run or re-attached in another process) and as OpenQASM 3 text
(portable, readable). Width, depth and gate counts are recorded per circuit.

Bad input raises :class:`~qmlops_jupyter.errors.InvalidCircuit` with a one-line message.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidCircuit, one_line
from .models import CircuitInfo

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

#: Preparing circuits (parse, QPY, DAG) from many threads at once has crashed the interpreter
#: inside Qiskit's native code here (20 threads submitting at the same moment), and the
#: OpenQASM 3 parser silences stderr process-wide while it runs. The work holds the GIL
#: anyway, so threads lose nothing by taking turns.
_QISKIT_LOCK = threading.Lock()

#: Jobs with at most this many circuits get their OpenQASM 3 rendered at submission; larger
#: batches render it from the QPY on first read (rendering costs ~0.7 ms a circuit).
EAGER_QASM3_LIMIT = 64

_HEADER = re.compile(
    r"^\s*(?:(?://[^\n]*\n|/\*.*?\*/)\s*)*OPENQASM\s+(?P<major>\d+)(?:\.\d+)?\s*;", re.DOTALL
)


@dataclass
class PreparedCircuits:
    """Circuits parsed and measured, ready to be stored and run."""

    circuits: list[QuantumCircuit]
    infos: list[CircuitInfo]
    #: OpenQASM 3 per circuit, or None where it is rendered later.
    qasm3: list[str | None]
    qpy: bytes
    fingerprint: str

    @property
    def max_qubits(self) -> int:
        return max((i.num_qubits for i in self.infos), default=0)


def parse_text(text: str | bytes, label: str = "circuit") -> tuple[QuantumCircuit, str, str]:
    """Parse OpenQASM 2 or 3 text; return the circuit, its format and the text."""
    if isinstance(text, bytes | bytearray):
        if b"\x00" in text:
            raise InvalidCircuit(f"{label}: not OpenQASM text (binary data)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCircuit(f"{label}: not OpenQASM text (not UTF-8)") from None
    text = text.lstrip("\ufeff")
    if "\x00" in text:
        raise InvalidCircuit(f"{label}: not OpenQASM text (binary data)")
    if not text.strip():
        raise InvalidCircuit(f"{label}: empty circuit text")
    match = _HEADER.match(text)
    version = match.group("major") if match else "3"
    if version == "2":
        from qiskit import qasm2

        try:
            circuit = qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
        except Exception as exc:  # qasm2.QASM2ParseError and friends
            raise InvalidCircuit(f"{label}: invalid OpenQASM 2: {_parser_message(exc)}") from None
        return circuit, "qasm2", text
    if version != "3":
        raise InvalidCircuit(f"{label}: unsupported OpenQASM version {version} (use 2 or 3)")
    circuit = _load_qasm3(text, label)
    return circuit, "qasm3", text


def _load_qasm3(text: str, label: str) -> QuantumCircuit:
    import contextlib
    import os

    from qiskit import qasm3

    try:
        # The ANTLR parser prints syntax errors to stderr before raising; keep that quiet.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            return qasm3.loads(text)
    except Exception as exc:
        raise InvalidCircuit(f"{label}: invalid OpenQASM 3: {_parser_message(exc)}") from None


def _parser_message(exc: BaseException) -> str:
    message = one_line(getattr(exc, "message", None) or exc) or type(exc).__name__
    return message[:300]


def prepare(circuits: Any, *, labels: Sequence[str] | None = None) -> PreparedCircuits:
    """Turn what a user submitted into stored form.

    ``circuits`` is one circuit or a list; each is OpenQASM text (``str``/``bytes``), a
    ``QuantumCircuit``, a Braket ``Circuit``, or a PennyLane tape, QNode (without required
    arguments) or quantum function.
    """
    with _QISKIT_LOCK:
        return _prepare(circuits, labels)


def _prepare(circuits: Any, labels: Sequence[str] | None) -> PreparedCircuits:
    from qiskit import QuantumCircuit, qpy

    items = _expand_foreign(_as_list(circuits))
    if not items:
        raise InvalidCircuit("a job needs at least one circuit")
    parsed: list[QuantumCircuit] = []
    formats: list[str] = []
    texts: list[str | None] = []
    for i, item in enumerate(items):
        label = labels[i] if labels and i < len(labels) else f"circuit {i}"
        if isinstance(item, QuantumCircuit):
            circuit, fmt, text = item, "qiskit", None
        elif isinstance(item, str | bytes | bytearray):
            circuit, fmt, text = parse_text(item, label)
        else:
            raise InvalidCircuit(
                f"{label}: expected OpenQASM text, a qiskit QuantumCircuit, a Braket Circuit "
                "or a PennyLane tape, QNode or quantum function, "
                f"got {type(item).__name__}"
            )
        if circuit.num_parameters:
            names = ", ".join(p.name for p in list(circuit.parameters)[:5])
            raise InvalidCircuit(
                f"{label}: has unbound parameters ({names}); bind them with assign_parameters"
            )
        if circuit.num_qubits == 0:
            raise InvalidCircuit(f"{label}: has no qubits")
        parsed.append(circuit)
        formats.append(fmt)
        texts.append(text)

    buffer = io.BytesIO()
    qpy.dump(parsed, buffer)
    raw = buffer.getvalue()
    # What makes two requests "the same" for idempotency: the text as submitted (parsing gives
    # each circuit a fresh automatic name), or the exact QPY of circuit objects.
    if all(t is not None for t in texts):
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()  # type: ignore[arg-type]
    else:
        digest = hashlib.sha256(raw).hexdigest()
    infos = [describe(c, i, f) for i, (c, f) in enumerate(zip(parsed, formats, strict=True))]
    eager = len(parsed) <= EAGER_QASM3_LIMIT
    qasm: list[str | None] = []
    for circuit, fmt, text in zip(parsed, formats, texts, strict=True):
        if fmt == "qasm3":
            qasm.append(text)
        elif eager:
            qasm.append(to_qasm3(circuit))
        else:
            qasm.append(None)
    return PreparedCircuits(parsed, infos, qasm, zlib.compress(raw, 1), digest)


def _is_pennylane(obj: Any) -> bool:
    """A PennyLane tape or QNode."""
    return type(obj).__module__.startswith("pennylane")


def _is_quantum_function(obj: Any) -> bool:
    """A plain Python function (or a partial of one): taken for a PennyLane quantum function.
    Not any callable: Braket's ``Circuit`` is callable (it binds parameters)."""
    import functools
    import inspect

    return inspect.isfunction(obj) or isinstance(obj, functools.partial)


def _is_braket(obj: Any) -> bool:
    return type(obj).__module__.startswith("braket.")


def _expand_foreign(items: list[Any]) -> list[Any]:
    """Braket circuits, PennyLane tapes, QNodes and quantum functions as Qiskit circuits (one
    PennyLane object can give several: non-commuting observables, broadcast parameters)."""
    out: list[Any] = []
    for item in items:
        if _is_braket(item):
            from .interop.braket import from_braket

            out.append(from_braket(item))
        elif _is_pennylane(item) or _is_quantum_function(item):
            from .interop.pennylane import to_qiskit

            out.extend(to_qiskit(item))
        else:
            out.append(item)
    return out


def _as_list(circuits: Any) -> list[Any]:
    # A PennyLane tape is iterable (its operations): it is one circuit, not a list.
    if (
        isinstance(circuits, str | bytes | bytearray)
        or _is_pennylane(circuits)
        or _is_braket(circuits)
    ):
        return [circuits]
    if isinstance(circuits, Iterable):
        try:
            from qiskit import QuantumCircuit

            if isinstance(circuits, QuantumCircuit):
                return [circuits]
        except ImportError:  # pragma: no cover - qiskit is a core dependency
            pass
        return list(circuits)
    return [circuits]


def describe(circuit: QuantumCircuit, index: int, source_format: str) -> CircuitInfo:
    """Width, depth and gate counts of one circuit."""
    from qiskit.converters import circuit_to_dag

    # The DAG's depth is computed natively: ~6x faster than QuantumCircuit.depth() for
    # thousand-circuit batches.
    depth = circuit_to_dag(circuit, copy_operations=False).depth()
    counts = {str(k): int(v) for k, v in circuit.count_ops().items()}
    # Every value is built right here, so skip pydantic's validation (it adds ~5 ms per
    # thousand circuits).
    return CircuitInfo.model_construct(
        index=index,
        name=circuit.name,
        num_qubits=circuit.num_qubits,
        num_clbits=circuit.num_clbits,
        depth=depth,
        size=sum(counts.values()),
        gate_counts=counts,
        source_format=source_format,
    )


def to_qasm3(circuit: QuantumCircuit) -> str:
    from qiskit import qasm3

    return qasm3.dumps(circuit)


def load_qpy(blob: bytes) -> list[QuantumCircuit]:
    from qiskit import qpy

    return list(qpy.load(io.BytesIO(zlib.decompress(blob))))
