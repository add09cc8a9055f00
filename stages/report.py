"""DVC stage `report`: all experiments in one table (reports/results.md, .csv) and a comparison chart; the champion registered in MLflow."""
from ecgpipe.pipeline.report import run_report
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["metrics", "models", "out", "plots", "chunks", "spectrogram", "records"],
              lambda p, a: run_report(p, a.metrics, a.models, a.out, a.plots, a.chunks, a.spectrogram, a.records))
