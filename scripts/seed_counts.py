"""The seed-count rule over several reproductions: for every random check of every claim, pool the
per-seed samples of the runs under the given roots (e.g. seed offsets 0, 100, 200 and 300) and
compute the seeds at which the 95% interval's half-width is at most half the distance between the
mean and the threshold (`nnbasics.runs.claims.seeds_needed`). Prints a Markdown table; a check whose
runs all used fewer seeds than the rule asks for is marked `raise`.

    python scripts/seed_counts.py runs runs-seed100 runs-seed200 > docs/seed_counts.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from nnbasics.runs.claims import interval, seeds_needed


def _files(path: pathlib.Path) -> list[pathlib.Path]:
    """A claims file, or the combined reports in a reproduce root (claims.json, claims-seedK.json)."""
    return [path] if path.is_file() else sorted(path.glob("claims*.json"))


def _checks(path: pathlib.Path):
    """(experiment, preset, claim id, check) for every random check of the combined report `path`."""
    data = json.loads(path.read_text())
    runs = data["experiments"] if isinstance(data, dict) and "experiments" in data else [data]
    for run in runs:
        for c in run.get("claims", []):
            for k in c.get("checks", []):
                if k.get("random", True) and len(k.get("samples", [])) >= 2:
                    yield run["experiment"], run.get("preset", "?"), c["id"], k


def table(roots: list[pathlib.Path]) -> tuple[str, int]:
    """The Markdown table and the number of checks whose seed count is below the rule."""
    pooled: dict[tuple[str, str, str, str], dict] = {}
    for exp, preset, cid, k in (x for root in roots for f in _files(root) for x in _checks(f)):
        row = pooled.setdefault((exp, preset, cid, k["name"]), {"samples": [], "n": [], "threshold": k["threshold"],
                                                                  "op": k["op"], "statistic": k["statistic"]})
        row["samples"] += [float(x) for x in k["samples"]]
        row["n"].append(len(k["samples"]))
    lines = [f"Seed counts from the rule, pooled over {len(roots)} run(s): "
             + ", ".join(f"`{r}`" for r in roots) + ".", "",
             "| experiment | claim | check | seeds per run | pooled mean | pooled std | threshold | rule: seeds needed | |",
             "|---|---|---|---|---|---|---|---|---|"]
    short = 0
    for (exp, preset, cid, name), row in sorted(pooled.items()):
        xs = row["samples"]
        stats = interval(xs)  # nan spread when a sample is not finite
        mean, std = stats["mean"], stats["std"]
        need = seeds_needed(mean, std, row["threshold"])
        used = max(row["n"])  # the runs of today's config (a count raised by the rule shows beside the older ones)
        flag = "raise" if need is None or need > used else "ok"
        short += flag == "raise"
        lines.append(f"| {exp} ({preset}) | {cid} | {row['statistic']} | {'/'.join(map(str, row['n']))} | {mean:.4g} | "
                     f"{std:.3g} | {row['op']} {row['threshold']:g} | {need if need is not None else 'none'} | {flag} |")
    return "\n".join(lines) + "\n", short


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", type=pathlib.Path,
                   help="reproduce roots (their claims.json and claims-seedK.json) or combined claims files")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.roots if not _files(r)]
    if missing:
        print(f"seed_counts: error: no claims file (claims.json, claims-seedK.json) at {', '.join(missing)}",
              file=sys.stderr)
        return 2
    text, short = table(args.roots)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
