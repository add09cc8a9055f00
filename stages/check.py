"""DVC stage `check`: the whole params.yaml validated before any other stage runs."""
from ecgpipe.pipeline.check import run_check
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["out"], lambda p, a: run_check(p, a.params, a.out))
