"""Claims: a statement from the lecture or a paper, what was measured, and a computed verdict.

A claim holds one or more *checks*. A check compares a statistic with a threshold that lives in
the experiment's code (a module-level `THRESHOLDS` dict of `Threshold`s, never a config key):

    THRESHOLDS = {"cnn_accuracy": Threshold(">=", 91.0, "the reference code's 92-93% less rounding")}
    ...
    c = claim("test_accuracy_cnn", "The CNN reaches ~94% test accuracy", "Greydanus & Kobak 2020",
              expected="mean over seeds {cnn_accuracy}%", measured={"test_accuracy_cnn": accs},
              checks=[check("cnn_accuracy", per_seed_accuracies, THRESHOLDS["cnn_accuracy"])])

The "expected" text names its thresholds, never their numbers: `{cnn_accuracy}` becomes ">= 91" (the
check's threshold), `{cnn_accuracy:g}` the number alone; outside a claim's checks,
`f"{THRESHOLDS['x']}"` formats the same way. A changed threshold changes the text with it
(tests/test_thresholds.py fails when a literal text repeats a threshold's number).

A random quantity (one value per seed; paired comparisons pass the per-seed differences) is
decided with a 95% Student-t interval of its mean: `pass` when the whole interval lies on the
claim's side of the threshold, `fail` when it lies on the other side, `inconclusive` otherwise (or
with fewer than two seeds). Beside each such check stands `seeds_needed`, the seed-count rule
applied to its own samples: the n at which the interval's half-width is at most half the distance
between the mean and the threshold (`scripts/seed_counts.py` pools it over seed offsets). A
deterministic quantity (`random=False`: a parameter count, an exact identity) is decided by its
value. A claim passes when every check passes, fails when any check
fails, and is inconclusive otherwise. A non-finite measurement fails.

Every check stores its samples and the name of its threshold, so `rejudge` recomputes verdicts
from stored measurements with the thresholds of today's code, without retraining.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypedDict

VERDICTS = ("pass", "fail", "inconclusive")
CONFIDENCE = 0.95
_OPS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class Threshold:
    """`statistic op value`, e.g. Threshold(">=", 91.0, "why this number"): the side the claim is on."""

    op: str
    value: float
    why: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"Threshold op must be one of {_OPS}, got {self.op!r}")

    def text(self) -> str:
        return f"{self.op} {_num(self.value)}"

    def __format__(self, spec: str) -> str:
        """f"{t}": '>= 91' (the side and the number); f"{t:g}": the number alone, formatted by `spec`."""
        return self.text() if not spec else format(float(self.value), spec)


class Check(TypedDict, total=False):
    """One check as stored in claims.json (what `check` returns): the statistic's samples, its
    threshold, and the statistics and verdict `decide` computed from them."""

    name: str  # the key of the experiment's THRESHOLDS
    statistic: str  # what is compared, for the report (defaults to `name`)
    op: str
    threshold: float
    random: bool  # one value per seed (an interval decides) or one deterministic value
    samples: list[float]
    n: int
    mean: float
    std: float
    ci: list[float]
    verdict: str
    seeds_needed: int | None


class Claim(TypedDict, total=False):
    """One claims.json entry (what `claim` returns); `checks` and/or `passed` decide `verdict`.
    Further keys (`extra` of `claim`, `error` of a failed run) are stored beside these."""

    id: str
    claim: str
    source: str
    expected: str
    measured: dict[str, float | list[float]]
    verdict: str
    checks: list[Check]
    passed: bool


def _num(v: float) -> str:
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in values)


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, sample standard deviation, n and the `confidence` t-interval of the mean."""
    xs = [float(x) for x in samples]
    n = len(xs)
    if n == 0:
        raise ValueError("interval needs at least one sample")
    mean = sum(xs) / n
    if n < 2 or not all(math.isfinite(x) for x in xs):  # no spread to estimate
        return {"n": n, "mean": mean, "std": float("nan"), "ci": [float("-inf"), float("inf")]}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": [mean - half, mean + half]}


MAX_SEEDS = 10_000  # seeds_needed beyond this: None (the mean sits on the threshold)


def seeds_needed(mean: float, std: float, bound: float, confidence: float = CONFIDENCE) -> int | None:
    """The seed-count rule: the smallest n >= 2 at which the `confidence` t-interval's half-width,
    t(n-1) std / sqrt(n), is at most half the distance between the mean and the threshold, so that
    another draw of seeds with the same spread decides the same way. None when no n up to MAX_SEEDS
    does (or the spread is unknown)."""
    gap = abs(float(mean) - float(bound)) / 2
    if not (math.isfinite(gap) and math.isfinite(std)):
        return None
    if std == 0:
        return 2 if gap > 0 else None
    # t(n-1) > 1.96, so n >= (1.96 std / gap)^2; from there up, in doubling steps, then bisection
    lo = max(2, int((1.959963984540054 * std / gap) ** 2) if gap > 0 else MAX_SEEDS + 1)
    if lo > MAX_SEEDS:
        return None

    def ok(n: int) -> bool:
        return t_quantile(n - 1, confidence) * std / math.sqrt(n) <= gap

    hi = lo
    while not ok(hi):
        if hi >= MAX_SEEDS:
            return None
        lo, hi = hi + 1, min(2 * hi, MAX_SEEDS)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return hi


def _holds(value: float, op: str, bound: float) -> bool:
    return {">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound}[op]


def decide(samples: Sequence[float], threshold: Threshold, random: bool = True) -> dict[str, Any]:
    """The statistics and verdict of one check (see the module docstring)."""
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("a check needs at least one sample")
    finite = all(math.isfinite(x) for x in xs)
    if not random:
        if len(xs) != 1:
            raise ValueError(f"a deterministic check takes one value, got {len(xs)}")
        verdict = "pass" if finite and _holds(xs[0], threshold.op, threshold.value) else "fail"
        return {"n": 1, "mean": xs[0], "verdict": verdict}
    stats = interval(xs)
    if not finite:
        verdict = "fail"
    elif stats["n"] < 2:
        verdict = "inconclusive"
    else:
        lo, hi = stats["ci"]
        if _holds(lo, threshold.op, threshold.value) and _holds(hi, threshold.op, threshold.value):
            verdict = "pass"
        elif not _holds(lo, threshold.op, threshold.value) and not _holds(hi, threshold.op, threshold.value):
            verdict = "fail"
        else:
            verdict = "inconclusive"
    return {**stats, "verdict": verdict, "seeds_needed": seeds_needed(stats["mean"], stats["std"], threshold.value)}


def check(name: str, samples: float | Iterable[float], threshold: Threshold, random: bool = True,
          statistic: str | None = None) -> Check:
    """One check of a claim: `samples` (one value per seed, or one value with random=False)
    against `threshold`, which must be the experiment's `THRESHOLDS[name]`."""
    xs = [float(samples)] if isinstance(samples, (int, float)) else [float(x) for x in samples]
    return Check(name=name, statistic=statistic or name, op=threshold.op, threshold=float(threshold.value),
                 random=bool(random), samples=xs, **decide(xs, threshold, random))


def combine(verdicts: Iterable[str]) -> str:
    vs = list(verdicts)
    if any(v == "fail" for v in vs):
        return "fail"
    if any(v == "inconclusive" for v in vs):
        return "inconclusive"
    return "pass"


def _clean(measured: Mapping[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for k, v in measured.items():
        if isinstance(v, (list, tuple)):
            clean[k] = [float(x) for x in v]
        elif hasattr(v, "tolist") and getattr(v, "ndim", 0) > 0:
            clean[k] = [float(x) for x in v.tolist()]
        else:
            clean[k] = float(v)
    return clean


def claim(
    id: str,
    claim: str,
    source: str,
    expected: str,
    measured: Mapping[str, Any],
    passed: bool | None = None,
    checks: Sequence[Mapping[str, Any]] = (),
    **extra: Any,
) -> Claim:
    """One claims.json entry. The verdict combines the `checks` and, for facts that are not a
    comparison with a threshold (an exact identity, an ordering), `passed`, which the caller must
    compute from `measured`. At least one of the two is required. `{name}` in `expected` becomes the
    threshold of the check `name` ('>= 91'; `{name:g}`: the number alone)."""
    if passed is None and not checks:
        raise ValueError(f"claim {id!r} needs checks or a computed `passed`")
    expected = expected_text(id, expected, checks)
    clean = _clean(measured)
    numbers = [x for v in clean.values() for x in (v if isinstance(v, list) else [v])]
    verdicts = [c["verdict"] for c in checks]
    if passed is not None:
        verdicts.append("pass" if bool(passed) else "fail")
    if not all(math.isfinite(x) for x in numbers):
        verdicts.append("fail")
    out = {
        "id": id,
        "claim": claim,
        "source": source,
        "expected": expected,
        "measured": clean,
        "verdict": combine(verdicts),
        **extra,
    }
    if checks:
        out["checks"] = [dict(c) for c in checks]
    if passed is not None:
        out["passed"] = bool(passed)
    return out


_FIELD = re.compile(r"\{([A-Za-z_]\w*)(?::([^{}]*))?\}")


def expected_text(id: str, template: str, checks: Sequence[Mapping[str, Any]]) -> str:
    """`template` with every `{name}` (or `{name:spec}`) replaced by the threshold of the check
    `name`; a field that names no check of the claim is an error naming the ones it has."""
    by_name = {k["name"]: Threshold(k["op"], k["threshold"]) for k in checks}

    def fill(m: re.Match) -> str:
        th = by_name.get(m.group(1))
        if th is None:
            raise ValueError(f"claim {id!r}: the expected text names {{{m.group(1)}}}, which is not one of its "
                             f"checks; valid names: {', '.join(by_name) or 'none (the claim has no checks)'}")
        return format(th, m.group(2) or "")

    return _FIELD.sub(fill, template)


def rejudge(c: Mapping[str, Any], thresholds: Mapping[str, Threshold]) -> dict[str, Any]:
    """The claim `c` (as stored) with every check decided anew from its stored samples against
    today's `thresholds` (a check whose name is no longer in `thresholds` keeps its stored one)."""
    out = dict(c)
    checks = []
    for k in c.get("checks", []):
        th = thresholds.get(k["name"]) or Threshold(k["op"], k["threshold"])
        checks.append({**k, "op": th.op, "threshold": float(th.value), **decide(k["samples"], th, k.get("random", True))})
    verdicts = [k["verdict"] for k in checks]
    if "passed" in c:
        verdicts.append("pass" if c["passed"] else "fail")
    numbers = [x for v in c.get("measured", {}).values() for x in (v if isinstance(v, list) else [v])]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
        verdicts.append("fail")
    if "error" in c:
        verdicts.append("fail")
    if checks:
        out["checks"] = checks
    out["verdict"] = combine(verdicts) if verdicts else c["verdict"]
    return out


def check_text(k: Mapping[str, Any]) -> str:
    """'gap = 0.012 [0.004, 0.020] (n=5) <= 0.05'"""
    if k.get("random", True) and k.get("n", 1) >= 2:
        lo, hi = k["ci"]
        return f"{k['statistic']} = {k['mean']:.4g} [{lo:.4g}, {hi:.4g}] (n={k['n']}) {k['op']} {_num(k['threshold'])}"
    return f"{k['statistic']} = {k['mean']:.4g} {k['op']} {_num(k['threshold'])}"


# Single-value helpers for deterministic facts (an exact identity, a parameter count).
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


def summary(claims: list[Mapping[str, Any]]) -> dict[str, int]:
    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    return {"passed": counts["pass"], "failed": counts["fail"], "inconclusive": counts["inconclusive"],
            "total": len(claims)}
