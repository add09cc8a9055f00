"""DVC stage `evaluate@NAME`: score experiment NAME per chunk and per recording, into DVC and MLflow."""
from ecgpipe.pipeline.evaluate import run_evaluate
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "spectrogram", "chunks", "model", "metrics", "plots", "predictor"],
              lambda p, a: run_evaluate(p.evaluate, p.train, p.chunk, a.experiment, a.records, a.spectrogram, a.chunks, a.model, a.metrics,
                                        a.plots, a.predictor),
              options=["experiment"])
