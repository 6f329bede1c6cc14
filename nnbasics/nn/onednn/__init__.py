"""oneDNN's CPU convolutions through `jax.ffi`: an optional extra (`pip install -e ".[onednn]"`).

`conv_ffi.cc` beside this file holds three XLA FFI handlers (forward, input gradient, weight
gradient) for float32 channels-last 2-D convolutions with any stride and explicit padding, calling
oneDNN's convolution primitives. It is compiled with g++ on first use (or by
`python -m nnbasics.nn.onednn build`) against `jax.ffi.include_dir()` and the headers and library of
the `onednn-devel-cpu-gomp` / `onednn-cpu-gomp` wheels, into `$NNBASICS_CACHE/onednn` (default
~/.cache/nnbasics/onednn), one file per source, jax and oneDNN version. Nothing here runs when
nnbasics is imported; `nnbasics.nn.conv` asks `load()` only when the switch is on
(`nnbasics.nn.conv.use_onednn(True)` or NNBASICS_ONEDNN=1). Any failure (no compiler, no oneDNN,
a failed build) makes `load()` return False with one warning, and the convolution keeps its
usual path. The same file holds oneDNN's batch normalization in training (forward with the batch
statistics, optionally with a fused ReLU whose bit mask the backward pass reads; backward with the
scale and shift gradients): `batch_norm_forward` / `batch_norm_backward` here, the differentiable
`nnbasics.nn.normalization.onednn_batch_norm` on top.

Under `jax.vmap` the calls use jax.ffi's vmap_method="expand_dims": the handler sees the vmapped
axes in front and loops over members, or, where every member shares the kernel, runs them as one
larger batch. oneDNN's OpenMP threads are set on every call to XLA:CPU's thread count
(`nnbasics.threads.cpu_threads()`), so the two never oversubscribe the process's cores. With more than
one thread, members with their own kernels whose convolutions have at most SIDE_BY_SIDE_MAX_ROWS
output rows each run side by side, one thread and one single-threaded primitive per member (at least
as many members as threads); larger ones run one after another, each split over every thread.

In a program that runs on one device of several on the same cores (the members-only split of
`nnbasics.engine.parallel.map_members`: a `shard_map` in which each device trains its own members), the
calls are traced inside `per_device_program(k)` and take XLA's thread count divided by the k devices
that share this process's cores, so k devices calling oneDNN at once never oversubscribe them either.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence

SOURCE = pathlib.Path(__file__).with_name("conv_ffi.cc")
TARGETS = {
    "forward": ("nnbasics_onednn_conv_forward", "NnbOnednnConvForward"),
    "input_grad": ("nnbasics_onednn_conv_input_grad", "NnbOnednnConvBackwardData"),
    "weight_grad": ("nnbasics_onednn_conv_weight_grad", "NnbOnednnConvBackwardWeights"),
}
BN_TARGETS = {
    "forward": ("nnbasics_onednn_batch_norm_forward", "NnbOnednnBatchNormForward"),
    "backward": ("nnbasics_onednn_batch_norm_backward", "NnbOnednnBatchNormBackward"),
    "relu_forward": ("nnbasics_onednn_batch_norm_relu_forward", "NnbOnednnBatchNormReluForward"),
    "relu_backward": ("nnbasics_onednn_batch_norm_relu_backward", "NnbOnednnBatchNormReluBackward"),
}
ONEDNN_WHEELS = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")

# Members side by side up to this many output rows (batch x output positions) per member's convolution:
# measured on 2 threads, 8 and 5 members, forward + both gradients (experiments/benchmarks/onednn_threads.py):
# side by side 1.3-2.2x faster at 512 and 2k rows, 1.04-1.13x at 8k, 0.92-1.07x at 33k, 0.94-0.97x at 131k (large
# convolutions compete for the caches); a whole quick ResNet-56 step 2.1x faster. Set between 8k and 33k rows
# from that table, not tuned on any claim.
SIDE_BY_SIDE_MAX_ROWS = 16384

_lock = threading.Lock()
_state: dict = {"loaded": None, "error": None, "lib": None, "path": None}


class BuildError(RuntimeError):
    """The extension could not be built or loaded (the message says why, in one line)."""


def cache_dir() -> pathlib.Path:
    root = os.environ.get("NNBASICS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nnbasics")
    return pathlib.Path(root) / "onednn"


def onednn_paths() -> tuple[pathlib.Path, pathlib.Path, str]:
    """(include dir, library dir, version) of the oneDNN wheels; BuildError when they are not installed."""
    from importlib import metadata

    found = {}
    for name in ONEDNN_WHEELS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BuildError(f"the {name} wheel is not installed (pip install -e \".[onednn]\")") from None
        found[name] = dist
    lib = inc = None
    for f in found["onednn-cpu-gomp"].files or []:
        if f.name.startswith("libdnnl.so"):
            lib = pathlib.Path(found["onednn-cpu-gomp"].locate_file(f)).resolve().parent
    for f in found["onednn-devel-cpu-gomp"].files or []:
        if f.as_posix().endswith("oneapi/dnnl/dnnl.hpp"):
            inc = pathlib.Path(found["onednn-devel-cpu-gomp"].locate_file(f)).resolve().parent.parent.parent
    if lib is None or inc is None:
        raise BuildError("the oneDNN wheels are installed but libdnnl.so or oneapi/dnnl/dnnl.hpp is missing from them")
    return inc, lib, found["onednn-cpu-gomp"].version


def compile_command(out: pathlib.Path) -> list[str]:
    import jax

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise BuildError("no C++ compiler (g++) found")
    inc, lib, _ = onednn_paths()
    return [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp",
            f"-I{jax.ffi.include_dir()}", f"-I{inc}", str(SOURCE), "-o", str(out),
            f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}"]


def library_path() -> pathlib.Path:
    """Where the built extension for this source, jax and oneDNN lives."""
    import jax

    _, _, version = onednn_paths()
    flags = " ".join(compile_command(pathlib.Path("out.so")))
    key = hashlib.sha256(SOURCE.read_bytes() + f"|{jax.__version__}|{version}|{sys.platform}|{flags}".encode())
    key = key.hexdigest()[:16]
    return cache_dir() / f"conv_ffi-{key}.so"


def build(force: bool = False, verbose: bool = False) -> pathlib.Path:
    """Compile the extension (if not already there, or `force`); returns its path. Raises BuildError."""
    if sys.platform != "linux":
        raise BuildError(f"the oneDNN extension is built for Linux only (this is {sys.platform})")
    out = library_path()
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename: two processes building at once both end with a whole file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = compile_command(pathlib.Path(tmp))
    if verbose:
        print(" ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.splitlines() or ["?"]
            raise BuildError(f"g++ failed ({len(proc.stderr.splitlines())} lines of errors, first: {lines[0].strip()})")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load(warn: bool = True) -> bool:
    """Build (if needed), load and register the FFI targets, once per process. False (and one warning,
    when `warn`) if that fails; the reason is in `error()`."""
    with _lock:
        if _state["loaded"] is not None:
            return _state["loaded"]
        try:
            import jax

            path = build()
            lib = ctypes.CDLL(str(path))
            for target, symbol in [*TARGETS.values(), *BN_TARGETS.values()]:
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
            _state.update(loaded=True, lib=lib, path=path)
        except (BuildError, OSError, AttributeError, ValueError, RuntimeError) as e:
            _state.update(loaded=False, error=f"{type(e).__name__}: {e}")
            if warn:
                warnings.warn(f"oneDNN convolutions unavailable, using XLA's ({e})", stacklevel=3)
        return _state["loaded"]


def error() -> str | None:
    """Why `load()` failed (None if it did not, or was not tried)."""
    return _state["error"]


def implementation(kind: str, geometry: Sequence[int]) -> str:
    """The oneDNN implementation (e.g. 'brg:avx512_core') that runs `kind` ('forward', 'input_grad',
    'weight_grad') for geometry (n, h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr)."""
    if not load(warn=False):
        return ""
    fn = _state["lib"].nnb_onednn_impl
    fn.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p, ctypes.c_int64]
    buf = ctypes.create_string_buffer(256)
    arr = (ctypes.c_int64 * 15)(*[int(v) for v in geometry])
    if fn(list(TARGETS).index(kind), arr, buf, 256):
        return ""
    return buf.value.decode()


def batch_norm_implementation(kind: str, shape: Sequence[int]) -> str:
    """The oneDNN implementation (e.g. 'bnorm_jit:avx512_core') of batch normalization `kind` ('forward',
    'backward') for an (n, h, w, c) activation."""
    if not load(warn=False):
        return ""
    fn = _state["lib"].nnb_onednn_bn_impl
    fn.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p, ctypes.c_int64]
    buf = ctypes.create_string_buffer(256)
    arr = (ctypes.c_int64 * 4)(*[int(v) for v in shape])
    if fn(list(BN_TARGETS).index(kind), arr, buf, 256):
        return ""
    return buf.value.decode()


def batch_norm_relu_workspace_bytes(shape: Sequence[int]) -> int:
    """Bytes of the ReLU mask oneDNN keeps for the backward pass of a batch norm with a fused ReLU, for
    an (n, h, w, c) activation (a bit per value where its jit kernel runs, a byte otherwise)."""
    _require()
    fn = _state["lib"].nnb_onednn_bn_relu_workspace_bytes
    fn.argtypes = [ctypes.POINTER(ctypes.c_int64)]
    fn.restype = ctypes.c_int64
    size = int(fn((ctypes.c_int64 * 4)(*[int(v) for v in shape])))
    if size < 0:
        raise BuildError(f"oneDNN has no batch normalization with a fused ReLU for shape {tuple(shape)}")
    return size


def side_by_side_calls() -> int:
    """How many handler calls in this process ran their members side by side (for tests; 0 when not loaded)."""
    if not load(warn=False):
        return 0
    fn = _state["lib"].nnb_onednn_side_by_side_calls
    fn.restype = ctypes.c_int64
    return int(fn())


# ------------------------------------------------------------------------------- the JAX calls


_per_device = threading.local()  # .devices: how many devices share the cores while a per-device body is traced


@contextlib.contextmanager
def per_device_program(devices: int) -> Iterator[None]:
    """Trace, inside the block, the body of a program that runs on each of `devices` devices of this
    process at once (a `shard_map` body): the convolution switch may use oneDNN there (each device
    calls it on its own shard, so no partitioner has to split an FFI call) and each call takes
    XLA's thread count divided by `devices` (at least one)."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a whole number of at least 1, got {devices!r}")
    before = getattr(_per_device, "devices", None)
    _per_device.devices = devices
    try:
        yield
    finally:
        _per_device.devices = before


def per_device_devices() -> int | None:
    """Inside `per_device_program(k)`: k; elsewhere None."""
    return getattr(_per_device, "devices", None)


def call_threads() -> int:
    """The OpenMP threads a call traced now takes: XLA:CPU's thread count, shared out among the devices
    of a per-device program."""
    from nnbasics.threads import cpu_threads

    return max(1, cpu_threads() // (per_device_devices() or 1))


def _attrs(strides, pads) -> dict:
    import numpy as np

    (sh, sw), ((pt, pb), (pl, pr)) = strides, pads
    return {"stride_h": np.int64(sh), "stride_w": np.int64(sw), "pad_top": np.int64(pt), "pad_bottom": np.int64(pb),
            "pad_left": np.int64(pl), "pad_right": np.int64(pr), "threads": np.int64(call_threads()),
            "side_by_side_rows": np.int64(SIDE_BY_SIDE_MAX_ROWS)}


def _require() -> None:
    """Load the extension for a call being traced; BuildError with the reason when it cannot be."""
    if not load(warn=False):
        raise BuildError(f"the oneDNN extension is unavailable: {error()}")


def _call(kind: str, shape, a, b, strides, pads):
    import jax

    _require()
    call = jax.ffi.ffi_call(TARGETS[kind][0], jax.ShapeDtypeStruct(shape, a.dtype), vmap_method="expand_dims")
    return call(a, b, **_attrs(strides, pads))


def conv_forward(x, kernel, out_hw, strides, pads):
    """y (N, OH, OW, F) of x (N, H, W, C) and kernel (KH, KW, C, F), float32, pads ((top, bottom), (left, right));
    out_hw = (OH, OW), as the caller computed it (`nnbasics.nn.conv.output_shape`)."""
    oh, ow = out_hw
    return _call("forward", (x.shape[0], oh, ow, kernel.shape[-1]), x, kernel, strides, pads)


def conv_input_grad(g, kernel, x_shape, strides, pads):
    """d(loss)/dx (x_shape) from g = d(loss)/dy."""
    return _call("input_grad", tuple(x_shape), g, kernel, strides, pads)


def conv_weight_grad(x, g, kernel_shape, strides, pads):
    """d(loss)/d(kernel) (kernel_shape) from x and g = d(loss)/dy."""
    return _call("weight_grad", tuple(kernel_shape), x, g, strides, pads)


def _bn_attrs(epsilon: float) -> dict:
    import numpy as np

    return {"epsilon": np.float32(epsilon), "threads": np.int64(call_threads()),
            "side_by_side_rows": np.int64(SIDE_BY_SIDE_MAX_ROWS)}


def batch_norm_forward(x, scale, shift, epsilon: float, relu: bool = False):
    """(y, mean, var) of batch normalization in training: x (N, H, W, C) float32, statistics over N, H, W
    (the variance biased), y = scale * (x - mean) / sqrt(var + epsilon) + shift; scale, shift (C,).
    relu: y = max(0, ...) in the same pass, and a fourth result, the mask `batch_norm_backward` needs
    (uint8, `batch_norm_relu_workspace_bytes`)."""
    import jax
    import jax.numpy as jnp

    _require()
    c = jax.ShapeDtypeStruct((x.shape[-1],), x.dtype)
    results = (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c)
    if relu:
        results += (jax.ShapeDtypeStruct((batch_norm_relu_workspace_bytes(x.shape),), jnp.uint8),)
    call = jax.ffi.ffi_call(BN_TARGETS["relu_forward" if relu else "forward"][0], results, vmap_method="expand_dims")
    return call(x, scale, shift, **_bn_attrs(epsilon))


def batch_norm_backward(x, dy, mean, var, scale, epsilon: float, workspace=None):
    """(dx, dscale, dshift) of `batch_norm_forward`'s y from dy = d(loss)/dy and the saved mean and var
    (and, for a fused ReLU, its `workspace`: dy is then the gradient of the ReLU's output)."""
    import jax

    _require()
    c = jax.ShapeDtypeStruct((x.shape[-1],), x.dtype)
    results = (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c)
    if workspace is None:
        call = jax.ffi.ffi_call(BN_TARGETS["backward"][0], results, vmap_method="expand_dims")
        return call(x, dy, mean, var, scale, **_bn_attrs(epsilon))
    call = jax.ffi.ffi_call(BN_TARGETS["relu_backward"][0], results, vmap_method="expand_dims")
    return call(x, dy, mean, var, scale, workspace, **_bn_attrs(epsilon))
