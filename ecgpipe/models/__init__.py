"""Models: ``create_model(name, n_inputs, n_outputs, n_steps, **kwargs)`` and ``list_models()``."""
from ecgpipe.models.registry import MODELS, create_model, input_kind, list_models, trains_in_bfloat16

__all__ = ["MODELS", "create_model", "input_kind", "list_models", "trains_in_bfloat16"]
