"""Parallelism: 8 simulated CPU devices (batch split, members split, or both) train to the same
parameters and metrics as one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnbasics.engine.parallel import check_mesh, data_mesh, mesh_shape

HERE = os.path.dirname(os.path.abspath(__file__))


def _train(devices: int, *names: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, os.path.join(HERE, "dp_train_script.py"), *names], env=env,
                         capture_output=True, text=True, timeout=600, cwd=os.path.dirname(HERE))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), out.stderr


def _assert_same(one: dict, many: dict) -> None:
    for a, b in zip(one["params"] + one["stats"], many["params"] + many["stats"]):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(a).max()))
    np.testing.assert_allclose(many["test_accuracy"], one["test_accuracy"], atol=1e-6)
    np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=1e-5)


@pytest.mark.parametrize("names,meshes", [
    (("mlp", "bn"), {"mlp": [1, 8], "bn": [1, 8]}),  # the batch split 8 ways (BatchNorm statistics global)
    (("mlp_members", "bn_members", "mlp_subset"), {"mlp_members": [4, 2], "bn_members": [4, 2], "mlp_subset": [3, 1]}),
])
def test_eight_devices_equal_one(names, meshes):
    (one, _), (eight, err) = _train(1, *names), _train(8, *names)
    assert one["devices"] == 1 and eight["devices"] == 8
    for name in names:
        assert one[name]["mesh"] == [1, 1]
        assert eight[name]["mesh"] == meshes[name], name
        _assert_same(one[name], eight[name])
    if "mlp_subset" in names:  # one line says which devices stay idle and what would use them all
        assert err.count("training on 3 of 8 devices") == 1, err
        assert "a batch size of 8 or 16 would use every device" in err


def test_mesh_shape_rule():
    assert mesh_shape(8, 2, 32) == (1, 8)  # the batch divides: split it
    assert mesh_shape(8, 4, 128) == (1, 8)  # both would fill 8 devices: the batch first
    assert mesh_shape(8, 8, 100) == (2, 4)  # 100 = 4 x 25: 4 batch shards x 2 member groups
    assert mesh_shape(8, 16, 50) == (4, 2)
    assert mesh_shape(8, 3, 50) == (3, 2)  # nothing fills 8: the largest that fits (6 devices)
    assert mesh_shape(8, 1, 50) == (1, 5)
    assert mesh_shape(8, 3, 11) == (3, 1)
    assert mesh_shape(8, 1, 7) == (1, 7)
    assert mesh_shape(8, 1, 1) == (1, 1)
    assert mesh_shape(8, 3, 7, whole=True) == (0, 0)  # several processes: every device or nothing
    assert mesh_shape(8, 4, 6, whole=True) == (4, 2)
    assert mesh_shape(1, 5, 7) == (1, 1)
    for devices in (1, 2, 3, 4, 6, 8):  # every shape is valid and as large as any valid one
        for members in range(1, 13):
            for batch in range(1, 40):
                m, d = mesh_shape(devices, members, batch)
                assert members % m == 0 and batch % d == 0 and m * d <= devices
                assert all(mm * dd <= m * d for mm in range(1, members + 1) if members % mm == 0
                           for dd in range(1, batch + 1) if batch % dd == 0 and mm * dd <= devices)


def test_mesh_shape_members_first():
    """prefer="members" fills the members axis first among meshes of one size (the split that keeps
    the oneDNN convolutions on); the largest mesh still wins; anything else is refused."""
    assert mesh_shape(8, 8, 32, prefer="members") == (8, 1)  # data first: (1, 8)
    assert mesh_shape(8, 8, 32) == (1, 8)
    assert mesh_shape(2, 8, 32, prefer="members") == (2, 1)
    assert mesh_shape(8, 4, 32, prefer="members") == (4, 2)  # 4 members cannot fill 8: the batch takes the rest
    assert mesh_shape(2, 3, 32, prefer="members") == (1, 2)  # 3 members do not split over 2: the batch does
    assert mesh_shape(8, 3, 7, prefer="members") == (1, 7)  # the largest mesh first, whichever axis
    for devices in (2, 3, 4, 8):
        for members in range(1, 10):
            for batch in range(1, 20):
                m, d = mesh_shape(devices, members, batch, prefer="members")
                dm, dd = mesh_shape(devices, members, batch)
                assert members % m == 0 and batch % d == 0 and m * d == dm * dd and m >= dm
    with pytest.raises(ValueError, match="prefer must be 'data' or 'members', got 'batch'"):
        mesh_shape(8, 8, 32, prefer="batch")


def test_set_cpu_devices_writes_xla_flags():
    from nnbasics.threads import set_cpu_devices

    env = {"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=true"}
    set_cpu_devices(2, env)
    assert env["XLA_FLAGS"] == "--xla_cpu_use_thunk_runtime=true --xla_force_host_platform_device_count=2"
    set_cpu_devices(2, env)  # the same count again: unchanged
    assert env["XLA_FLAGS"].count("device_count") == 1
    with pytest.raises(ValueError, match="XLA_FLAGS already sets --xla_force_host_platform_device_count=2; it and 8"):
        set_cpu_devices(8, env)
    empty: dict = {}
    set_cpu_devices(1, empty)
    assert empty == {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="cpu devices must be a whole number of at least 1"):
            set_cpu_devices(bad, {})


def test_cli_cpu_devices(tmp_path):
    """--cpu-devices N trains on N CPU devices (the members split over them); a bad N or one that
    contradicts XLA_FLAGS is refused with the reason, before anything runs."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "nnbasics.cli", *a], capture_output=True,  # noqa: E731
                                          text=True, timeout=600, env={**env, **kw}, cwd=os.path.dirname(HERE))
    bad = run("--cpu-devices", "0", "list")
    assert bad.returncode == 2 and "--cpu-devices wants a whole number from 1 to 1024, got '0'" in bad.stderr
    clash = run("--cpu-devices", "2", "list", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert clash.returncode == 2 and "XLA_FLAGS already sets --xla_force_host_platform_device_count=8" in clash.stderr
    out = run("--cpu-devices", "2", "--quiet", "run", "perceptron_xor", "--smoke", "--workdir", str(tmp_path / "w"))
    assert out.returncode in (0, 1), out.stderr[-2000:]
    result = json.loads((tmp_path / "w" / "claims.json").read_text())
    assert result["versions"]["devices"] == "2", result["versions"]


def test_batch_must_divide_over_devices():
    import jax

    mesh = data_mesh(jax.devices()[:1])
    check_mesh(mesh, 3, 7)  # one device: anything divides

    class FakeMesh:
        axis_names = ("data",)
        shape = {"data": 8}

    with pytest.raises(ValueError, match="batch_size=100 does not divide evenly over the 8 devices.*96 or 104"):
        check_mesh(FakeMesh, 1, 100)

    class FakeMembersMesh:
        axis_names = ("members", "data")
        shape = {"members": 4, "data": 1}

    with pytest.raises(ValueError, match="3 member.*do not divide evenly over the 4 devices of the mesh's 'members'"):
        check_mesh(FakeMembersMesh, 3, 100)


COMPILE_COUNT_SCRIPT = r"""
import jax, numpy as np
from jax import monitoring
events = []
monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: events.append(name) if "backend_compile" in name else None)
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, loop, parallel
from nnbasics.models import get_model
model = get_model("mlp", num_classes=10, hidden=(32,))
tc = TrainConfig(steps=6, batch_size=11, eval_every=3, seeds=(0, 1, 2, 3), optimizer={"name": "sgd", "learning_rate": 0.1})
run = loop._setup(model, load_dataset("digits"), tc, parallel.training_mesh(4, 11), None)
state, seconds = loop._initial_state(run)
before = len(events)
state, _ = run.run_chunk(state, parallel.shard_members(np.zeros((4, 3, 11), np.int32), run.mesh), run.arrays[0],
                         run.arrays[1], np.int32(3))
jax.block_until_ready(run.run_eval(state, run.arrays[2], run.arrays[3], run.arrays[0], run.arrays[1]))
print("RESULT", dict(run.mesh.shape), before, len(events) - before, seconds > 0)
"""


def test_members_split_compiles_side_by_side_once():
    """On a members-only mesh (4 seeds, batch 11, 4 devices) the init, the training chunk and the
    evaluation are compiled side by side before training, with the members' sharding, and the real
    calls compile nothing more."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env.pop("NNBASICS_SERIAL_COMPILE", None)
    out = subprocess.run([sys.executable, "-c", COMPILE_COUNT_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600, cwd=os.path.dirname(HERE))
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, out.stderr[-3000:]
    assert line == "RESULT {'members': 4, 'data': 1} 3 0 True", line


def test_padded_members_rule():
    """Where whole members are preferred, copies of the last member fill the devices when they cost at most
    a quarter of the work; never with the batch preferred, several processes, or fewer members than devices."""
    from nnbasics.engine.parallel import MAX_PADDING, padded_members

    assert padded_members(2, 5, 32, prefer="members") == 6  # 1 copy in 6
    assert padded_members(2, 3, 32, prefer="members") == 4  # 1 in 4: at the limit
    assert padded_members(4, 6, 32, prefer="members") == 8  # (2, 2) would split the batch: 2 copies in 8
    assert padded_members(8, 9, 32, prefer="members") == 9  # 7 copies in 16: too many
    assert padded_members(2, 8, 32, prefer="members") == 8  # already divides
    assert padded_members(2, 1, 32, prefer="members") == 1  # fewer members than devices
    assert padded_members(2, 5, 32, prefer="data") == 5
    assert padded_members(2, 5, 32, prefer="members", processes=2) == 5
    assert padded_members(1, 5, 32, prefer="members") == 5
    for devices in (2, 3, 4, 8):
        for members in range(1, 20):
            n = padded_members(devices, members, 32, prefer="members")
            assert n == members or (n % devices == 0 and 0 < n - members <= MAX_PADDING * n and members >= devices)


PADDING_SCRIPT = r"""
import json, os, shutil, sys
import jax, numpy as np
from nnbasics.data import load_dataset
from nnbasics.engine import TrainConfig, fit, parallel
from nnbasics.models import get_model
from nnbasics.progress import set_quiet
set_quiet(True)
parallel.preferred_split = lambda: "members"  # as with the oneDNN switch on (needs the extra): whole members first
model = get_model("norm_cnn", num_classes=10)
tc = TrainConfig(steps=6, batch_size=16, eval_every=2, seeds=(0, 1, 2), checkpoint_every=2,
                 optimizer={"name": "momentum", "learning_rate": 0.05, "momentum": 0.9})
data = load_dataset("digits")
ckpt = sys.argv[1]
r = fit(model, data, tc, checkpoint_dir=ckpt)
out = {"devices": jax.device_count(), "members": r.members, "trained": r.steps_trained,
       "rows": [row["seed"] for row in r.history],
       "loss": [row["train_loss"] for row in r.history], "acc": r.history[-1]["test_accuracy"],
       "leading": sorted({int(a.shape[0]) for a in jax.tree.leaves(r.state)}),
       "params": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.params)]}
shutil.rmtree(os.path.join(ckpt, "run", "6"))  # the last checkpoint lost: the next run resumes from step 4
print("RESULT " + json.dumps(out))
"""


def _padding_run(devices: int, ckpt: str) -> tuple[dict, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, "-c", PADDING_SCRIPT, ckpt], capture_output=True, text=True, env=env,
                         timeout=600, cwd=os.path.dirname(HERE))
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, out.stderr[-3000:]
    return json.loads(line[len("RESULT "):]), out.stderr


def test_padded_members_equal_one_device_and_resume_anywhere(tmp_path):
    """3 seeds on 2 devices with whole members preferred: a copy of the last seed makes 4 (one mesh of (2, 1)),
    one line says so, and the results (rows, state, parameters) hold the 3 seeds, equal to one device's. The
    checkpoints hold the 3 seeds too: a run on one device resumes the 2-device run's checkpoint, and the
    2-device run resumes the one-device run's, each to the same numbers."""
    (one, err1), (two, err2) = _padding_run(1, str(tmp_path / "one")), _padding_run(2, str(tmp_path / "two"))
    assert (one["devices"], two["devices"]) == (1, 2)
    assert "3 members (seeds x settings) on 2 devices: 1 copy of the last one train alongside" in err2, err2[-2000:]
    assert "each device trains 2 whole members" in err2 and "copy" not in err1
    for r in (one, two):
        assert [m["seed"] for m in r["members"]] == [0, 1, 2] and r["leading"] == [3] and r["trained"] == 6
        assert r["rows"] == [[0, 1, 2]] * 3
    for a, b in zip(two["params"], one["params"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["acc"], one["acc"], atol=1e-6)
    # crossed over: each resumes the other's checkpoint at step 4 and trains steps 5-6
    (two_from_one, _), (one_from_two, _) = _padding_run(2, str(tmp_path / "one")), _padding_run(1, str(tmp_path / "two"))
    for r in (two_from_one, one_from_two):
        assert r["leading"] == [3] and r["rows"] == [[0, 1, 2]] * 3 and r["trained"] == 2  # resumed at step 4
        for a, b in zip(r["params"], one["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["loss"], one["loss"], rtol=1e-5)
