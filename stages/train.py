"""DVC stage `train@NAME`: train experiment NAME of params.yaml, tracked in MLflow."""
from ecgpipe.pipeline.stage import run_stage
from ecgpipe.pipeline.train import TrainSections, run_train

if __name__ == "__main__":
    run_stage(__doc__, ["spectrogram", "signals", "balance", "chunks", "out", "metrics", "history", "speed"],
              lambda p, a: run_train(TrainSections.of(p, a.experiment), a.spectrogram, a.signals, a.balance, a.chunks,
                                     a.out, a.metrics, a.history, a.speed, params_file=a.params),
              options=["experiment"])
