"""The heads' conventions: two classes get one logit (binary cross-entropy, as the notebook), more
get one per class; logits to probabilities; batched logits in eval mode."""
from __future__ import annotations

import torch
from torch import nn


def n_outputs_for(n_classes: int) -> int:
    """Two classes: one logit and binary cross-entropy (as the notebook); more: one per class."""
    return 1 if n_classes == 2 else n_classes


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss of a batch; with ``class_weights`` (one per class) each example's loss weighted by its
    class's and divided by the sum of the batch's weights (cross-entropy's ``weight``, also for one logit)."""
    if logits.shape[1] == 1:
        if class_weights is None:
            return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
        weights = class_weights.to(logits.dtype)[labels]
        losses = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype), reduction="none")
        return (losses * weights).sum() / weights.sum()
    if class_weights is None:
        return nn.functional.cross_entropy(logits, labels)
    return nn.functional.cross_entropy(logits, labels, weight=class_weights.to(logits.dtype))


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (n, classes), also for the one-logit binary case."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """Logits for ``x[index]`` (all of ``x`` when index is None), in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    n = len(x) if index is None else len(index)
    out = []
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        out.append(model(x[part] if index is None else x[index[part]]))
    model.train(was_training)
    return torch.cat(out)
