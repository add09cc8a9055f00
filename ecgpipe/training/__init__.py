"""Training: loaders, the fit loop and CPU settings."""
