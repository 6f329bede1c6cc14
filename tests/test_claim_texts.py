"""A claim's "expected" text names its thresholds instead of repeating their numbers, so changing a
threshold in THRESHOLDS changes the text with it (nnbasics.runs.claims: `{name}` in the text)."""

import ast
import importlib
import pathlib
import re

import pytest

from nnbasics.runs import claims
from nnbasics.runs import experiment as exp

NUMBER = re.compile(r"(?<![\w.^])[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|\.\d+)(?!\w)", re.IGNORECASE)
FIELD = re.compile(r"\{([A-Za-z_]\w*)(?::[^{}]*)?\}")
# Numbers that name something, not a bound: a citation ('Table 1', 'Fig. 2') or a setting ('batch 1').
NAMING = re.compile(r"\b(?:Table|Tables|Fig\.|Figure|Sec\.|section|batch)\s+[\d.]+")


def _literal_parts(node: ast.AST) -> list[str]:
    """The string constants written in `node`, format specs (the '.0%' of f'{x:.0%}') left out."""
    specs = {id(c) for n in ast.walk(node) if isinstance(n, ast.FormattedValue) and n.format_spec
             for c in ast.walk(n.format_spec)}
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in specs]


def expected_texts(path: pathlib.Path) -> list[tuple[int, list[str]]]:
    """(line, literal parts) of the `expected` argument of every claim(...) (or C.claim(...)) call in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and "claim" in (getattr(node.func, "id", None), getattr(node.func, "attr", None)):
            arg = node.args[3] if len(node.args) > 3 else next((k.value for k in node.keywords if k.arg == "expected"), None)
            if arg is not None:
                out.append((node.lineno, _literal_parts(arg)))
    return out


def repeated_numbers(parts: list[str], thresholds) -> list[str]:
    values = {float(t.value) for t in thresholds.values()}
    return [m for s in parts for m in NUMBER.findall(NAMING.sub("", FIELD.sub("", s))) if float(m) in values]


@pytest.mark.parametrize("name", exp.experiment_names())
def test_expected_texts_name_thresholds_instead_of_repeating_their_numbers(name):
    mod = importlib.import_module(f"experiments.{name}")
    th = exp.thresholds_of(name)
    texts = expected_texts(pathlib.Path(mod.__file__))
    assert texts, f"experiments.{name} has no claim(...) call with an expected text"
    for line, parts in texts:
        bad = repeated_numbers(parts, th)
        assert not bad, (f"experiments/{name}.py:{line}: the expected text repeats the threshold number(s) {bad}; "
                         "write '{threshold_name}' (the check's threshold) or f'{THRESHOLDS[...]}' instead")
        unknown = [f for s in parts for f in FIELD.findall(s) if f not in th]
        assert not unknown, f"experiments/{name}.py:{line}: {unknown} name no THRESHOLDS entry of {name}"


def test_the_scan_catches_a_repeated_number():
    th = {"acc": claims.Threshold(">=", 91.0, "why"), "gap": claims.Threshold("<", 0.05, "why")}
    assert repeated_numbers(["mean accuracy >= 91% and gap < 0.05"], th) == ["91", "0.05"]
    assert repeated_numbers(["mean accuracy {acc}% over 3 seeds", "gap {gap:g}", "(Table 91)"], th) == []
    src = 'claim("a", "A", "s", f"accuracy >= 91 over {n:.0f} seeds", {}, True)\n'
    p = pathlib.Path(__file__).with_name("_scan_probe.py")
    try:
        p.write_text(src)
        [(line, parts)] = expected_texts(p)
    finally:
        p.unlink()
    assert line == 1 and repeated_numbers(parts, th) == ["91"]  # the '.0f' format spec is not text


def test_expected_fields_become_the_checks_thresholds():
    th = claims.Threshold(">=", 91.0, "why")
    k = claims.check("acc", [95.0, 96.0, 97.0], th)
    c = claims.claim("a", "A", "src", "mean accuracy {acc}% ({acc:.1f} points)", {"acc": [95.0]}, checks=[k])
    assert c["expected"] == "mean accuracy >= 91% (91.0 points)"
    assert f"{th}" == ">= 91" and f"{th:.2f}" == "91.00"
    assert claims.claim("b", "B", "src", "sets {0, 1} stay", {}, passed=True)["expected"] == "sets {0, 1} stay"
    with pytest.raises(ValueError, match=r"\{accuracy\}.*valid names: acc"):
        claims.claim("a", "A", "src", "mean {accuracy}", {}, checks=[k])
    with pytest.raises(ValueError, match="no checks"):
        claims.claim("a", "A", "src", "mean {acc}", {}, passed=True)
