"""A recording's way to a probability: readers (files to Signal), featurizers, Preprocessing,
checkpoints and the Predictor. Never imports training, stages or the CLI."""
