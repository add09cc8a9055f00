"""Models: ``create_model(name, n_inputs, n_outputs, n_steps, **kwargs)`` and ``list_models()``."""
from ecgpipe.models import networks as _networks  # noqa: F401  (registers the networks)
from ecgpipe.models import resnet as _resnet  # noqa: F401
from ecgpipe.models.registry import create_model, input_kind, list_models, register_model, trains_in_bfloat16

__all__ = ["create_model", "input_kind", "list_models", "register_model", "trains_in_bfloat16"]
