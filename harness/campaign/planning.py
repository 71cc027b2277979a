"""How many subjects and transactions a claim needs ("far<=0.001@0.95").

The claim holds when the one-sided upper bound at the confidence is within the limit (the
verdict rule of harness/campaign/limits.py). With no errors that needs n = -ln(1 - c) / p
independent trials (the rule of 3 at 95%); allowing for an expected true rate, the smallest n
whose exact (Clopper-Pearson) bound at the expected number of errors is within the limit.
Attempts by one person are correlated: with m transactions per subject and intra-subject
correlation rho, the design effect 1 + (m - 1) rho multiplies the trials needed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.campaign.limits import RATE_NAMES
from harness.measure import rate_bounds

CLAIM_RE = re.compile(r"^\s*([a-z_]+)\s*<=\s*([0-9.eE+-]+)\s*(?:@\s*([0-9.]+))?\s*$")


class ClaimError(ValueError):
    pass


@dataclass(frozen=True)
class Claim:
    figure: str
    max: float
    confidence: float = 0.95


@dataclass(frozen=True)
class SampleSize:
    independent: int  # trials needed if every trial were independent
    design_effect: float
    transactions: int
    subjects: int
    errors_allowed: int


def parse_claim(text: str) -> Claim:
    m = CLAIM_RE.match(text)
    if not m:
        raise ClaimError(f"claim {text!r}: expected FIGURE<=RATE[@CONFIDENCE], e.g. far<=0.001@0.95")
    figure, value, conf = m.group(1), float(m.group(2)), float(m.group(3) or 0.95)
    if figure not in RATE_NAMES:
        raise ClaimError(f"claim {text!r}: unknown figure {figure!r}; one of {', '.join(RATE_NAMES)}")
    if not 0 < value < 1:
        raise ClaimError(f"claim {text!r}: the rate must be in (0, 1)")
    if not 0.5 <= conf < 1:
        raise ClaimError(f"claim {text!r}: the confidence must be in [0.5, 1)")
    return Claim(figure, value, conf)


def independent_trials(claim: Claim, expected: float = 0.0) -> tuple[int, int]:
    """(n, errors allowed): the fewest independent trials for which ``expected`` * n errors still
    leave the upper bound within the claim."""
    if expected >= claim.max:
        raise ClaimError(f"an expected rate of {expected} can never support {claim.figure} <= {claim.max}")
    n = math.ceil(-math.log(1 - claim.confidence) / claim.max)
    if expected <= 0:
        return n, 0
    while True:  # grows geometrically, then the bound is checked exactly
        k = math.ceil(expected * n)
        if rate_bounds(k, n, claim.confidence)[1] <= claim.max:
            break
        n = math.ceil(n * 1.1)
    lo, hi = n // 1.1, n
    lo = int(lo)
    while hi - lo > 1:  # the smallest n that works
        mid = (lo + hi) // 2
        if rate_bounds(math.ceil(expected * mid), mid, claim.confidence)[1] <= claim.max:
            hi = mid
        else:
            lo = mid
    return hi, math.ceil(expected * hi)


def sample_size(claim: Claim, per_subject: int = 10, icc: float = 0.1, expected: float = 0.0) -> SampleSize:
    if per_subject < 1:
        raise ClaimError("--per-subject must be at least 1")
    if not 0 <= icc <= 1:
        raise ClaimError("--icc must be in [0, 1]")
    n, k = independent_trials(claim, expected)
    deff = 1 + (per_subject - 1) * icc
    total = math.ceil(n * deff)
    return SampleSize(n, deff, total, math.ceil(total / per_subject), k)
