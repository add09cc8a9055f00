"""The model registry: ``@register_model`` stores constructors; ``create_model`` builds by name."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


_INPUTS: dict[str, str] = {}
_AUTOCAST: dict[str, bool] = {}
INPUT_KINDS = ("spectrogram", "raw_signal")  # what a network reads: spectrogram chunks, or raw samples


def register_model(fn: Callable[..., nn.Module] | None = None, *, input_kind: str = "spectrogram",
                   autocast: bool = True):
    """Register a constructor ``fn(n_inputs, n_outputs, n_steps, **kwargs)`` under its name, with
    the kind of input it reads (``@register_model`` or ``@register_model(input_kind="raw_signal")``).
    ``autocast=False``: a network whose backward is written by hand in float32, which bfloat16
    autocast cannot train (its custom autograd functions see bfloat16 gradients)."""
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _REGISTRY[fn.__name__] = fn
        _INPUTS[fn.__name__] = input_kind
        _AUTOCAST[fn.__name__] = autocast
        return fn

    return register if fn is None else register(fn)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def input_kind(name: str) -> str:
    """``spectrogram`` or ``raw_signal``: which loaders and featurizer model ``name`` goes with."""
    return _INPUTS[name]


def trains_in_bfloat16(name: str) -> bool:
    """Whether model ``name`` can train under bfloat16 autocast (``experiments.NAME.precision``)."""
    return _AUTOCAST[name]


def create_model(name: str, n_inputs: int, n_outputs: int, n_steps: int = 40, **kwargs) -> nn.Module:
    """Build the registered model ``name`` for inputs of shape (batch, n_steps, n_inputs)."""
    try:
        constructor = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}") from None
    return constructor(n_inputs=n_inputs, n_outputs=n_outputs, n_steps=n_steps, **kwargs)
