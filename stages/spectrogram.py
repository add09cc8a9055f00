"""DVC stage `spectrogram`: selected recordings -> normalised spectrograms, and the data card."""
from ecgpipe.pipeline.spectrogram import run_spectrogram
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "out", "metrics"],
              lambda p, a: run_spectrogram(p.spectrogram, a.records, a.out, a.metrics))
