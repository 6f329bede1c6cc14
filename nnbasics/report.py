"""Markdown reports: one experiment's claims and figures, and the combined claims table."""

from __future__ import annotations

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


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table over the claims of several claims.json documents."""
    lines = [
        "| experiment | claim | source | expected | measured | verdict | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for c in res["claims"]:
            verdict = "**pass**" if c["verdict"] == "pass" else "**FAIL**"
            lines.append(
                f"| {_cell(res['experiment'])} | {_cell(c['claim'])} | {_cell(c['source'])} | {_cell(c['expected'])} "
                f"| {_cell(measured_text(c['measured']))} | {verdict} | {res.get('seconds', 0):.0f} |"
            )
    return "\n".join(lines)


def experiment_report(result: Mapping[str, Any], figures: Sequence[str], doc: str = "") -> str:
    """report.md of one run: summary line, claims table, figures."""
    n = len(result["claims"])
    ok = sum(c["verdict"] == "pass" for c in result["claims"])
    parts = [f"# {result['experiment']}", ""]
    if doc:
        parts += [doc.strip(), ""]
    parts += [
        f"{ok} of {n} claims pass; preset `{result.get('preset', '?')}`, {result.get('seconds', 0):.1f} s.",
        "",
        claims_table([result]),
        "",
    ]
    for f in figures:
        parts += [f"![{f}]({f})", ""]
    return "\n".join(parts)


def combined_report(
    results: Sequence[Mapping[str, Any]], workdirs: Sequence[str], title: str = "nnbasics reproduction"
) -> str:
    """The reproduce report: totals, one claims table, and each experiment's figures."""
    total = sum(len(r["claims"]) for r in results)
    ok = sum(c["verdict"] == "pass" for r in results for c in r["claims"])
    parts = [f"# {title}", "", f"{ok} of {total} claims pass over {len(results)} experiments.", ""]
    failed = [(r["experiment"], c) for r in results for c in r["claims"] if c["verdict"] != "pass"]
    if failed:
        parts += ["## Failed claims", ""]
        for exp, c in failed:
            parts.append(f"- `{exp}` / `{c['id']}`: expected {c['expected']}, measured {measured_text(c['measured'])}")
        parts.append("")
    parts += ["## Claims", "", claims_table(results), ""]
    for r, wd in zip(results, workdirs):
        figs = r.get("figures", [])
        if figs:
            parts += [f"## {r['experiment']}", ""]
            parts += [f"![{f}]({wd}/{f})" for f in figs]
            parts.append("")
    return "\n".join(parts)
