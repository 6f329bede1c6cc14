import json

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
