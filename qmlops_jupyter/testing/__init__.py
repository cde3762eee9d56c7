"""Test utilities shipped with the package, for our adapters and third parties' alike:

- :mod:`qmlops_jupyter.testing.conformance`: the backend conformance suite (pytest);
- :mod:`qmlops_jupyter.testing.ionq_emulator`: a loopback emulator of IonQ's v0.3 REST API.
"""
