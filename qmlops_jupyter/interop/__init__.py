"""Circuits in from other SDKs (Braket ``Circuit``, PennyLane tapes, QNodes and quantum
functions) and out to each provider's native form. Each module imports its SDK lazily."""
