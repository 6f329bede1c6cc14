"""Model registry: `get_model(name, num_classes=..., **kwargs)` returns a linen module.

Every module in this package registers its models with `@register("name")` on a factory
`(num_classes: int, **kwargs) -> nn.Module`; the modules are imported here on first use so a new
model file needs no edit anywhere else. Models take NHWC (or NWC, or flat) inputs and a
`train: bool` argument.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from nnbasics.registry import Registry, import_submodules

MODELS: Registry[Any] = Registry("model")


def register(name: str, **info: Any):
    """Decorator: register a model factory under `name` (info: e.g. input_shape=(32, 32, 3))."""
    return MODELS.register(name, **info)


def _load_all() -> None:
    import_submodules(__name__, __path__, skip=())


def get_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`."""
    _load_all()
    return MODELS.get(name)(num_classes=num_classes, **kwargs)


def model_names() -> list[str]:
    """The names `get_model` accepts, sorted."""
    _load_all()
    return MODELS.names()


def model_info(name: str) -> dict[str, Any]:
    _load_all()
    return MODELS.info(name)
