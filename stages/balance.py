"""DVC stage `balance`: oversampled record indices of the training and validation splits."""
from ecgpipe.pipeline.balance import run_balance
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["spectrogram", "split", "out"],
              lambda p, a: run_balance(p.balance, a.spectrogram, a.split, a.out))
