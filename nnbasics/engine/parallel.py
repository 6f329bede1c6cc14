"""Data parallelism through JAX's own sharding: one `Mesh` over all devices with axis `data`.

Batches are sharded along `data`, training state and on-device data sets are replicated, and
`jit` inserts the gradient all-reduce. The same code runs on one CPU, all local accelerators,
or many hosts after `initialize_distributed()`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process) named 'data'."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def default_mesh() -> Mesh | None:
    """The mesh training uses by default: all devices, or None when there is only one."""
    return data_mesh() if jax.device_count() > 1 else None


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding that splits dimension `batch_axis` over the 'data' axis."""
    spec = [None] * batch_axis + [DATA_AXIS]
    return NamedSharding(mesh, P(*spec))


def check_divisible(batch_size: int, mesh: Mesh | None, what: str = "batch_size") -> None:
    """Raise a clear error when a global batch does not split evenly over the devices."""
    if mesh is None:
        return
    n = mesh.devices.size
    if batch_size % n:
        lo = (batch_size // n) * n
        hint = f"{lo} or {lo + n}" if lo else f"{n}"
        raise ValueError(
            f"{what}={batch_size} does not divide evenly over {n} devices "
            f"(per-device batch = global batch / device count); use a multiple of {n}, e.g. {hint}"
        )


def shard_batch_constraint(tree: Any, mesh: Mesh | None) -> Any:
    """Inside jit: ask for the leading (batch) axis of every leaf to be split over 'data'."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh)), tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place a pytree of host arrays on every device of the mesh (no-op without a mesh).

    With several processes every process must pass the same values (each fills its own devices)."""
    if mesh is None:
        return tree
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


CLUSTER_ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def initialize_distributed(
    enabled: bool | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Start JAX's distributed runtime for multi-host runs; returns whether it was started.

    Enabled explicitly, or automatically when a cluster environment variable is present. On the
    CPU backend the gloo collectives are selected so several local processes can train together.
    """
    if enabled is None:
        enabled = any(v in os.environ for v in CLUSTER_ENV_VARS)
    if not enabled:
        return False
    if coordinator_address and jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True
