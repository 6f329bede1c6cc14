"""Parallelism through JAX's own sharding: one `Mesh` over the devices with axes `members` and `data`.

`fit` trains members (seeds x settings) side by side, vmapped. On several devices the members axis
of the mesh splits them (each device trains whole members: no all-reduce, the one-device numbers)
and the data axis splits each batch (`jit` inserts the gradient all-reduce; BatchNorm's batch
statistics stay global). `training_mesh` picks the two sizes from what divides: the batch over the
devices when it divides, otherwise the members, otherwise the largest mesh that fits (with one line
saying which devices stay idle). On-device data sets are replicated. The same code runs on one CPU,
all local accelerators, or many hosts after `initialize_distributed()`.

A mesh that splits the members alone runs each device's members as its own program (`map_members`, a
`shard_map`): nothing for the partitioner to split, no collective, and the CPU convolution switch can
use oneDNN there. With that switch on, on CPU devices, `training_mesh` prefers that split among meshes
of one size (`preferred_split`), and `fit` pads a member count that the devices do not divide with
copies of its last member (`padded_members`), which it drops from every result.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MEMBERS_AXIS = "members"
DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process) named 'data'."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def mesh_shape(devices: int, members: int, batch_size: int, whole: bool = False,
               prefer: str = "data") -> tuple[int, int]:
    """(members axis, data axis) sizes for `members` vmapped members with batches of `batch_size` on
    `devices` devices: the data axis divides the batch, the members axis divides the members, and
    their product is at most `devices` (exactly `devices` when `whole`, as several processes need).
    The largest product wins; among equals the larger data axis (the batch is split first), or with
    prefer="members" the larger members axis. Returns (0, 0) when `whole` and nothing fits."""
    if prefer not in ("data", "members"):
        raise ValueError(f"prefer must be 'data' or 'members', got {prefer!r}")
    best, best_key = (0, 0), (0, 0)
    for d in _divisors(batch_size):
        if d > devices:
            break
        for m in _divisors(members):
            used = m * d
            if used > devices or (whole and used != devices):
                continue
            key = (used, d if prefer == "data" else m)
            if key > best_key:
                best, best_key = (m, d), key
    return best


def preferred_split() -> str:
    """Which axis `training_mesh` fills first among meshes of one size: the members on CPU devices
    with the oneDNN convolution switch on (a members-only split keeps it on: `map_members`), else the
    batch."""
    from nnbasics.nn.conv import onednn_switched_on

    return "members" if jax.default_backend() == "cpu" and onednn_switched_on() else "data"


def valid_batch_sizes(devices: int, near: int, members: int = 1) -> list[int]:
    """The batch sizes nearest to `near` (one below, one above) with which `members` members use all
    `devices` devices."""
    def fills(b: int) -> bool:
        return mesh_shape(devices, members, b, whole=True)[0] > 0

    below = next((b for b in range(near, 0, -1) if fills(b)), None)
    above = next(b for b in range(near + 1, near + devices + 1) if fills(b))  # a multiple of `devices` is there
    return [b for b in (below, above) if b is not None]


_told: set[str] = set()


def say_once(line: str) -> None:
    if line not in _told:
        _told.add(line)
        print(f"nnbasics: {line}", file=sys.stderr, flush=True)


# the most of the work that copies of a member may take so that the devices divide the members (see `padded_members`)
MAX_PADDING = 0.25


def padded_members(devices: int, members: int, batch_size: int, prefer: str | None = None, processes: int = 1) -> int:
    """How many members to train so that the members alone split over all `devices`: `members` where they
    already do, where the batch is preferred (`preferred_split`), with several processes, with fewer members
    than devices, or where the copies would be more than MAX_PADDING of the work; otherwise the next multiple
    of `devices` (`fit` trains copies of its last member there and drops them from every result). Without it
    a member count that the devices do not divide (5 seeds on 2 devices) would split the batch instead, where
    the CPU's oneDNN convolution stands down."""
    prefer = preferred_split() if prefer is None else prefer
    if prefer != "members" or processes > 1 or devices < 2 or members < devices:
        return members
    if mesh_shape(devices, members, batch_size, prefer="members") == (devices, 1):
        return members
    padded = -(-members // devices) * devices
    return padded if padded - members <= MAX_PADDING * padded else members


def training_mesh(members: int, batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """The mesh `fit` trains on: (members, data) over as many of `devices` (default: all) as the member
    count and the batch size allow; None on one device. When some devices stay idle one line says so;
    with several processes every device must take part, or a ValueError names the valid batch sizes."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if n == 1:
        return None
    multi = jax.process_count() > 1
    m, d = mesh_shape(n, members, batch_size, whole=multi, prefer=preferred_split())
    if m == 0:
        raise ValueError(
            f"batch_size={batch_size} with {members} member(s) cannot use all {n} devices of {jax.process_count()} "
            f"processes (each device takes a share of the batch or whole members): use a batch size such as "
            f"{' or '.join(map(str, valid_batch_sizes(n, batch_size, members)))}, or a member count (seeds x "
            f"settings) that {n} divides")
    if m * d < n:
        say_once(f"training on {m * d} of {n} devices (members split {m} ways, each batch {d} ways): batch_size="
                  f"{batch_size} and {members} member(s) do not fill {n}; a batch size of "
                  f"{' or '.join(map(str, valid_batch_sizes(n, batch_size, members)))} would use every device")
    return Mesh(np.asarray(devices[:m * d]).reshape(m, d), (MEMBERS_AXIS, DATA_AXIS))


def axis_size(mesh: Mesh | None, axis: str) -> int:
    """How many devices `axis` of the mesh spans (1 without a mesh or without that axis)."""
    return 1 if mesh is None or axis not in mesh.axis_names else int(mesh.shape[axis])


def _axis(mesh: Mesh, axis: str) -> str | None:
    return axis if axis in mesh.axis_names else None


def check_mesh(mesh: Mesh | None, members: int, batch_size: int) -> None:
    """Raise a clear error when a given mesh does not split the batch or the members evenly."""
    if mesh is None:
        return
    d, m = axis_size(mesh, DATA_AXIS), axis_size(mesh, MEMBERS_AXIS)
    if batch_size % d:
        raise ValueError(
            f"batch_size={batch_size} does not divide evenly over the {d} devices of the mesh's '{DATA_AXIS}' "
            f"axis (per-device batch = global batch / device count); use a multiple of {d}, e.g. "
            f"{' or '.join(map(str, valid_batch_sizes(d, batch_size)))}")
    if members % m:
        raise ValueError(f"{members} member(s) (seeds x settings) do not divide evenly over the {m} devices of the "
                         f"mesh's '{MEMBERS_AXIS}' axis; use a member count that {m} divides")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding that splits dimension `batch_axis` over the 'data' axis (replicated over members)."""
    spec = [None] * batch_axis + [_axis(mesh, DATA_AXIS)]
    return NamedSharding(mesh, P(*spec))


def members_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (member) dimension over the 'members' axis."""
    return NamedSharding(mesh, P(_axis(mesh, MEMBERS_AXIS)))


def vmap_members(fun: Any, in_axes: Any, mesh: Mesh | None) -> Any:
    """`jax.vmap` over members; on a mesh with a members axis, sharding constraints inside `fun` get the
    member dimension on that axis (so a batch constraint keeps each member's batch on its devices)."""
    if mesh is not None and MEMBERS_AXIS in mesh.axis_names:
        return jax.vmap(fun, in_axes=in_axes, spmd_axis_name=MEMBERS_AXIS)
    return jax.vmap(fun, in_axes=in_axes)


def members_only(mesh: Mesh | None) -> bool:
    """Whether the mesh splits the members alone (a members axis of 2 or more, no batch split): each
    device then trains its own members whole, and `map_members` runs them as a per-device program."""
    return axis_size(mesh, MEMBERS_AXIS) > 1 and axis_size(mesh, DATA_AXIS) == 1


def local_mesh_devices(mesh: Mesh) -> int:
    """How many of the mesh's devices belong to this process (they share its cores)."""
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def map_members(fun: Any, in_axes: Sequence[int | None], mesh: Mesh | None) -> Any:
    """`fun` mapped over members (arguments with in_axes 0 carry a leading member axis, None ones are
    shared; every output carries the member axis).

    On a members-only mesh (`members_only`) this is a `jax.shard_map`: each device runs `fun` vmapped
    over its own members as an ordinary one-device program (no partitioner, no collective), traced
    inside `nnbasics.nn.onednn.per_device_program`, so the CPU convolution switch may call oneDNN there
    with its share of the cores. `fun` must then not ask for shardings itself (build it with mesh=None).
    On any other mesh, `vmap_members` (XLA's partitioner splits the batch); without a mesh, `jax.vmap`."""
    if not members_only(mesh):
        return vmap_members(fun, in_axes, mesh)
    from nnbasics.nn.onednn import per_device_program

    inner, share = jax.vmap(fun, in_axes=in_axes), local_mesh_devices(mesh)

    def body(*args):
        with per_device_program(share):
            return inner(*args)

    specs = tuple(P(MEMBERS_AXIS) if a == 0 else P() for a in in_axes)
    # check_vma=False: the oneDNN convolution's custom VJP returns values without the varying-axis
    # annotation shard_map's checker expects; every output here is split by members anyway
    return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=P(MEMBERS_AXIS), check_vma=False)


def shard_batch_constraint(tree: Any, mesh: Mesh | None) -> Any:
    """Inside jit: ask for the leading (batch) axis of every leaf to be split over 'data'."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh)), tree)


def _put(tree: Any, sharding: NamedSharding) -> Any:
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place a pytree of host arrays on every device of the mesh (no-op without a mesh).

    With several processes every process must pass the same values (each fills its own devices)."""
    return tree if mesh is None else _put(tree, replicated(mesh))


def shard_members(tree: Any, mesh: Mesh | None) -> Any:
    """Place a pytree of host arrays with a leading member axis on the mesh, members split over the
    'members' axis and replicated over 'data' (no-op without a mesh). With several processes every
    process passes the same (global) values."""
    return tree if mesh is None else _put(tree, members_sharding(mesh))


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
