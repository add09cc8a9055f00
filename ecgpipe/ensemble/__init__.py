"""A network and a tree model on the recording's rhythm features, as one servable model (issue 24):
features (``rhythm``), the tree model without pickle (``trees``), the ensemble (``model``), its
MLflow model (``serving``) and `ecgpipe ensemble fit` (``build``). No DVC stage runs it."""
