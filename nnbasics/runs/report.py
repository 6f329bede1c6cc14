"""Markdown reports: one experiment's claims and figures, and the combined claims table."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        a = abs(v)
        return f"{v:.3g}" if a < 1e-2 or a >= 1e5 else f"{v:.4g}"
    return str(v)


def measured_text(measured: Mapping[str, Any]) -> str:
    return "; ".join(f"{k} = {_fmt(v)}" for k, v in measured.items())


def claim_text(c: Mapping[str, Any]) -> str:
    """What a claim measured: each check as 'statistic = mean [95% interval] (n) op threshold', then the
    other measurements."""
    from nnbasics.runs.claims import check_text

    checks = "; ".join(check_text(k) for k in c.get("checks", []))
    rest = measured_text(c.get("measured", {}))
    return f"{checks} \u2014 {rest}" if checks and rest else checks or rest


VERDICT_MARK = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "**inconclusive**"}


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # where Markdown would pass raw HTML through (a tag, comment, ...)
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _inert(text: Any) -> str:
    """`text` from a claims.json with nothing Markdown passes through as HTML: a `<` that would open a tag
    (or comment) and an `&` that would start an entity become `&lt;` / `&amp;`; `<=`, `a < b` and every
    other character stay as they are (so the reports of honest runs do not change)."""
    return _TAG_START.sub("&lt;", _ENTITY.sub("&amp;", str(text)))


def _cell(text: Any) -> str:
    return _inert(text).replace("|", "\\|").replace("\n", " ")


def claims_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table over the claims of several claims.json documents."""
    lines = [
        "| experiment | claim | source | expected | measured | verdict | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for c in res["claims"]:
            verdict = VERDICT_MARK.get(c["verdict"], c["verdict"])
            lines.append(
                f"| {_cell(res['experiment'])} | {_cell(c['claim'])} | {_cell(c['source'])} | {_cell(c['expected'])} "
                f"| {_cell(claim_text(c))} | {verdict} | {res.get('seconds', 0):.0f} |"
            )
    return "\n".join(lines)


def _link(path: Any) -> str:
    """A figure's path as a Markdown link target that cannot close the link or open a tag."""
    return _inert(path).replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _seconds(result: Mapping[str, Any]) -> float:
    try:
        return float(result.get("seconds", 0))
    except (TypeError, ValueError):
        return 0.0


def experiment_report(result: Mapping[str, Any], figures: Sequence[str], doc: str = "",
                      missing: Sequence[str] = ()) -> str:
    """report.md of one run: summary line, claims table, figures (those in `missing`, gone or damaged, named
    instead of shown, with how to draw them again)."""
    n = len(result["claims"])
    ok = sum(c["verdict"] == "pass" for c in result["claims"])
    parts = [f"# {_inert(result['experiment'])}", ""]
    if doc:
        parts += [_inert(doc.strip()), ""]
    parts += [
        f"{ok} of {n} claims pass; preset `{_inert(result.get('preset', '?'))}`, {_seconds(result):.1f} s.",
        "",
        claims_table([result]),
        "",
    ]
    for f in figures:
        if f in missing:
            parts += [f"*{_cell(f)} is missing or damaged; run the experiment again with `--force` to draw it.*", ""]
        else:
            parts += [f"![{_inert(f)}]({_link(f)})", ""]
    return "\n".join(parts)


def combined_report(
    results: Sequence[Mapping[str, Any]], workdirs: Sequence[str], title: str = "nnbasics reproduction"
) -> str:
    """The reproduce report: totals, one claims table, and each experiment's figures."""
    total = sum(len(r["claims"]) for r in results)
    ok = sum(c["verdict"] == "pass" for r in results for c in r["claims"])
    parts = [f"# {title}", "", f"{ok} of {total} claims pass over {len(results)} experiments.", ""]
    failed = sorted(((r["experiment"], c) for r in results for c in r["claims"] if c["verdict"] != "pass"),
                    key=lambda ec: ec[1]["verdict"] != "fail")
    if failed:
        parts += ["## Failed and inconclusive claims", ""]
        for exp, c in failed:
            parts.append(f"- {_inert(c['verdict'])}: `{_inert(exp)}` / `{_inert(c['id'])}`: expected "
                         f"{_inert(c['expected'])}, measured {_inert(claim_text(c))}")
        parts.append("")
    parts += ["## Claims", "", claims_table(results), ""]
    parts += ["## Where the time goes", "", timing_table(results), ""]
    for r, wd in zip(results, workdirs):
        figs = r.get("figures", [])
        if figs:
            parts += [f"## {_inert(r['experiment'])}", ""]
            parts += [f"![{_inert(f)}]({_link(f'{wd}/{f}')})" for f in figs]
            parts.append("")
    return "\n".join(parts)


def timing_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Wall and CPU seconds, the threads XLA:CPU ran each experiment's operations on, its fits' compile
    seconds and training rate (member-steps per second after compiling: one step of one seed or setting),
    seeds and claims, slowest first, and the total; then the reproduction's span, from the first
    experiment's start to the last one's end (experiments run side by side with `--jobs` make it less
    than the sum of walls)."""
    lines = ["| experiment | wall s | CPU s | CPU / wall | XLA threads | compile s | member-steps/s | seeds | claims |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(results, key=lambda r: -float(r.get("seconds", 0)))
    for r in rows:
        wall, cpu, t = float(r.get("seconds", 0)), r.get("cpu_seconds"), r.get("training") or {}
        ratio = f"{cpu / wall:.2f}" if cpu is not None and wall > 0 else "-"
        compile_s = f"{t['compile_seconds']:.1f}" if t else "-"
        rate = f"{t['member_steps'] / max(t['seconds'] - t['compile_seconds'], 1e-9):.0f}" if t else "-"
        lines.append(f"| {r['experiment']} | {wall:.1f} | {'-' if cpu is None else f'{cpu:.1f}'} | {ratio} "
                     f"| {r.get('cores', '-')} | {compile_s} | {rate} | {r.get('seeds', '-')} | {len(r['claims'])} |")
    wall = sum(float(r.get("seconds", 0)) for r in results)
    cpu = sum(float(r.get("cpu_seconds", 0) or 0) for r in results)
    comp = sum((r.get("training") or {}).get("compile_seconds", 0) for r in results)
    lines.append(f"| **total** | {wall:.1f} | {cpu:.1f} | {cpu / wall if wall else 0:.2f} | | {comp:.1f} | | | "
                 f"{sum(len(r['claims']) for r in results)} |")
    span = span_seconds(results)
    if span is not None:
        lines += ["", f"From the first experiment's start to the last one's end: {span:.0f} s ({span / 60:.1f} min) "
                      f"of wall time for {cpu / 60:.1f} CPU-minutes."]
    elif results and all("started" in r for r in results):
        lines += ["", "The experiments ran at different times (some reused from earlier runs or re-run with "
                      "`--only`), so no wall-time span is given; the total is the sum of their times."]
    return "\n".join(lines)


TOPICS = [
    ("basics", "Neurons, layers, activations and backpropagation"),
    ("optimization", "Optimization"),
    ("convolution", "Convolution, pooling and receptive fields"),
    ("architectures", "Architectures and residual learning"),
    ("normalization", "Normalization and normalizer-free networks"),
    ("other", "Other experiments"),
]


def summary_paragraph(result: Mapping[str, Any]) -> str:
    """What the numbers show, one sentence per claim, written from the measurements."""
    claims = result["claims"]
    ok = sum(c["verdict"] == "pass" for c in claims)
    parts = [f"{ok} of {len(claims)} claims pass."]
    for c in claims:
        verdict = {"pass": "as expected", "fail": "which does NOT meet the expectation"}.get(
            c["verdict"], "which does not decide it (the 95% interval straddles the threshold)")
        parts.append(f"{c['claim']}: measured {claim_text(c)} against {c['expected']}, {verdict}.")
    return " ".join(parts)


def _esc(text: Any) -> str:
    import html

    return html.escape(str(text))


def _png_tag(path: str, alt: str) -> str:
    import base64

    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{data}'>"


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}"
    "nav{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:14px;margin:.5em 0 1em}nav a{white-space:nowrap}"
    ".card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:0 0 1em}"
    ".card h3{margin:.2em 0}.badge{font-size:13px;padding:1px 8px;border-radius:10px;margin-left:8px;color:#fff}"
    ".badge.pass{background:#2a7a2a}.badge.fail{background:#b00}.badge.inconclusive{background:#b7770b}"
    ".grid{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.grid .text{flex:1 1 320px;min-width:0}"
    ".grid figure{flex:1 1 420px;margin:0;min-width:0}img{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{font-size:12px;color:#666}.doc{color:#444;font-style:italic}ul.claims{padding-left:1.1em}"
    "li.fail b{color:#b00}li.inconclusive b{color:#b7770b}li.pass b{color:#2a7a2a}"
    "details{margin:.4em 0}summary{cursor:pointer;color:#225;font-size:14px}"
    "table{border-collapse:collapse;font-size:12px;display:block;overflow-x:auto}"
    "td,th{border:1px solid #ccc;padding:3px 5px;vertical-align:top}"
    "code{overflow-wrap:anywhere}"
)


def combined_html(results: Sequence[Mapping[str, Any]], workdirs: Sequence[str], root: str,
                  title: str = "nnbasics reproduction") -> str:
    """A self-contained HTML report that opens with the lecture: per topic, each experiment as a card
    (its claims passed, what it shows, each claim's verdict and interval, its headline figure); the
    other figures and every claim's details (per-seed samples included) folded below each card. The
    figures are embedded as base64 PNGs."""
    import os

    total = sum(len(r["claims"]) for r in results)
    ok = sum(c["verdict"] == "pass" for r in results for c in r["claims"])
    by_topic: dict[str, list[tuple[Mapping[str, Any], str]]] = {}
    for r, wd in zip(results, workdirs):
        topic = r.get("topic") if r.get("topic") in dict(TOPICS) else "other"
        by_topic.setdefault(topic, []).append((r, wd))
    nav, sections = [], []
    for key, heading in TOPICS:
        if key not in by_topic:
            continue
        sections.append(f"<h2 id='topic-{key}'>{_esc(heading)}</h2>")
        nav.append(f"<a href='#topic-{key}'>{_esc(heading)}</a>")
        for r, wd in by_topic[key]:
            n_ok = sum(c["verdict"] == "pass" for c in r["claims"])
            state = "pass" if n_ok == len(r["claims"]) else (
                "fail" if any(c["verdict"] == "fail" for c in r["claims"]) else "inconclusive")
            figs = [(f, os.path.join(root, wd, f)) for f in r.get("figures", [])]
            figs = [(f, p) for f, p in figs if os.path.exists(p)]
            items = "".join(f"<li class='{_esc(c['verdict'])}'><b>{_esc(c['verdict'])}</b> {_esc(c['claim'])} "
                            f"<br><small>{_esc(checks_text(c))}</small></li>" for c in r["claims"])
            head_fig = (f"<figure>{_png_tag(figs[0][1], figs[0][0])}<figcaption>{_esc(r['experiment'])}: "
                        f"{_esc(figs[0][0])}</figcaption></figure>") if figs else ""
            more = "".join(f"<figure>{_png_tag(p, f)}<figcaption>{_esc(r['experiment'])}: {_esc(f)}</figcaption>"
                           "</figure>" for f, p in figs[1:])
            rows = "".join(f"<tr><td>{_esc(c['id'])}</td><td>{_esc(c['source'])}</td><td>{_esc(c['expected'])}</td>"
                           f"<td>{_esc(claim_text(c))}</td><td>{_esc(c['verdict'])}</td></tr>" for c in r["claims"])
            sections.append(
                f"<div class='card' id='{_esc(r['experiment'])}'><h3>{_esc(r['experiment'])}"
                f"<span class='badge {state}'>{n_ok} of {len(r['claims'])} pass</span></h3>"
                + (f"<p class='doc'>{_esc(r['doc'])}</p>" if r.get("doc") else "")
                + f"<div class='grid'><div class='text'><ul class='claims'>{items}</ul></div>{head_fig}</div>"
                + (f"<details><summary>{len(figs) - 1} more figure(s)</summary><div class='grid'>{more}</div></details>"
                   if more else "")
                + f"<details><summary>every claim's details and per-seed samples ({r.get('seconds', 0):.0f} s)"
                f"</summary><table><tr><th>claim</th><th>source</th><th>expected</th><th>measured</th><th>verdict</th>"
                f"</tr>{rows}</table></details></div>")
    failed = [f"<li>{_esc(c['verdict'])}: <a href='#{_esc(r['experiment'])}'><code>{_esc(r['experiment'])}/"
              f"{_esc(c['id'])}</code></a>: {_esc(checks_text(c))} (expected {_esc(c['expected'])})</li>"
              for r in results for c in r["claims"] if c["verdict"] != "pass"]
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{HTML_STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1><p><b>{ok} of {total}</b> claims pass over {len(results)} experiments; each is a "
        "comparison the lecture makes, decided from measurements against the published result.</p>",
        f"<nav>{''.join(nav)}</nav>",
        # a few are shown, a long list (a smoke run) is folded so that the first screen stays the lecture's
        (f"<details{' open' if len(failed) <= 5 else ''}><summary><b>{len(failed)} claim(s) did not pass</b>"
         f"</summary><ul>{''.join(failed)}</ul></details>") if failed else "",
        *sections,
        "</body></html>",
    ])


README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"


SPAN_GAP_SECONDS = 120.0  # more idle time than this between experiments: they were not one reproduction


def span_seconds(results: Sequence[Mapping[str, Any]]) -> float | None:
    """Wall seconds from the first experiment's start to the last one's end; with experiments side by
    side (`reproduce --jobs`) less than the sum of their times. None for runs that did not record
    their times, and for experiments that ran at different times (a gap of more than SPAN_GAP_SECONDS
    in which none ran: runs reused from earlier, `--only` re-runs), whose span measures nothing."""
    if not results or not all("started" in r and "finished" in r for r in results):
        return None
    times = sorted((float(r["started"]), float(r["finished"])) for r in results)
    end = times[0][1]
    for start, finish in times[1:]:
        if start > end + SPAN_GAP_SECONDS:
            return None
        end = max(end, finish)
    return end - times[0][0]


def _time_text(results: Sequence[Mapping[str, Any]]) -> str:
    total = sum(float(r.get("seconds", 0)) for r in results) / 60
    span = span_seconds(results)
    if span is None or span >= 0.95 * total * 60:
        return f"{total:.1f} min of experiment time"
    return f"{span / 60:.1f} min of wall time, {total:.1f} min of experiment time side by side"


HEADLINE_CHARS = 100  # the compact table's cells stay readable on a phone


def _short(text: str, limit: int = HEADLINE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "\u2026"


def checks_text(c: Mapping[str, Any], rule: bool = False) -> str:
    """A claim's checks as 'statistic = mean [interval] (n) op threshold' (no raw samples), or, for a
    claim decided without checks, its verdict's basis; with `rule`, each random check's seed count
    from the rule beside it."""
    from nnbasics.runs.claims import check_text

    parts = []
    for k in c.get("checks", []):
        t = check_text(k)
        if rule and k.get("random", True) and k.get("n", 1) >= 2:
            need = k.get("seeds_needed")
            t += f" (rule: {need if need is not None else '-'} seeds)"
        parts.append(t)
    return "; ".join(parts) or c.get("error") or f"computed from {', '.join(c.get('measured', {})) or 'the run'}"


def compact_results_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per experiment: what it shows, claims passed, its first claim's check beside the
    expectation (the paper's number)."""
    lines = ["| experiment | what it shows | claims pass | headline: measured | expected |", "|---|---|---|---|---|"]
    for r in results:
        ok = sum(c["verdict"] == "pass" for c in r["claims"])
        first = r["claims"][0] if r["claims"] else {}
        what = (r.get("doc") or first.get("claim", "")).split("\n")[0]  # the module docstring's first line
        lines.append(f"| `{_cell(r['experiment'])}` | {_cell(_short(what))} | {ok} of {len(r['claims'])} | "
                     f"{_cell(_short(checks_text(first))) if first else ''} | {_cell(_short(first.get('expected', '')))} |")
    return "\n".join(lines)


def results_page(results: Sequence[Mapping[str, Any]], note: str = "") -> str:
    """docs/results.md: every claim of a reproduction with its checks as intervals (the per-seed
    samples stay in claims.json and report.html) and the seed count the rule asks for."""
    total = sum(len(r["claims"]) for r in results)
    ok = sum(c["verdict"] == "pass" for r in results for c in r["claims"])
    versions = next((r.get("versions") for r in results if r.get("versions")), {}) or {}
    lines = ["# Results: every claim", "",
             "Generated by `nnbasics readme --root runs` from a reproduction's `claims.json`; do not edit by hand.",
             f"{ok} of {total} claims pass over {len(results)} experiments ({_time_text(results)}, jax "
             f"{versions.get('jax', '?')}, backend {versions.get('backend', '?')}, {versions.get('devices', '?')} "
             f"device(s)){note}.", "",
             "Each check reads `statistic = mean [95% interval] (n seeds) op threshold`; \"rule\" is the seed count "
             "at which the interval's half-width is at most half the distance between the mean and the "
             "threshold, from this run's own spread (`python scripts/seed_counts.py` pools it over seed offsets).", "",
             "| experiment | claim | expected | measured | verdict |", "|---|---|---|---|---|"]
    for r in results:
        for c in r["claims"]:
            lines.append(f"| {_cell(r['experiment'])} | {_cell(c['claim'])} | {_cell(c['expected'])} "
                         f"| {_cell(checks_text(c, rule=True))} | {VERDICT_MARK.get(c['verdict'], c['verdict'])} |")
    return "\n".join(lines) + "\n"


def readme_results_section(results: Sequence[Mapping[str, Any]], note: str = "") -> str:
    """The README's results: the count, then one row per experiment (the claims: docs/results.md)."""
    total = sum(len(r["claims"]) for r in results)
    ok = sum(c["verdict"] == "pass" for r in results for c in r["claims"])
    versions = next((r.get("versions") for r in results if r.get("versions")), {}) or {}
    return "\n".join([
        f"{ok} of {total} claims pass over {len(results)} experiments "
        f"(`nnbasics reproduce --quick`, {_time_text(results)}, "
        f"jax {versions.get('jax', '?')}, backend {versions.get('backend', '?')}){note}. Every claim with its "
        "intervals: [docs/results.md](docs/results.md).",
        "",
        compact_results_table(results),
    ])


# The figures the README shows (experiment, figure file, caption): one per half of the lecture
# and one for its end, copied out of the reproduce run by `nnbasics readme`.
FEATURED_FIGURES = (
    ("optimizers", "figures/test_function_paths.png",
     "Optimizer paths on a narrow valley, Beale's function and a saddle (experiment `optimizers`)"),
    ("residual", "figures/training_loss.png",
     "Deeper plain nets train worse; shortcuts remove most of the degradation (He et al. 2016, Fig. 6; "
     "experiment `residual`)"),
    ("normalizers", "figures/error_vs_batch_size.png",
     "BatchNorm's test error rises at batch 2, GroupNorm's does not, beside Wu & He 2018's numbers (MNIST-1D; "
     "experiment `normalizers`)"),
)


def copy_featured_figures(results: Sequence[Mapping[str, Any]], root: str, readme_dir: str,
                          out: str = "docs/figures") -> list[tuple[str, str]]:
    """Copy FEATURED_FIGURES of a reproduce run (`root`) to readme_dir/out; returns (path relative
    to the README, caption) for each figure that the run produced."""
    from nnbasics.runs.workdir import atomic_write_bytes, default_workdir

    by_name = {r["experiment"]: r for r in results}
    found = []
    for exp, fig, caption in FEATURED_FIGURES:
        r = by_name.get(exp)
        if r is None or fig not in r.get("figures", []):
            continue
        src = os.path.join(default_workdir(exp, r.get("preset", "quick"), root), fig)
        if not os.path.exists(src):
            continue
        rel = f"{out}/{exp}-{os.path.basename(fig)}"
        with open(src, "rb") as f:
            atomic_write_bytes(os.path.join(readme_dir, rel), f.read())
        found.append((rel, caption))
    return found


def featured_figures_section(figures: Sequence[tuple[str, str]]) -> str:
    """Markdown images for (relative path, caption) pairs."""
    return "\n".join(f"![{cap}]({path})\n*{cap}.*\n" for path, cap in figures)


ROBUST_BEGIN = "<!-- robustness:begin -->"
ROBUST_END = "<!-- robustness:end -->"


def robustness_table(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """One row per reproduction (label, combined claims document): seed offset, JAX's device count, the threads XLA:CPU ran
    each experiment's operations on (1 when `--jobs` gave each worker one core or with `--cpu-threads 1`;
    documents without it: the cores the process could use), the CPU's vector extensions (and the oneDNN
    extra where the convolutions ran on it), the pass /
    fail / inconclusive counts and the time, all read from the documents."""
    lines = ["| run | seed offset | devices | XLA threads | CPU | claims pass | fail | inconclusive | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, doc in runs:
        results = doc["experiments"]
        verdicts = [c["verdict"] for r in results for c in r["claims"]]
        versions = next((r.get("versions") for r in results if r.get("versions")), {}) or {}
        threads = sorted({str(r["cores"]) for r in results if r.get("cores")}) or [versions.get("cpus", "?")]
        cpu = versions.get("cpu_flags", "?")
        onednn = sorted({r["versions"]["onednn"] for r in results if (r.get("versions") or {}).get("onednn")})
        if onednn:  # the CPU convolutions ran on the oneDNN extra (NNBASICS_ONEDNN=1)
            cpu += f", oneDNN {'/'.join(onednn)} convs"
        lines.append(f"| {label} | {doc.get('seed_offset', 0)} | {versions.get('devices', '?')} | {'/'.join(threads)} | "
                     f"{cpu} | {verdicts.count('pass')} of {len(verdicts)} | "
                     f"{verdicts.count('fail')} | {verdicts.count('inconclusive')} | {_time_text(results)} |")
    return "\n".join(lines)


def markers_problem(readme: str, begin: str, end: str) -> str | None:
    """Why `readme` has no section between the markers `begin` and `end` (None: it has one)."""
    if begin not in readme and end not in readme:
        return f"has no {begin} ... {end} section"
    if begin not in readme or end not in readme:
        return f"has {begin if begin in readme else end} but not {end if begin in readme else begin}"
    if readme.index(end) < readme.index(begin):
        return f"has {end} before {begin}"
    return None


def update_robustness(readme: str, table: str) -> str:
    """`readme` with the robustness table between its markers replaced."""
    if (problem := markers_problem(readme, ROBUST_BEGIN, ROBUST_END)) is not None:
        raise ValueError(f"the README {problem}")
    head, rest = readme.split(ROBUST_BEGIN, 1)
    _, tail = rest.split(ROBUST_END, 1)
    return f"{head}{ROBUST_BEGIN}\n{table}\n{ROBUST_END}{tail}"


def update_readme(readme: str, results: Sequence[Mapping[str, Any]], note: str = "",
                  figures: Sequence[tuple[str, str]] = ()) -> str:
    """`readme` with the text between the results markers replaced by a fresh table (and the
    featured `figures`, (relative path, caption) pairs, above it)."""
    if (problem := markers_problem(readme, README_BEGIN, README_END)) is not None:
        raise ValueError(f"the README {problem}")
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    body = readme_results_section(results, note)
    if figures:
        body = featured_figures_section(figures) + "\n" + body
    return f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}"
