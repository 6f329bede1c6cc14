"""CNN training speed on the CPU: nnbasics against PyTorch, side by side in one run.

1. The machine's f32 matrix-product rate (jit-compiled 1024x1024 @ 1024x1024 with XLA, and torch).
2. ResNet-20 (CIFAR shape 32x32x3, batch 128, SGD momentum 0.9, weight decay 5e-4, BatchNorm in
   training mode): the nnbasics train step (`nnbasics.engine.train_step`, jit-compiled, the conv
   layers on `impl="auto"` and, for comparison, `impl="xla"` = lax.conv) against the same network in
   PyTorch CPU (NCHW and channels_last, all threads and one), alternated round by round; the
   ratio is against PyTorch's fastest configuration. Prints images/s, the ratios
   (median and range over rounds), the compile time of the train step, and the achieved GFLOP/s
   (3x the forward pass's FLOPs per image: forward, input gradient, weight gradient) against the
   measured matmul rate.
3. The MNIST-1D CNN, 6000 steps of the reference recipe (see mnist1d_speed.py).

`--onednn` adds the step with the oneDNN convolutions (the optional extra, `nnbasics.nn.onednn`,
`impl="onednn"`) to (2); `--layers` times every ResNet-20 convolution alone, forward / input gradient
/ weight gradient, with XLA (lax.conv, and the chunked weight gradient), oneDNN (if it builds) and
PyTorch (channels_last), side by side.

Needs torch (`pip install -e .[bench]`); without it the benchmark says so and exits cleanly.

    python -m experiments.benchmarks.cnn_speed
    python -m experiments.benchmarks.cnn_speed --rounds 5 --steps 5 --skip-mnist1d
    python -m experiments.benchmarks.cnn_speed --one-core --skip-mnist1d --onednn --layers
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import nnbasics  # noqa: F401  (first: tunes malloc before JAX starts its threads, nnbasics/allocator.py)
from experiments.benchmarks.mnist1d_speed import spread, torch_available

BATCH = 128


def matmul_gflops(n: int = 1024, repeats: int = 10) -> dict[str, float]:
    """Best-of-`repeats` f32 matmul rate of XLA and of torch, in GFLOP/s."""
    import jax
    import jax.numpy as jnp
    import torch

    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    ta = torch.randn(n, n)
    tbest = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        ta @ ta
        tbest = min(tbest, time.perf_counter() - t)
    del jnp
    return {"xla": 2 * n**3 / best / 1e9, "torch": 2 * n**3 / tbest / 1e9}


def resnet20(conv_impl: str):
    """The registered ResNet-20 (option A shortcuts, as the PyTorch twin)."""
    from nnbasics.models import get_model, model_names

    if "resnet20" not in model_names():
        raise RuntimeError("nnbasics has no registered 'resnet20' model")
    return get_model("resnet20", num_classes=10, conv_impl=conv_impl)


def forward_flops(model, variables, x) -> float:
    """FLOPs of one forward pass (XLA's cost analysis of the lax.conv version)."""
    import jax

    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def nnbasics_trainer(conv_impl: str, batch: int = BATCH):
    """(run(k) -> loss, compile seconds, params, variables, x) for the nnbasics ResNet-20 step.

    conv_impl "onednn" is the oneDNN switch (`nnbasics --onednn`): the convolutions and the training-mode
    BatchNorms on the extra; "onednn-conv" the convolutions alone on it (BatchNorm on XLA, as before
    round eleven)."""
    from nnbasics.nn import conv

    if conv_impl in ("onednn", "onednn-conv"):
        with conv.onednn_switch(conv_impl == "onednn"):
            return nnbasics_trainer_traced("onednn", batch)
    return nnbasics_trainer_traced(conv_impl, batch)


def nnbasics_trainer_traced(conv_impl: str, batch: int = BATCH):
    import jax
    import jax.numpy as jnp

    from nnbasics.engine import create_state, optim, train_step

    model = resnet20(conv_impl)
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    tx = optim.make_optimizer({"name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4})
    state = create_state(model, tx, jax.random.key(2), x[:2])
    step = jax.jit(train_step, donate_argnums=0)
    t = time.perf_counter()
    compiled = step.lower(state, x, y).compile()
    compile_s = time.perf_counter() - t
    box = {"state": state}

    def run(k: int) -> float:
        st = box["state"]
        for _ in range(k):
            st, metrics = compiled(st, x, y)
        box["state"] = st
        return float(jax.block_until_ready(metrics["loss"]))

    run(1)  # warm up
    params = int(sum(jnp.size(p) for p in jax.tree.leaves(state.params)))
    return run, compile_s, params, model, x


def time_rounds(runners: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """Images/s of every runner, `steps` steps per round, the runners alternating each round."""
    out = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run(steps)
            out[name].append(steps * BATCH / (time.perf_counter() - t))
    return out


def onednn_available() -> bool:
    from nnbasics.nn import onednn

    if onednn.load(warn=False):
        return True
    print(f"oneDNN extension unavailable ({onednn.error()}): skipping its columns (pip install -e .[onednn])")
    return False


def resnet_benchmark(rounds: int, steps: int, with_xla: bool = True, with_onednn: bool = False) -> dict:
    import jax
    import torch

    from experiments.benchmarks import _torch_models as tm

    if len(os.sched_getaffinity(0)) == 1:
        torch.set_num_threads(1)
    rate = matmul_gflops()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, this process on "
          f"{len(os.sched_getaffinity(0))}; ", end="")
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads; f32 matmul 1024^3: XLA {rate['xla']:.0f} GFLOP/s, torch {rate['torch']:.0f} GFLOP/s; malloc: "
          f"{'freed memory kept (nnbasics.allocator)' if nnbasics.allocator.applied() else 'glibc defaults'}", flush=True)
    impls = (["auto"] + (["onednn", "onednn-conv"] if with_onednn and onednn_available() else [])
             + (["xla"] if with_xla else []))
    runners, compile_s = {}, {}
    for impl in impls:
        run, compile_s[impl], params, model, x = nnbasics_trainer(impl)
        runners[f"nnbasics[{impl}]"] = run
    variables = model.init(jax.random.key(0), x[:1], train=False)
    flops_per_image = 3 * forward_flops(resnet20("xla"), variables, x[:1])
    threads = torch.get_num_threads()
    # channels_last and NCHW, with all threads and with one: on a busy machine PyTorch's OpenMP
    # threads can lose more to waiting than they gain, so the ratio is taken against its best.
    configs = [(True, threads), (False, threads)] + ([(True, 1)] if threads > 1 else [])
    for cl, nt in configs:
        run, tmodel = tm.resnet_trainer(BATCH, channels_last=cl)
        name = f"torch[{'channels_last' if cl else 'NCHW'}, {nt} thr]"

        def with_threads(k, run=run, nt=nt):
            torch.set_num_threads(nt)
            try:
                return run(k)
            finally:
                torch.set_num_threads(threads)

        with_threads(1)
        runners[name] = with_threads
    tparams = tm.count_params(tmodel)
    if tparams != params:
        print(f"WARNING: parameter counts differ: nnbasics {params}, torch {tparams}")
    print(f"ResNet-20, batch {BATCH}: {params} parameters (torch twin {tparams}); "
          f"{flops_per_image / 1e6:.0f} MFLOP per training image (3x forward); "
          f"train-step compile: " + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()), flush=True)
    ips = time_rounds(runners, rounds, steps)
    torch_best = max((k for k in ips if k.startswith("torch")), key=lambda k: np.median(ips[k]))
    for name, v in ips.items():
        gf = np.median(v) * flops_per_image / 1e9
        print(f"  {name:30s} {spread(v)} images/s, {gf:.0f} GFLOP/s = {100 * gf / rate['xla']:.0f}% of the XLA matmul "
              f"rate", flush=True)
    ratios = {}
    for impl in impls:
        r = np.array(ips[f"nnbasics[{impl}]"]) / np.array(ips[torch_best])
        ratios[impl] = r.tolist()
        print(f"  nnbasics[{impl}] / {torch_best} = {spread(r)}x (per round)", flush=True)
    return {"images_per_s": ips, "ratios": ratios, "compile_s": compile_s, "matmul": rate,
            "flops_per_image": flops_per_image, "torch_best": torch_best}


# (input H, Cin, Cout, stride, how many) of ResNet-20's 3x3 convolutions
RESNET20_CONVS = [(32, 3, 16, 1, 1), (32, 16, 16, 1, 6), (32, 16, 32, 2, 1), (16, 32, 32, 1, 5), (16, 32, 64, 2, 1),
                  (8, 64, 64, 1, 5)]


def conv_bound(repeats: int = 5) -> dict[str, float]:
    """Milliseconds per ResNet-20 step spent in the convolutions alone, each timed in isolation
    (best of `repeats`): forward, input gradient and weight gradient (lax.conv and chunked). Their
    sum bounds the images/s of any step built on these kernels, whatever the rest costs."""
    import functools

    import jax

    from nnbasics.nn.conv import conv_general

    def best(f, *args):
        jax.block_until_ready(f(*args))
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            ts.append(time.perf_counter() - t)
        return 1e3 * min(ts)

    total = {"forward": 0.0, "input_grad": 0.0, "weight_grad_xla": 0.0, "weight_grad_chunked": 0.0}
    flops = 0.0
    for h, cin, cout, s, count in RESNET20_CONVS:
        x = jax.random.normal(jax.random.key(0), (BATCH, h, h, cin))
        w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
        fwd = {impl: functools.partial(conv_general, strides=s, padding=[(1, 1), (1, 1)], impl=impl)
               for impl in ("xla", "chunked")}
        g = jax.random.normal(jax.random.key(2), fwd["xla"](x, w).shape)
        flops += count * 2 * g.size * 9 * cin
        t = {
            "forward": best(jax.jit(fwd["xla"]), x, w),
            "input_grad": best(jax.jit(lambda x, w, g, f=fwd["xla"]: jax.vjp(lambda a: f(a, w), x)[1](g)[0]), x, w, g)
            if cin > 3 else 0.0,  # the stem needs no input gradient
        }
        for impl in ("xla", "chunked"):
            f = jax.jit(lambda x, w, g, f=fwd[impl]: jax.vjp(lambda b: f(x, b), w)[1](g)[0])
            t[f"weight_grad_{impl}"] = best(f, x, w, g)
        print(f"  conv {h}x{h}x{cin}->{cout} stride {s} (x{count}): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
              + " ms", flush=True)
        for k, v in t.items():
            total[k] += count * v
    conv_ms = total["forward"] + total["input_grad"] + min(total["weight_grad_xla"], total["weight_grad_chunked"])
    print("  per step: " + ", ".join(f"{k} {v:.0f} ms" for k, v in total.items()) + f"; the convolutions alone "
          f"({3 * flops / 1e9:.1f} GFLOP) take >= {conv_ms:.0f} ms = at most {BATCH * 1e3 / conv_ms:.0f} images/s "
          f"({3 * flops / conv_ms / 1e6:.0f} GFLOP/s)", flush=True)
    total["bound_images_per_s"] = BATCH * 1e3 / conv_ms
    return total


def layer_table(repeats: int = 7, with_onednn: bool = True) -> list[dict]:
    """Every ResNet-20 convolution alone (batch 128, 3x3, padding 1): forward, input gradient and
    weight gradient in ms (best of `repeats`) with XLA (lax.conv; and the chunked weight gradient),
    oneDNN and PyTorch (channels_last, its threads as set), side by side; prints torch / oneDNN time
    ratios (>1: oneDNN faster) and oneDNN's weight gradient against its forward."""
    import functools

    import jax
    import torch

    from nnbasics.nn.conv import conv_general

    def best(f, *args):
        f(*args)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(*args)
            ts.append(time.perf_counter() - t)
        return 1e3 * min(ts)

    def jax_timer(f):
        f = jax.jit(f)
        return lambda *a: jax.block_until_ready(f(*a))

    impls = ["xla", "chunked"] + (["onednn"] if with_onednn and onednn_available() else [])
    rows = []
    for h, cin, cout, s, count in RESNET20_CONVS:
        x = jax.random.normal(jax.random.key(0), (BATCH, h, h, cin))
        w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
        conv = {impl: functools.partial(conv_general, strides=s, padding=[(1, 1), (1, 1)], impl=impl) for impl in impls}
        g = jax.random.normal(jax.random.key(2), conv["xla"](x, w).shape)
        row = {"layer": f"{h}x{h}x{cin}->{cout}, stride {s}", "count": count}
        for impl in impls:
            f = conv[impl]
            if impl != "chunked":  # chunked's forward and input gradient are XLA's
                row[f"{impl}_fwd"] = best(jax_timer(f), x, w)
                row[f"{impl}_dx"] = best(jax_timer(lambda x, w, g, f=f: jax.vjp(lambda a: f(a, w), x)[1](g)[0]), x, w, g)
            row[f"{impl}_dw"] = best(jax_timer(lambda x, w, g, f=f: jax.vjp(lambda b: f(x, b), w)[1](g)[0]), x, w, g)
        cl = torch.channels_last
        tx = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        tw = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous(memory_format=cl)
        tg = torch.from_numpy(np.array(g)).permute(0, 3, 1, 2).contiguous(memory_format=cl)

        def tbwd(mask, tx=tx, tw=tw, tg=tg, s=s):
            return torch.ops.aten.convolution_backward(tg, tx, tw, None, [s, s], [1, 1], [1, 1], False, [0, 0], 1, mask)

        with torch.no_grad():
            row["torch_fwd"] = best(lambda: torch.nn.functional.conv2d(tx, tw, stride=s, padding=1))
            row["torch_dx"] = best(lambda: tbwd([True, False, False]))
            row["torch_dw"] = best(lambda: tbwd([False, True, False]))
        rows.append(row)
        line = f"  {row['layer']:24s} x{count}: " + "; ".join(
            f"{impl} " + "/".join(f"{row[k]:.2f}" if k in row else "-" for k in (f"{impl}_fwd", f"{impl}_dx", f"{impl}_dw"))
            for impl in impls + ["torch"])
        if "onednn_fwd" in row:
            line += (" ms; torch/oneDNN " + "/".join(f"{row[f'torch_{k}'] / row[f'onednn_{k}']:.2f}" for k in ("fwd", "dx", "dw"))
                     + f", oneDNN dW/fwd {row['onednn_dw'] / row['onednn_fwd']:.2f}")
        print(line, flush=True)
    print("  (ms, forward/input gradient/weight gradient, best of %d; the stem's input gradient is timed though a "
          "step does not need it)" % repeats, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (the spread is over rounds)")
    p.add_argument("--steps", type=int, default=4, help="ResNet-20 train steps per runner per round")
    p.add_argument("--mnist1d-repeats", type=int, default=1)
    p.add_argument("--skip-mnist1d", action="store_true")
    p.add_argument("--skip-xla", action="store_true", help="do not time the lax.conv (impl='xla') ResNet-20")
    p.add_argument("--bound", action="store_true", help="also time every ResNet-20 conv alone (the conv-only bound)")
    p.add_argument("--onednn", action="store_true", help="also time the step with the oneDNN convolutions (extra)")
    p.add_argument("--layers", action="store_true",
                   help="time every ResNet-20 conv alone: XLA, oneDNN and PyTorch, forward / dX / dW")
    p.add_argument("--skip-step", action="store_true", help="do not time the ResNet-20 training step")
    p.add_argument("--one-core", action="store_true",
                   help="pin the process to one core, torch to one thread (a steadier ratio on a busy machine)")
    args = p.parse_args(argv)
    if args.one_core:  # before jax or torch start their thread pools
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if not torch_available():
        print("torch is not installed: skipping the PyTorch comparison (pip install -e .[bench])")
        return 0
    if not args.skip_step:
        resnet_benchmark(args.rounds, args.steps, with_xla=not args.skip_xla, with_onednn=args.onednn)
    if args.layers:
        import torch

        if len(os.sched_getaffinity(0)) == 1:
            torch.set_num_threads(1)
        layer_table()
    if args.bound:
        conv_bound()
    if not args.skip_mnist1d:
        from experiments.benchmarks.mnist1d_speed import compare

        compare(("cnn",), args.mnist1d_repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
