"""DVC stage `task_serve@NAME`: task NAME's champion takes @champion of report.serve_as once it passes the task's gate."""
from ecgpipe.pipeline.stage import run_stage
from ecgpipe.pipeline.serve import run_serve

if __name__ == "__main__":
    run_stage(__doc__, ["champion", "models", "workspace_champion", "out"],
              lambda p, a: run_serve(p.report.serve_as, a.champion, a.models, a.workspace_champion, a.out))
