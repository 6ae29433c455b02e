"""Making nested results JSON-safe: numpy scalars to Python numbers, recursively."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def plain(x: Any, *, nonfinite_to_none: bool = False) -> Any:
    """``x`` with numpy scalars turned into Python numbers (dicts, lists, tuples recursively);
    with ``nonfinite_to_none``, NaN and infinities become None."""
    if isinstance(x, dict):
        return {k: plain(v, nonfinite_to_none=nonfinite_to_none) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v, nonfinite_to_none=nonfinite_to_none) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if nonfinite_to_none and isinstance(x, float) and not math.isfinite(x):
        return None
    return x
