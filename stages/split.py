"""DVC stage `split`: record ids per split (train / val / optional test), disjoint and seeded."""
from ecgpipe.pipeline.split import run_split
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["spectrogram", "out"],
              lambda p, a: run_split(p.split, a.spectrogram, a.out))
