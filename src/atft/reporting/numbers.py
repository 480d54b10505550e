"""Numbers that may be missing: the finite check and the formatting every report and table shares.

Run files hold NaN, None and the odd non-number wherever a metric had nothing to compute on; the report
shows those as a placeholder instead of failing or printing ``nan``.
"""

from __future__ import annotations

import math
from typing import Any


def finite(x: Any) -> bool:
    """True for a finite int or float (bools are not numbers here)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any, spec: str, missing: str = "n/a") -> str:
    """``format(x, spec)`` for a finite number, else ``missing``."""
    return format(x, spec) if finite(x) else missing
