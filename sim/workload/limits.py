"""How many requests one run may hold, and the error for a workload that would exceed it.

Requests live in memory as arrays of about 24 bytes each, plus temporaries while they are
generated. A typo in a rate or a horizon (`rate_per_s: 40000` over a year) would otherwise
exhaust memory before anything useful happens, so generators estimate their count first and
refuse, with a message a person can act on, when it is above `MAX_REQUESTS`.
"""

from __future__ import annotations

from sim.spec.errors import SpecError, SpecIssue

MAX_REQUESTS = 100_000_000


def check_request_count(expected: float, where: str) -> None:
    """Raise a SpecError when about `expected` requests would be generated, above the limit."""
    if expected > MAX_REQUESTS:
        raise SpecError([
            SpecIssue(
                where,
                f"would generate about {expected:.3g} requests over the horizon, more than "
                f"the {MAX_REQUESTS:,} one run can hold; lower the rate or the horizon",
                has_value=False,
            )
        ])


def spec_error(where: str, message: str, allowed: str = "") -> SpecError:
    """A SpecError with one issue that has no single offending value to show."""
    return SpecError([SpecIssue(where, message, allowed=allowed, has_value=False)])
