"""One module per DVC stage (run_<stage>), the stage runner, and the tasks and studies that run DVC."""
