import json
import os
import re

import pytest

from nnbasics.cli import main
from nnbasics.config import ConfigError
from nnbasics.registry import UnknownNameError
from nnbasics.runs.sweep import collect, parse_shard, point_slug, run_sweep

SMALL = ["--config.models=('logistic',)", "--config.steps=20", "--config.eval_every=10"]


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError, match="I/N"):
            parse_shard(bad)


def test_point_slug():
    assert point_slug({"optimizer.learning_rate": 0.01}) == "learning_rate=0.01"


def test_sharded_sweep_skips_finished_points_and_collects(tmp_path):
    out, first = run_sweep("mnist1d", "learning_rate", "smoke", "0/2", SMALL, tmp_path)
    assert len(first) == 2  # points 0 and 2 of 3
    done = sorted(p.name for p in out.glob("*/claims.json") for p in [p.parent])
    assert done == ["000-learning_rate=0.003", "002-learning_rate=0.03"]
    stamp = (out / done[0] / "claims.json").stat().st_mtime_ns
    _, second = run_sweep("mnist1d", "learning_rate", "smoke", None, SMALL, tmp_path)
    assert len(second) == 3
    assert (out / done[0] / "claims.json").stat().st_mtime_ns == stamp  # reused, not re-run
    path, rows = collect(out)
    assert [r["point"]["optimizer.learning_rate"] for r in rows] == [0.003, 0.01, 0.03]
    assert all("test_accuracy_logistic" in r["measured"] for r in rows)
    assert (out / "collect.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 001-learning_rate=0.01 | 0.01 |" in path.read_text()
    assert json.loads((out / "collect.json").read_text())["swept"] == ["optimizer.learning_rate"]


def test_unknown_sweep_and_bad_points(tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="did you mean 'learning_rate'"):
        run_sweep("mnist1d", "learning_rat", "smoke", root=tmp_path)
    # a point whose batch exceeds the data set is rejected before any point runs
    assert main(["sweep", "mnist1d", "--sweep", "batch_size", "--smoke", "--root", str(tmp_path),
                 "--config.batch_size=2", "--config.data=xor"]) == 2
    assert not list(tmp_path.glob("*/*/claims.json"))
    assert main(["collect", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_more_shards_than_points_is_refused(tmp_path):
    from nnbasics.config import ConfigError

    with pytest.raises(ConfigError, match="has 3 points"):
        run_sweep("mnist1d", "learning_rate", "smoke", "4/5", root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_collect_skips_malformed_and_hostile_json_and_escapes_text(tmp_path, capsys):
    """Truncated, mistyped, NaN, huge, nested and HTML/Markdown-laden files: no traceback, the bad
    points are skipped and named, and no text from the files reaches collect.md unescaped."""
    def point(name, config, claims):
        d = tmp_path / name
        d.mkdir()
        for fname, doc in (("config.json", config), ("claims.json", claims)):
            if doc is not None:
                (d / fname).write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())

    def claims(measured, checks=()):
        return {"claims": [{"id": "c", "verdict": "pass", "measured": measured, "checks": list(checks)}], "seconds": 1}

    point("000-good", {"lr": 0.01}, claims({"acc": 0.9}, [{"statistic": "acc", "mean": 0.9, "ci": [0.8, 1.0], "n": 4}]))
    point("001-html", {"lr": "<script>alert(1)</script>|*x*"},
          claims({"<b>bold</b>|`k`": 1.5, "nested": {"a": [1, 2]}, "text": "<img src=x>", "flag": True},
                 [{"statistic": "acc", "mean": "high", "ci": ["a", None], "n": 4}, "not a check", {"statistic": 3}]))
    point("002-nan", {"lr": float("nan")}, claims({"acc": float("nan"), "big": 1e308 * 10, "huge": 10**300}))
    point("003-truncated", {"lr": 0.1}, json.dumps(claims({"acc": 0.5}))[:25].encode())
    point("004-claims-not-a-list", {"lr": 0.2}, {"claims": "all passed"})
    point("005-wrong-type", {"lr": 0.3}, [1, 2, 3])
    point("006-huge-int", {"lr": 0.4}, b'{"claims": [{"measured": {"acc": 1' + b"0" * 5000 + b"}}]}")
    point("007-deep", {"lr": 0.5}, b"[" * 100000 + b"]" * 100000)
    point("008-not-utf8", {"lr": 0.6}, b"\xff\xfe\x00garbage")
    point("009-config-list", [1], claims({"acc": 0.1}))
    point("010-[link](x.html)", {"lr": 0.7}, claims({"acc": 0.7}))
    (tmp_path / "sweep.json").write_text('{"experiment": "<h1>x</h1>", "points": 5}')

    assert main(["collect", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    text = (tmp_path / "collect.md").read_text()
    rows = json.loads((tmp_path / "collect.json").read_text())["rows"]
    assert [r["dir"] for r in rows] == ["000-good", "001-html", "002-nan", "010-[link](x.html)"]
    for bad in ("003-truncated", "004-claims-not-a-list", "005-wrong-type", "006-huge-int", "007-deep",
                "008-not-utf8", "009-config-list", "sweep.json"):
        assert bad in out.err and bad in text
    assert "<" not in text.replace("<!--", "") and ">" not in text.replace("> ", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\*x\\*" in text and "\\[link\\](x.html)" in text
    assert "&lt;b&gt;bold&lt;/b&gt;\\|\\`k\\`" in text
    good, html_row, nan_row = rows[:3]
    assert good["measured"] == {"acc": 0.9} and good["intervals"] == {"acc": [0.8, 1.0]}
    assert html_row["measured"] == {"<b>bold</b>|`k`": 1.5} and html_row["intervals"] == {}
    assert nan_row["measured"] == {"huge": 1e300} and nan_row["point"]["lr"] == "nan"
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 6 and len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1  # no cell split

    bad = tmp_path / "all_bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "claims.json").write_text("{")
    assert main(["collect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no readable finished runs" in err and "x/claims.json" in err and "Traceback" not in err


def test_sweep_root_that_is_a_file_or_read_only_is_refused(tmp_path, capsys, monkeypatch):
    """`nnbasics sweep --root` on a regular file or a read-only directory: rc 2, a message naming it,
    no traceback, nothing written."""
    args = ["sweep", "mnist1d", "--sweep", "learning_rate", "--smoke", "--quiet", *SMALL]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main([*args, "--root", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert f"cannot create the directory {blocker}" in err and "Traceback" not in err
    assert blocker.read_text() == "not a directory"
    assert main(["collect", str(blocker)]) == 2
    assert f"{blocker} is not a directory" in capsys.readouterr().err

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: refuse the directory as a read-only file system would
        import errno
        import pathlib

        mkdir = pathlib.Path.mkdir

        def read_only(self, *a, **k):
            if str(self).startswith(str(ro)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return mkdir(self, *a, **k)

        monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    try:
        assert main([*args, "--root", str(ro)]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert f"cannot create the directory {ro}" in err and "Traceback" not in err
    assert not list(ro.iterdir())


def test_two_identical_sweeps_at_once_share_the_points(tmp_path, capsys):
    """A point another process is running (its workdir lock is held) is left to it, not refused and
    not run twice; the rest run here, and the next run finishes what is left."""
    from nnbasics.runs.workdir import exclusive, read_metrics

    out = tmp_path / "mnist1d-sweep-learning_rate-smoke"
    held = out / "001-learning_rate=0.01"
    with exclusive(held, what="the other sweep"):
        _, first = run_sweep("mnist1d", "learning_rate", "smoke", None, SMALL, tmp_path)
    assert len(first) == 2 and not (held / "claims.json").exists()
    err = capsys.readouterr().err
    assert "1 point(s) left to the other process running this sweep (001-learning_rate=0.01: pid" in err
    _, second = run_sweep("mnist1d", "learning_rate", "smoke", None, SMALL, tmp_path)
    assert len(second) == 3 and (held / "claims.json").exists()
    for d in out.glob("0*"):  # every point's rows written once
        rows = read_metrics(d / "metrics.jsonl")
        assert len(rows) == len({json.dumps(r, sort_keys=True) for r in rows}) > 0


def test_sweep_with_other_overrides_in_the_same_directory_is_refused(tmp_path):
    run_sweep("mnist1d", "learning_rate", "smoke", "0/3", SMALL, tmp_path)
    meta = (tmp_path / "mnist1d-sweep-learning_rate-smoke" / "sweep.json").read_text()
    with pytest.raises(ConfigError, match=r"sweep.json holds the sweep with other settings .*--force"):
        run_sweep("mnist1d", "learning_rate", "smoke", "1/3", [*SMALL[:1], "--config.steps=30", SMALL[2]], tmp_path)
    assert (tmp_path / "mnist1d-sweep-learning_rate-smoke" / "sweep.json").read_text() == meta
