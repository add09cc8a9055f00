"""DVC stage `ship`: the served AF detector and its model card in pretrained/, kept in git."""
from ecgpipe.pipeline.ship import run_ship
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["champion", "out"],
              lambda p, a: run_ship(p.report.registered_model, p.evaluate.confidence, a.champion, list(p.tasks),
                                    ".", a.out))
