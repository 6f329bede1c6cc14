"""Registry entries for the tfds image sets (loaded on demand from a prepared data_dir)."""

from __future__ import annotations

from nnbasics.data import ArrayDataset, register

for _name, _shape in [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)),
                      ("cifar100", (32, 32, 3))]:

    def _loader(data_dir: str | None = None, limit: int | None = None, _n=_name) -> ArrayDataset:
        from nnbasics.data.tfds import load_arrays

        return load_arrays(_n, data_dir=data_dir, limit=limit)

    _loader.__doc__ = f"{_name} from a prepared tfds data_dir (see nnbasics.data.tfds); never downloads."
    register(_name, input_shape=_shape, source="tfds")(_loader)
