"""DVC stage `task_params@NAME`: task NAME's params (params.yaml with the task's values set) in its own file."""
from ecgpipe.pipeline.stage import run_stage
from ecgpipe.pipeline.task import write_task_params

if __name__ == "__main__":
    run_stage(__doc__, ["out"], lambda p, a: write_task_params(a.params, a.task, a.out), options=["task"])
