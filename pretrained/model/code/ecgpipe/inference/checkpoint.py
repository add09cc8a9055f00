"""A trained model on disk: ``model.pt`` (the state dict) and ``model.json`` (what rebuilds the
network and its preprocessing object). Loading never runs training code."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ecgpipe.core.errors import ModelFileError
from ecgpipe.core.io import read_json
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.models.heads import n_outputs_for
from ecgpipe.models.registry import create_model

WEIGHTS_FILE = "model.pt"


SPEC_FILE = "model.json"


def model_spec(experiment: str, model: str, preprocessing: Preprocessing) -> dict:
    """Everything needed to rebuild the network ``model`` of ``experiment`` and feed it a raw recording."""
    n_steps, n_inputs = preprocessing.featurizer.input_shape
    return {
        "experiment": experiment,
        "model": model,
        "n_inputs": n_inputs,
        "n_outputs": n_outputs_for(len(preprocessing.class_names)),
        "n_steps": n_steps,
        "class_names": list(preprocessing.class_names),
        "preprocessing": preprocessing.to_dict(),
    }


def build_model(spec: dict) -> nn.Module:
    return create_model(spec["model"], spec["n_inputs"], spec["n_outputs"], n_steps=spec["n_steps"])


SPEC_KEYS = ("model", "n_inputs", "n_outputs", "n_steps", "class_names", "preprocessing")


_RETRAIN = "retrain it (dvc repro), or load it with the ecgpipe version that wrote it"


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_trained(model_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The trained network of an experiment's output folder, in eval mode, and its spec
    (``Preprocessing.from_spec(spec)`` gives its preprocessing object).

    A folder this version cannot load (another version's keys, weights of another network, a
    damaged file) is a ModelFileError naming the file and what to do, never a traceback.
    """
    spec_path, weights_path = Path(model_dir) / SPEC_FILE, Path(model_dir) / WEIGHTS_FILE
    try:
        spec = read_json(spec_path)
    except (ValueError, UnicodeDecodeError) as exc:  # json's errors are ValueErrors
        raise ModelFileError(f"{spec_path}: not valid JSON ({_cause(exc)}); damaged? {_RETRAIN}") from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise ModelFileError(f"{spec_path}: written by another version of ecgpipe (no {', '.join(missing)}); {_RETRAIN}")
    try:
        preprocessing = Preprocessing.from_spec(spec)
        model = build_model(spec)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{spec_path}: written by another version of ecgpipe ({_cause(exc)}); {_RETRAIN}") from None
    for classes in (spec["class_names"], preprocessing.class_names):  # the weights' head has n_outputs
        if not isinstance(classes, (list, tuple)):
            raise ModelFileError(f"{spec_path}: class_names: expected a list of class names, got {classes!r}; {_RETRAIN}")
        if n_outputs_for(len(classes)) != spec["n_outputs"]:
            raise ModelFileError(f"{spec_path}: {len(classes)} classes but the network has {spec['n_outputs']} output"
                                 f"{'' if spec['n_outputs'] == 1 else 's'} (expected {n_outputs_for(len(classes))}); "
                                 f"edited, or mixed with another model's file? {_RETRAIN}")
    try:
        state = torch.load(weights_path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ModelFileError(f"{weights_path}: not a readable weights file ({_cause(exc)}); damaged or truncated? "
                             f"{_RETRAIN}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{weights_path}: does not match {SPEC_FILE}'s network {spec['model']!r} "
                             f"({_cause(exc)}); the two files come from different trainings: retrain it (dvc repro)"
                             ) from None
    return model.to(device).eval(), spec
