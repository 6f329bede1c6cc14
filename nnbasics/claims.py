"""Claims: a statement from the lecture or a paper, what was measured, and a computed verdict.

    c = claim("cnn_accuracy", "The CNN reaches ~94% test accuracy", "Greydanus & Kobak 2020, Table 1",
              expected="94% +- 3 (at least 91%)", measured={"test_accuracy_cnn": acc},
              passed=within(acc, 94, 3) and acc >= 91)

A verdict is always computed from numbers; a non-finite measurement fails.
"""

from __future__ import annotations

import math
from typing import Any, Mapping


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in values)


def within(value: float, target: float, tol: float) -> bool:
    """|value - target| <= tol."""
    value, target, tol = float(value), float(target), float(tol)
    return _finite(value, target) and abs(value - target) <= tol


def at_least(value: float, bound: float) -> bool:
    value, bound = float(value), float(bound)
    return _finite(value) and value >= bound


def at_most(value: float, bound: float) -> bool:
    value, bound = float(value), float(bound)
    return _finite(value) and value <= bound


def claim(
    id: str,
    claim: str,
    source: str,
    expected: str,
    measured: Mapping[str, Any],
    passed: bool,
    **extra: Any,
) -> dict[str, Any]:
    """One claims.json entry. `passed` must be computed from `measured` by the caller."""
    clean: dict[str, Any] = {}
    for k, v in measured.items():
        if isinstance(v, (list, tuple)):
            clean[k] = [float(x) for x in v]
        else:
            clean[k] = float(v) if not isinstance(v, bool) else float(v)
    numbers = [x for v in clean.values() for x in (v if isinstance(v, list) else [v])]
    ok = bool(passed) and all(math.isfinite(x) for x in numbers)
    return {
        "id": id,
        "claim": claim,
        "source": source,
        "expected": expected,
        "measured": clean,
        "verdict": "pass" if ok else "fail",
        **extra,
    }


def summary(claims: list[Mapping[str, Any]]) -> dict[str, int]:
    passed = sum(c["verdict"] == "pass" for c in claims)
    return {"passed": passed, "failed": len(claims) - passed, "total": len(claims)}
