"""Cost: price estimates from public pricing data, and per-owner budgets.

:func:`estimate` prices a job before it is sent (``Backend.estimate`` calls it), from the rules
in ``pricing.yaml``; :mod:`.budgets` keeps each owner's limits and checks them, atomically, in
the transaction that records a job.
"""

from .estimate import Estimate, PricingTable, estimate, load_pricing

__all__ = ["Estimate", "PricingTable", "estimate", "load_pricing"]
