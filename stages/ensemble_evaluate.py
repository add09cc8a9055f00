"""DVC stage `task_ensemble_evaluate@TASK-NETWORK`: score NETWORK's rhythm ensemble per recording, under the
device shifts too, into DVC and MLflow (as experiment NETWORK+rhythm)."""
from ecgpipe.pipeline.ensemble import run_ensemble_evaluate
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "features", "spectrogram", "split", "model", "metrics", "plots", "predictor"],
              lambda p, a: run_ensemble_evaluate(p, a.experiment, a.records, a.features, a.spectrogram, a.split,
                                                 a.model, a.metrics, a.plots, a.predictor),
              options=["experiment"])
