"""Models: ``create_model(name, n_inputs, n_outputs, n_steps, **kwargs)`` and ``list_models()``."""
from ecgpipe.models import networks as _networks  # noqa: F401  (registers the networks)
from ecgpipe.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
