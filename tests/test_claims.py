"""Claims with statistics: intervals, three-way verdicts, thresholds in code, re-judging, seed offsets."""

import math

import numpy as np
import pytest

from nnbasics.runs import claims
from nnbasics.runs import experiment as exp


def test_interval_matches_hand_computation():
    xs = [1.0, 2.0, 4.0, 7.0]
    st = claims.interval(xs)
    mean, sd = np.mean(xs), np.std(xs, ddof=1)
    half = 3.182446305284263 * sd / math.sqrt(4)  # t_{0.975, 3}
    assert st["n"] == 4
    assert st["mean"] == pytest.approx(mean)
    assert st["std"] == pytest.approx(sd)
    assert st["ci"] == pytest.approx([mean - half, mean + half], rel=1e-9)
    assert claims.t_quantile(1) == pytest.approx(12.706204736174707)


@pytest.mark.parametrize("samples, op, value, verdict", [
    ([5.0, 5.1, 4.9, 5.05], ">=", 4.0, "pass"),  # interval entirely above
    ([5.0, 5.1, 4.9, 5.05], ">=", 6.0, "fail"),  # interval entirely below
    ([5.0, 5.1, 4.9, 5.05], ">=", 5.0, "inconclusive"),  # straddles
    ([5.0, 5.1, 4.9, 5.05], "<=", 6.0, "pass"),
    ([5.0, 5.1, 4.9, 5.05], "<", 5.0, "inconclusive"),
    ([5.0], ">=", 4.0, "inconclusive"),  # one seed cannot decide a random quantity
    ([5.0, float("nan")], ">=", 4.0, "fail"),  # a non-finite measurement fails
    ([3.0, 3.0, 3.0], ">=", 3.0, "pass"),  # no spread: the point decides
    ([3.0, 3.0, 3.0], ">", 3.0, "fail"),
])
def test_decide(samples, op, value, verdict):
    assert claims.decide(samples, claims.Threshold(op, value))["verdict"] == verdict


def test_deterministic_check_and_combination():
    th = claims.Threshold("<=", 0.0)
    assert claims.check("mismatches", 0, th, random=False)["verdict"] == "pass"
    assert claims.check("mismatches", 1, th, random=False)["verdict"] == "fail"
    assert claims.combine(["pass", "inconclusive"]) == "inconclusive"
    assert claims.combine(["inconclusive", "fail", "pass"]) == "fail"
    assert claims.combine(["pass", "pass"]) == "pass"
    with pytest.raises(ValueError):
        claims.Threshold("=>", 1.0)
    with pytest.raises(ValueError):
        claims.claim("x", "x", "s", "e", {}, passed=None)


def test_claim_verdict_from_checks_and_passed():
    th = claims.Threshold(">=", 1.0)
    ok = claims.check("gain", [2.0, 2.5, 3.0], th)
    c = claims.claim("a", "A", "src", "gain >= 1", {"gain": [2.0, 2.5, 3.0]}, checks=[ok])
    assert c["verdict"] == "pass" and c["checks"][0]["n"] == 3
    c = claims.claim("a", "A", "src", "gain >= 1", {"gain": 2.5}, passed=False, checks=[ok])
    assert c["verdict"] == "fail"
    c = claims.claim("a", "A", "src", "e", {"x": float("inf")}, passed=True)
    assert c["verdict"] == "fail"


def test_rejudge_uses_todays_threshold_without_retraining():
    stored = claims.claim("a", "A", "src", "e", {}, checks=[claims.check("gain", [2.0, 2.5, 3.0], claims.Threshold(">=", 1.0))])
    assert stored["verdict"] == "pass"
    again = claims.rejudge(stored, {"gain": claims.Threshold(">=", 2.5)})
    assert again["verdict"] == "inconclusive" and again["checks"][0]["threshold"] == 2.5
    assert claims.rejudge(stored, {"gain": claims.Threshold(">=", 10.0)})["verdict"] == "fail"
    assert claims.rejudge(stored, {})["verdict"] == "pass"  # unknown names keep the stored threshold


def test_check_text():
    k = claims.check("gain", [1.0, 2.0, 3.0], claims.Threshold(">=", 0.5))
    assert k["ci"][0] < 2.0 < k["ci"][1]
    text = claims.check_text(k)
    assert text.startswith("gain = 2 [") and "(n=3) >= 0.5" in text


def test_terminal_summary_lists_failed_then_inconclusive():
    th = claims.Threshold(">=", 1.0)
    results = [{"experiment": "e", "claims": [
        claims.claim("ok", "A", "s", "e", {}, passed=True),
        claims.claim("unsure", "B", "s", "e", {}, checks=[claims.check("g", [0.5, 1.5, 1.2], th)]),
        claims.claim("bad", "C", "s", "expected something", {}, passed=False),
    ]}]
    text = exp.terminal_summary(results, "runs/report.md")
    lines = text.splitlines()
    assert lines[0] == "1 of 3 claims pass (1 failed, 1 inconclusive)"
    assert lines[1].split()[:2] == ["FAIL", "e/bad:"]
    assert lines[2].split()[:2] == ["INCONCLUSIVE", "e/unsure:"] and "(n=3) >= 1" in lines[2]
    assert lines[-1] == "report: runs/report.md"


@pytest.mark.parametrize("name", exp.experiment_names())
def test_seed_offset_shifts_every_seed_key(name):
    base = exp.get_config(name, "smoke")
    shifted = exp.get_config(name, "smoke", seed_offset=100)
    flat_b, flat_s = _flat(base.to_dict()), _flat(shifted.to_dict())
    seed_keys = [k for k in flat_b if exp.is_seed_key(k.split(".")[-1])]
    if getattr(exp.load_experiment(name), "DETERMINISTIC", False):
        assert not seed_keys and flat_b == flat_s
        return
    assert seed_keys, f"{name} has no seed key: --seed-offset would change nothing"
    for k, v in flat_b.items():
        if k in seed_keys:
            want = v + 100 if isinstance(v, int) else tuple(s + 100 for s in v)
            assert tuple(np.atleast_1d(flat_s[k])) == tuple(np.atleast_1d(want)), k
        else:
            assert flat_s[k] == v, k


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = tuple(v) if isinstance(v, list) else v
    return out


def test_seed_offset_names_the_workdir():
    assert str(exp.default_workdir("mnist1d", "quick", "runs", 100)) == "runs/mnist1d-quick-seed100"
    assert str(exp.default_workdir("mnist1d", "quick", "runs")) == "runs/mnist1d-quick"
    with pytest.raises(exp.config_lib.ConfigError):
        exp.get_config("mnist1d", "smoke", seed_offset=-1)


def test_seeds_needed_is_the_smallest_n_of_the_rule():
    import math

    from nnbasics.runs.claims import seeds_needed, t_quantile

    def brute(mean, std, bound):
        for n in range(2, 10_001):
            if t_quantile(n - 1) * std / math.sqrt(n) <= abs(mean - bound) / 2:
                return n
        return None

    for mean, std, bound in [(3.0, 1.41, 0.0), (2.2, 2.6, 0.0), (1.0, 1.0, 0.0), (-0.005, 0.0085, -0.02),
                             (31.6, 0.4, 28.5), (0.9, 0.05, 0.9 - 1e-3), (5.0, 100.0, 0.0)]:
        assert seeds_needed(mean, std, bound) == brute(mean, std, bound), (mean, std, bound)
    assert seeds_needed(3.0, 1.41, 0.0) == 6  # t(5) 1.41 / sqrt(6) = 1.48 <= 1.5; at n = 5: 1.75
    assert seeds_needed(1.0, 0.0, 0.0) == 2 and seeds_needed(1.0, 0.0, 1.0) is None
    assert seeds_needed(0.0, 1.0, 0.0) is None and seeds_needed(1.0, float("nan"), 0.0) is None


def test_every_random_check_carries_its_seed_count():
    from nnbasics.runs.claims import Threshold, check, seeds_needed

    k = check("gain", [2.0, 3.0, 4.0, 3.5], Threshold(">", 0.0))
    assert k["seeds_needed"] == seeds_needed(k["mean"], k["std"], 0.0) == 4  # t(3) 0.854 / 2 <= 3.125 / 2
    assert "seeds_needed" not in check("count", 5, Threshold(">=", 1), random=False)


def test_seed_counts_script_pools_offsets_and_flags_short_counts(tmp_path):
    """scripts/seed_counts.py pools each check's per-seed samples over the runs given and applies the rule."""
    import importlib.util
    import json
    import pathlib

    from nnbasics.runs.claims import Threshold, check, claim, seeds_needed

    spec = importlib.util.spec_from_file_location("seed_counts", pathlib.Path(__file__).parents[1] / "scripts" / "seed_counts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    runs = {0: [1.0, 3.0, 0.5], 100: [4.0, -1.0, 2.0]}  # a noisy gain: 6 pooled samples
    for off, xs in runs.items():
        c = claim("g", "gain", "s", "> 0", {}, checks=[check("gain", xs, Threshold(">", 0.0))])
        doc = {"experiments": [{"experiment": "regularization", "preset": "quick", "claims": [c]}], "seed_offset": off}
        name = "claims.json" if off == 0 else f"claims-seed{off}.json"
        (tmp_path / name).write_text(json.dumps(doc))
    text, short = mod.table([tmp_path])
    pooled = [x for xs in runs.values() for x in xs]
    need = seeds_needed(float(np.mean(pooled)), float(np.std(pooled, ddof=1)), 0.0)
    assert f"| 3/3 | {np.mean(pooled):.4g} |" in text and f"| > 0 | {need} | raise |" in text and short == 1
    assert mod.main([str(tmp_path / "nowhere")]) == 2
