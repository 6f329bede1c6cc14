"""Every experiment on 8 simulated devices (what a Colab TPU or an 8-GPU machine gives): the smoke
reproduction runs to the end with no experiment crashing, the exact claims pass, and every verdict
is the one its stored samples give; and the README's scaling commands run as written."""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from nnbasics.runs.experiment import experiment_names, load_experiment

ROOT = pathlib.Path(__file__).resolve().parent.parent
EIGHT = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def _nnbasics(args, env=None, timeout=1200):
    return subprocess.run([sys.executable, "-m", "nnbasics.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_smoke_reproduction_on_eight_devices(tmp_path):
    from test_notebooks import _check_claims_files

    out = _nnbasics(["--quiet", "reproduce", "--smoke", "--jobs", "1", "--root", str(tmp_path)], EIGHT)
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: some smoke claims are inconclusive (2 seeds)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    report = json.loads((tmp_path / "claims.json").read_text())
    ran = {r["experiment"]: r for r in report["experiments"]}
    assert sorted(ran) == sorted(n for n in experiment_names() if getattr(load_experiment(n), "REPRODUCE", True))
    for name, r in ran.items():
        assert "error" not in r, (name, r.get("error"))
        assert r["versions"]["devices"] == "8", name
    passed, total = _check_claims_files(tmp_path)  # verdicts recomputed from samples; the exact claims pass
    assert total == sum(len(r["claims"]) for r in ran.values()) and passed > 0


def _scaling_commands() -> list[str]:
    """The README's commands that simulate several devices, as written in its backticks."""
    text = (ROOT / "README.md").read_text()
    return sorted({m.strip() for m in re.findall(r"`([^`\n]*xla_force_host_platform_device_count[^`\n]*)`", text)})


def test_readme_has_scaling_commands():
    assert any(" run " in c for c in _scaling_commands()), _scaling_commands()


@pytest.mark.parametrize("command", _scaling_commands())
def test_readme_scaling_command_runs(command, tmp_path):
    words = shlex.split(command)
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    args = [w for w in words if w not in {f"{k}={v}" for k, v in env.items()}]
    assert args[0] == "nnbasics", command
    args = args[1:]
    if "--workdir" not in args and "run" in args:
        args += ["--workdir", str(tmp_path / "run")]
    if "reproduce" in args and "--root" not in args:
        args += ["--root", str(tmp_path / "runs")]
    out = _nnbasics(["--quiet", *args], {"JAX_PLATFORMS": "cpu", **env})
    assert out.returncode == 0, (command, out.stderr[-3000:])
    assert "Traceback" not in out.stderr


def test_patient_collectives_flags():
    """Several simulated CPU devices get XLA's collective timeouts raised (a slow device thread on an
    overloaded laptop is not a deadlock); the user's own setting, one device and a GPU are left alone."""
    from nnbasics.threads import PATIENT_COLLECTIVE_FLAGS, _xla_knows, patient_collectives

    if not all(_xla_knows(f) for f in PATIENT_COLLECTIVE_FLAGS):
        pytest.skip("this jaxlib's XLA has no collective timeout flags")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert patient_collectives(env)
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=8", *PATIENT_COLLECTIVE_FLAGS]
    assert not patient_collectives(env)  # once only
    mine = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=5"}
    assert not patient_collectives(dict(mine))
    assert not patient_collectives({})
    assert not patient_collectives({"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})  # one device: no peers
    assert not patient_collectives({"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cuda"})
    # the last count given is the one XLA uses
    assert patient_collectives({"XLA_FLAGS": "--xla_force_host_platform_device_count=1 "
                                             "--xla_force_host_platform_device_count=2"})


def test_patient_collectives_accepted_by_this_xla():
    """The flags are ones this jaxlib knows (an unknown flag in XLA_FLAGS aborts the process), and the CLI
    adds them before JAX starts."""
    from nnbasics.threads import PATIENT_COLLECTIVE_FLAGS, _xla_knows

    if not all(_xla_knows(f) for f in PATIENT_COLLECTIVE_FLAGS):
        pytest.skip("this jaxlib's XLA has no collective timeout flags")
    code = ("import os; from nnbasics.threads import patient_collectives; assert patient_collectives(); "
            "import jax; print(len(jax.devices()), os.environ['XLA_FLAGS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("2 ") and "collective_call_terminate_timeout_seconds=3600" in out.stdout
