"""DVC stage `signals`: the raw samples of the spectrogram stage's recordings in one tensor (raw-signal networks)."""
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "spectrogram", "out"],
              lambda p, a: run_signals(a.records, a.spectrogram, a.out))
