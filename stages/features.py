"""DVC stage `features`: the rhythm features of every recording (the ensembles' tree models read them)."""
from ecgpipe.pipeline.features import run_features
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "out"], lambda p, a: run_features(a.records, a.out))
