"""The model registry: ``@register_model`` stores constructors; ``create_model`` builds by name."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a constructor ``fn(n_inputs, n_outputs, n_steps, **kwargs)`` under its name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, n_inputs: int, n_outputs: int, n_steps: int = 40, **kwargs) -> nn.Module:
    """Build the registered model ``name`` for inputs of shape (batch, n_steps, n_inputs)."""
    try:
        constructor = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}") from None
    return constructor(n_inputs=n_inputs, n_outputs=n_outputs, n_steps=n_steps, **kwargs)
