"""What a notebook run as a pipeline can call: :func:`wait_for`."""

from __future__ import annotations
