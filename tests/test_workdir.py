import json
import math

import numpy as np

from nnbasics.runs import claims
from nnbasics.runs.workdir import MetricsWriter, Workdir, atomic_write_json, read_metrics


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(3), "z": float("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "y": [0, 1, 2], "z": "nan"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_metrics_append_and_torn_line_skipped(tmp_path):
    w = MetricsWriter(tmp_path / "m.jsonl")
    w.write({"step": 1})
    w.write({"step": 2})
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"step": 3')  # a crash mid-line
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]


def test_save_figure(tmp_path):
    from nnbasics.runs.plotting import subplots

    wd = Workdir(tmp_path)
    fig, (ax,) = subplots()
    ax.plot([0, 1], [1, 0])
    rel = wd.save_figure(fig, "line")
    assert rel == "figures/line.png" and (tmp_path / rel).read_bytes()[:4] == b"\x89PNG"


def test_claim_verdicts_are_computed():
    ok = claims.claim("a", "x", "s", "1 +- 0.5", {"v": 1.2}, claims.within(1.2, 1, 0.5))
    bad = claims.claim("b", "x", "s", "1 +- 0.5", {"v": 2.0}, claims.within(2.0, 1, 0.5))
    nan = claims.claim("c", "x", "s", ">= 0", {"v": math.nan}, True)
    assert (ok["verdict"], bad["verdict"], nan["verdict"]) == ("pass", "fail", "fail")
    assert claims.at_least(3, 3) and not claims.at_least(math.nan, 0) and claims.at_most(1, 2)
    assert claims.summary([ok, bad, nan]) == {"passed": 1, "failed": 2, "inconclusive": 0, "total": 3}


def test_readme_results_table_is_rewritten_between_markers():
    from nnbasics.runs.report import update_readme

    res = [{"experiment": "e", "seconds": 60, "versions": {"jax": "0.1", "backend": "cpu"},
            "claims": [claims.claim("a", "x works", "s", "1 +- 0.5", {"v": 1.2}, True)]}]
    text = update_readme("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\nrest\n", res)
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    # one row per experiment (a computed claim: what it was computed from), the claims themselves in docs/results.md
    assert "1 of 1 claims pass" in text and "| `e` | x works | 1 of 1 | computed from v | 1 +- 0.5 |" in text
    assert "docs/results.md" in text


def test_results_page_shows_intervals_and_the_seed_rule_not_samples():
    from nnbasics.runs.report import compact_results_table, results_page

    k = claims.check("gain", [2.0, 3.0, 4.0, 3.5], claims.Threshold(">", 0.0))
    res = [{"experiment": "regularization", "seconds": 60, "versions": {"jax": "0.1", "backend": "cpu", "devices": "8"},
            "claims": [claims.claim("g", "dropout helps", "s", "gain > 0", {"gain": [2.0, 3.0, 4.0, 3.5]},
                                    checks=[k])]}]
    page = results_page(res)
    assert "gain = 3.125 [" in page and "(n=4) > 0 (rule: 4 seeds)" in page and "8 device(s)" in page
    assert "3.5]" not in page and "[2, 3, 4, 3.5]" not in page  # no raw sample list
    row = compact_results_table(res).splitlines()[-1]
    assert row.startswith("| `regularization` | ") and "| 1 of 1 | gain = 3.125 [" in row


def test_readme_shows_the_featured_figures_of_a_reproduce_run(tmp_path):
    from nnbasics.runs.report import FEATURED_FIGURES, copy_featured_figures, update_readme

    exp, fig, caption = FEATURED_FIGURES[0]
    src = tmp_path / "runs" / f"{exp}-quick" / fig
    src.parent.mkdir(parents=True)
    src.write_bytes(b"\x89PNG fake")
    res = [{"experiment": exp, "preset": "quick", "figures": [fig], "seconds": 1,
            "claims": [claims.claim("a", "x", "s", "e", {"v": 1}, True)]},
           {"experiment": "other", "preset": "quick", "figures": [], "seconds": 1, "claims": []}]
    figs = copy_featured_figures(res, str(tmp_path / "runs"), str(tmp_path))
    rel = f"docs/figures/{exp}-{fig.split('/')[-1]}"
    assert figs == [(rel, caption)]  # figures of experiments that did not run are left out
    assert (tmp_path / rel).read_bytes() == b"\x89PNG fake"
    text = update_readme("<!-- results:begin -->\n<!-- results:end -->\n", res, figures=figs)
    assert f"![{caption}]({rel})" in text and text.index(rel) < text.index("| experiment |")


def test_compact_results_rows_stay_short():
    """The README's rows stay under 400 characters whatever the claim's text (a phone-readable table)."""
    from nnbasics.runs.report import compact_results_table

    long = "x" * 2000
    res = [{"experiment": "mnist1d", "seconds": 1, "claims": [claims.claim("a", long, "s", long, {"v": [1.0] * 500},
                                                                       checks=[claims.check("v", [1.0] * 500,
                                                                                            claims.Threshold(">=", 0))])]}]
    assert all(len(line) <= 400 for line in compact_results_table(res).splitlines())
