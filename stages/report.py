"""DVC stage `report`: all experiments in one table (reports/results.md, .csv) and a comparison chart; the champion registered in MLflow."""
from ecgpipe.pipeline.report import report_sections, run_report
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["metrics", "models", "out", "plots", "chunks", "spectrogram", "records"],
              lambda p, a: run_report(**report_sections(p), metrics_dir=a.metrics, models_dir=a.models,
                                     out_dir=a.out, plots_dir=a.plots, chunks_dir=a.chunks,
                                     spectrogram_dir=a.spectrogram, records_dir=a.records))
