"""The model registry: every network's name, the input it reads and whether it trains in bfloat16, in
one table that needs no torch (params.py checks each experiment against it, in every stage, and a stage
that builds no network should not pay torch's second of import); ``create_model`` builds one by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

INPUT_KINDS = ("spectrogram", "raw_signal")  # what a network reads: spectrogram chunks, or raw samples


@dataclass(frozen=True)
class ModelEntry:
    """Where a network's constructor ``NAME(n_inputs, n_outputs, n_steps, **kwargs)`` lives (a module of
    this package), the kind of input it reads, and ``autocast``: False for a network whose backward is
    written by hand in float32, which bfloat16 autocast cannot train (its custom autograd functions
    would see bfloat16 gradients)."""

    module: str
    input_kind: str = "spectrogram"
    autocast: bool = True


# A new network: its constructor in a module of ecgpipe/models, and a line here.
MODELS: dict[str, ModelEntry] = {
    "mean_spectrum": ModelEntry("networks"),
    "fully_connected": ModelEntry("networks"),
    "conv": ModelEntry("networks", autocast=False),  # backward written by hand in float32
    "rnn": ModelEntry("networks", autocast=False),  # likewise
    "lstm": ModelEntry("networks", autocast=False),  # likewise
    "torch_lstm": ModelEntry("networks"),
    "raw_resnet": ModelEntry("resnet", input_kind="raw_signal"),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def _entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}") from None


def input_kind(name: str) -> str:
    """``spectrogram`` or ``raw_signal``: which loaders and featurizer model ``name`` goes with."""
    return _entry(name).input_kind


def trains_in_bfloat16(name: str) -> bool:
    """Whether model ``name`` can train under bfloat16 autocast (``experiments.NAME.precision``)."""
    return _entry(name).autocast


def create_model(name: str, n_inputs: int, n_outputs: int, n_steps: int = 40, **kwargs) -> nn.Module:
    """Build the registered model ``name`` for inputs of shape (batch, n_steps, n_inputs)."""
    from ecgpipe.models import networks, resnet  # here: torch is imported when a network is built

    entry = _entry(name)
    constructor = getattr({"networks": networks, "resnet": resnet}[entry.module], name)
    return constructor(n_inputs=n_inputs, n_outputs=n_outputs, n_steps=n_steps, **kwargs)
