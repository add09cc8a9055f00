"""DVC stage `task_ensemble_train@TASK-NETWORK`: NETWORK's rhythm ensemble (experiment NETWORK+rhythm): the tree
model on rhythm features beside the network's predictor (--network), and its operating point."""
from ecgpipe.pipeline.ensemble import run_ensemble_train
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "features", "spectrogram", "split", "network", "out", "metrics"],
              lambda p, a: run_ensemble_train(p, a.experiment, a.records, a.features, a.spectrogram, a.split,
                                              a.network, a.out, a.metrics),
              options=["experiment"])
