"""MLflow: runs and lineage, the pyfunc model, the Model Registry."""
