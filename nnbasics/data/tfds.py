"""Real image data sets through `tfds.data_source` and a grain pipeline (no TensorFlow needed).

The data set must already be prepared in `data_dir` (array_record format); nothing is ever
downloaded at run time. Prepare one on a machine with network access (or in Colab) with

    pip install tensorflow tensorflow-datasets
    python -c "import tensorflow_datasets as tfds; tfds.data_source('cifar10', data_dir='DIR')"
    # or: tfds build cifar10 --data_dir DIR --file_format array_record

and copy DIR over. Then `load_arrays("cifar10", data_dir=DIR)` gives an on-device ArrayDataset
(small sets) and `batches(...)` a streaming, sharded, resumable grain iterator (large sets).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Iterator

import numpy as np

from nnbasics.data import ArrayDataset
from nnbasics.registry import UnknownNameError, unknown_name_message


@dataclasses.dataclass(frozen=True)
class TfdsInfo:
    image_shape: tuple[int, int, int]
    num_classes: int
    image_key: str = "image"
    label_key: str = "label"
    test_split: str = "test"


TFDS_DATASETS: dict[str, TfdsInfo] = {
    "mnist": TfdsInfo((28, 28, 1), 10),
    "fashion_mnist": TfdsInfo((28, 28, 1), 10),
    "cifar10": TfdsInfo((32, 32, 3), 10),
    "cifar100": TfdsInfo((32, 32, 3), 100),
    "imagenet2012": TfdsInfo((224, 224, 3), 1000, test_split="validation"),
}


class DatasetNotPrepared(FileNotFoundError):
    """The tfds data set is not in data_dir; the message says how to prepare it."""


class DatasetDamaged(DatasetNotPrepared):
    """The tfds data set in data_dir cannot be read (e.g. a damaged dataset_info.json); the message
    names the file and says how to prepare the set again."""


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def _is_mocked(builder: Any) -> bool:
    parts = pathlib.Path(str(builder.data_dir)).parts
    return "testing" in parts and "metadata" in parts


def data_source(name: str, split: str, data_dir: str | None = None) -> Any:
    """A random-access source of one split; raises DatasetNotPrepared (never downloads)."""
    import tensorflow_datasets as tfds

    if name not in TFDS_DATASETS:
        raise UnknownNameError(unknown_name_message("tfds data set", name, list(TFDS_DATASETS)))
    data_dir = data_dir or default_data_dir()
    prepare = (f"  pip install tensorflow tensorflow-datasets && tfds build {name} --data_dir {data_dir} "
               "--file_format array_record\n")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - tfds reads the prepared set's metadata here; any failure means it is damaged
        raise DatasetDamaged(_damaged_message(name, data_dir, e, prepare)) from None
    if not builder.is_prepared() and not _is_mocked(builder):
        raise DatasetNotPrepared(
            f"tfds data set {name!r} is not prepared in {data_dir} (looked for {builder.data_dir}). "
            "nnbasics never downloads at run time. On a machine with network access run\n" + prepare +
            f"then copy the prepared directory to {data_dir}, or set TFDS_DATA_DIR to the directory that holds it."
        )
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001 - as above: the files of a prepared set that cannot be opened
        raise DatasetDamaged(_damaged_message(name, data_dir, e, prepare)) from None


def _damaged_message(name: str, data_dir: str, error: BaseException, prepare: str) -> str:
    """Which file of a prepared tfds set is damaged (the first dataset_info.json that does not parse),
    and how to repair it."""
    import json

    infos = sorted(pathlib.Path(data_dir).glob(f"{name}/*/dataset_info.json"))
    bad = []
    for p in infos:
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            bad.append(p)
    where = ", ".join(str(p) for p in (bad or infos)) or str(pathlib.Path(data_dir) / name)
    what = "does not parse as JSON" if bad else "could not be read by tfds"
    version_dir = (bad or infos)[0].parent if (bad or infos) else pathlib.Path(data_dir) / name
    return (f"tfds data set {name!r} in {data_dir} is damaged: {where} {what} "
            f"({type(error).__name__}: {str(error)[:200]}). Delete {version_dir} and prepare the set again on a "
            "machine with network access:\n" + prepare + f"then copy it to {data_dir} (or restore it from a backup).")


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 HWC image -> float32 in [0, 1]."""
    return np.asarray(image, np.float32) / 255.0


def random_crop_flip(rng: np.random.Generator, image: np.ndarray, pad: int = 4) -> np.ndarray:
    """The CIFAR augmentation: pad by `pad` (reflect), random crop back, random horizontal flip."""
    h, w = image.shape[:2]
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    i, j = rng.integers(0, 2 * pad + 1, 2)
    out = padded[i:i + h, j:j + w]
    return out[:, ::-1] if rng.random() < 0.5 else out


def pipeline(
    source: Any,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    augment: bool = False,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    image_key: str = "image",
    label_key: str = "label",
    drop_remainder: bool = True,
) -> Any:
    """A grain MapDataset of {'image': float32 (B,H,W,C), 'label': int32 (B,)} batches.

    Each process takes every `shard_count`-th record from `shard_index`; shuffling and
    augmentation are deterministic given the seed, and `ds[step]` is batch `step`, so a run
    resumes from any step without replaying the data."""
    import grain

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ds = grain.MapDataset.source(source)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    if shuffle:
        ds = ds.shuffle(seed=seed)

    def transform(index_and_ex):
        index, ex = index_and_ex
        img = normalize(ex[image_key])
        if augment:
            img = random_crop_flip(np.random.default_rng([seed, index]), img)
        return {"image": np.ascontiguousarray(img), "label": np.int32(ex[label_key])}

    ds = ds.map_with_index(lambda i, ex: transform((i, ex)))
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def batches(
    name: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    seed: int = 0,
    start_step: int = 0,
    augment: bool = False,
    shard_index: int | None = None,
    shard_count: int | None = None,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled training batches of a tfds set from step `start_step`, this process's
    shard (default: jax.process_index() of jax.process_count()), prefetched in a thread."""
    import jax

    info = TFDS_DATASETS.get(name) or TfdsInfo((0, 0, 0), 0)
    src = data_source(name, split, data_dir)
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    ds = pipeline(src, batch_size, seed, True, augment, None, shard_index, shard_count, info.image_key, info.label_key)
    return _prefetch((ds[i] for i in range(start_step, len(ds))), prefetch)


def _prefetch(gen: Iterator[Any], size: int) -> Iterator[Any]:
    """Run `gen` in a background thread, `size` items ahead."""
    import queue
    import threading

    if size <= 0:
        yield from gen
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def work():
        try:
            for item in gen:
                q.put(item)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def load_arrays(
    name: str, data_dir: str | None = None, limit: int | None = None, transform: Callable | None = None
) -> ArrayDataset:
    """A whole (small) tfds set as an on-device ArrayDataset: images float32 in [0, 1], NHWC."""
    info = TFDS_DATASETS.get(name)
    if info is None:
        raise UnknownNameError(unknown_name_message("tfds data set", name, list(TFDS_DATASETS)))

    def read(split):
        src = data_source(name, split, data_dir)
        n = len(src) if limit is None else min(limit, len(src))
        xs = np.stack([normalize(src[i][info.image_key]) for i in range(n)])
        ys = np.array([src[i][info.label_key] for i in range(n)], np.int32)
        if transform is not None:
            xs = transform(xs)
        return xs, ys

    xtr, ytr = read("train")
    xte, yte = read(info.test_split)
    return ArrayDataset(name, xtr, ytr, xte, yte, num_classes=info.num_classes, info={"source": "tfds"})


def streaming(
    name: str,
    batch_size: int,
    data_dir: str | None = None,
    seed: int = 0,
    augment: bool = False,
    eval_limit: int | None = 10000,
) -> Any:
    """A `nnbasics.data.streaming.StreamingData` over a tfds set: each process streams its own shard of
    every global batch (batch_size / process count examples), and the test split (at most
    `eval_limit` examples) is the on-device evaluation set."""
    import jax

    from nnbasics.data.streaming import StreamingData

    info = TFDS_DATASETS.get(name)
    if info is None:
        raise UnknownNameError(unknown_name_message("tfds data set", name, list(TFDS_DATASETS)))
    procs = jax.process_count()
    if batch_size % procs:
        raise ValueError(f"batch_size={batch_size} must divide over {procs} processes")
    src = data_source(name, info.test_split, data_dir)
    n = len(src) if eval_limit is None else min(eval_limit, len(src))
    x_test = np.stack([normalize(src[i][info.image_key]) for i in range(n)])
    y_test = np.array([src[i][info.label_key] for i in range(n)], np.int32)
    return StreamingData(
        name=name,
        batches=lambda start: batches(name, "train", batch_size // procs, data_dir, seed, start, augment),
        x_test=x_test,
        y_test=y_test,
        input_shape=tuple(x_test.shape[1:]),
    )
