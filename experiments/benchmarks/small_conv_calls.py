"""Small convolutions on the patch-matrix conv against the oneDNN extra: where the extra's fixed cost
per call outweighs its faster kernels. Sets `nnbasics.nn.conv.ONEDNN_MIN_ROWS`.

Each case: `members` seeds vmapped (as fit trains them), one convolution's forward and both
gradients, 100 of them inside one compiled loop; CPU microseconds per call, best of 5. "rows" is a
member's batch times its output positions, the size the switch looks at.

    taskset -c 0 python -m experiments.benchmarks.small_conv_calls --cpu-threads 1
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks._member_loop import best_cpu_seconds
from nnbasics.nn import conv

CALLS = 100  # convolutions (forward and both gradients) per timed program
# (spatial size, cin, cout): the 1-D CNNs of MNIST-1D / normalizers, the quick ResNets' 2-D stages
CASES = [((40,), 1, 16), ((20,), 16, 32), ((10,), 32, 64), ((8, 8), 4, 4), ((4, 4), 8, 8), ((2, 2), 16, 16)]


def _program(impl: str, spatial: tuple[int, ...], cin: int, cout: int, batch: int, members: int):
    """(compiled loop of 100 calls, kernel, input, None): the tuple `best_cpu_seconds` times."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(members, batch, *spatial, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(members, *(3,) * len(spatial), cin, cout)) * 0.1, jnp.float32)
    grads = jax.vmap(jax.grad(lambda k, x: jnp.sum(conv.conv_general(x, k, 1, "SAME", impl=impl) ** 2),
                              argnums=(0, 1)))

    def body(_, c):
        return jax.tree.map(lambda a, g: a + 1e-6 * g, c, grads(*c))

    return jax.jit(lambda k, x: jax.lax.fori_loop(0, CALLS, body, (k, x))), k, x, None


def main(batches=(2, 8, 32, 128), members: int = 6) -> list[dict]:
    conv.use_onednn(False)  # each impl is what it names
    if not conv._onednn.load(warn=False):
        raise SystemExit(f"the oneDNN extra is not available: {conv._onednn.error()}")
    print(f"{members} members vmapped, forward + both gradients, CPU us per call (best of 5 interleaved rounds x 100 calls)")
    print("| conv | batch | rows / member | patches us | oneDNN us | oneDNN / patches |\n|---|---|---|---|---|---|")
    out = []
    for spatial, cin, cout in CASES:
        for b in batches:
            best = best_cpu_seconds({impl: _program(impl, spatial, cin, cout, b, members)
                                     for impl in ("patches", "onednn")}, repeats=5)
            p, o = (best[impl] / CALLS * 1e6 for impl in ("patches", "onednn"))
            rows = b * math.prod(spatial)
            out.append({"spatial": spatial, "cin": cin, "cout": cout, "batch": b, "rows": rows, "patches": p, "onednn": o})
            shape = "x".join(map(str, spatial))
            print(f"| {len(spatial)}-D {shape}, {cin} -> {cout} | {b} | {rows} | {p:.0f} | {o:.0f} | {o / p:.2f} |",
                  flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=6)
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 8, 32, 128])
    ap.add_argument("--cpu-threads", type=int, default=None)
    a = ap.parse_args()
    if a.cpu_threads:
        from nnbasics.threads import set_cpu_threads

        set_cpu_threads(a.cpu_threads)
    main(tuple(a.batches), a.members)
