"""A network and a tree model on the recording's rhythm features, as one servable model (issue 24):
features (``rhythm``), the tree model without pickle (``trees``), the ensemble (``model``) and its
MLflow model (``serving``). dvc.yaml's features and task_ensemble_* stages make and judge it
(``ecgpipe.pipeline.ensemble``)."""
