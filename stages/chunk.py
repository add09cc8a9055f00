"""DVC stage `chunk`: fixed-size chunks per split (natural and class-balanced), and their counts."""
from ecgpipe.pipeline.chunk import run_chunk
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["spectrogram", "split", "balance", "out", "metrics"],
              lambda p, a: run_chunk(p.chunk, a.spectrogram, a.split, a.balance, a.out, a.metrics))
