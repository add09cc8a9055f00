"""Evaluation: metrics over bootstrap resamples, scoring splits through the Predictor, device shifts."""
