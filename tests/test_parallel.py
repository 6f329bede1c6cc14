"""Data parallelism: 8 simulated CPU devices train to the same parameters and metrics as one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnbasics.engine.parallel import check_divisible, data_mesh

HERE = os.path.dirname(os.path.abspath(__file__))


def _train(devices: int) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, os.path.join(HERE, "dp_train_script.py")], env=env,
                         capture_output=True, text=True, timeout=600, cwd=os.path.dirname(HERE))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_eight_devices_equal_one():
    one, eight = _train(1), _train(8)
    assert one["devices"] == 1 and eight["devices"] == 8
    for name in ("mlp", "bn"):
        for a, b in zip(one[name]["params"] + one[name]["stats"], eight[name]["params"] + eight[name]["stats"]):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(a).max()))
        np.testing.assert_allclose(eight[name]["test_accuracy"], one[name]["test_accuracy"], atol=1e-6)
        np.testing.assert_allclose(eight[name]["train_loss"], one[name]["train_loss"], rtol=1e-5)


def test_batch_must_divide_over_devices():
    import jax

    mesh = data_mesh(jax.devices()[:1])
    check_divisible(7, mesh)  # one device: anything divides

    class FakeMesh:
        class devices:
            size = 8

    with pytest.raises(ValueError, match="batch_size=100 does not divide evenly over 8 devices.*96 or 104"):
        check_divisible(100, FakeMesh)
