"""One training experiment end to end: data to the device, train, save, track in MLflow.

Outputs of experiment NAME (paths from dvc.yaml):
- ``models/NAME/``: ``model.pt`` (state dict), ``model.json`` (what builds the network, and its
  :class:`~ecgpipe.inference.preprocessing.Preprocessing`: the preprocessing travels with the weights), and
  ``mlflow_run.json`` (the run that the evaluate stage adds to);
- ``metrics/NAME/train.json`` (last epoch, DVC metrics) and ``plots/history/NAME.csv`` (per epoch,
  DVC plots): byte-identical when the inputs, params and code are (on one machine);
- ``metrics/NAME/speed.json``: examples per second and epoch time, which no rerun repeats exactly,
  kept apart from the results for that reason.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import torch

from ecgpipe.core.device import resolve_device
from ecgpipe.core.errors import TrainingError
from ecgpipe.core.io import json_text, read_json, staged_outputs, write_tensors
from ecgpipe.data.signals import SignalSet, load_signal_set
from ecgpipe.data.store import PREPROCESSING_FILE, Chunks
from ecgpipe.evaluation.scoring import Validation, split_rows, split_windows
from ecgpipe.inference.checkpoint import SPEC_FILE, WEIGHTS_FILE, build_model, model_spec
from ecgpipe.inference.featurizers import RawCrops, SpectrogramChunks
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.inference.readers import Signal
from ecgpipe.params import ChunkParams, ExperimentParams, Params, TrainParams
from ecgpipe.signal.windows import cut
from ecgpipe.tracking.runs import RUN_FILE, network_requirements, study_tags
from ecgpipe.training.cpu import tune_for_training
from ecgpipe.training.fit import fit
from ecgpipe.training.loaders import (
    LOADERS,
    LoaderSources,
    window_positions,
)
from ecgpipe.training.precision import resolve_precision

log = logging.getLogger(__name__)

# per-epoch figures that measure the machine, not the model: in MLflow and speed.json only
TIMING_KEYS = ("examples_per_s", "epoch_seconds")


@dataclasses.dataclass(frozen=True)
class TrainSections:
    """What `train@NAME` reads of params.yaml: experiment NAME, ``train``, ``chunk`` (its size and
    seed), and how its MLflow run is tracked: ``mlflow.experiment_name``, the resolved params the run
    logs, and a study fold's tags."""
    name: str
    experiment: ExperimentParams
    train: TrainParams
    chunk: ChunkParams
    mlflow_experiment: str
    logged: dict
    study_tags: dict

    @classmethod
    def of(cls, params: Params, name: str) -> TrainSections:
        sections = ("spectrogram", "split", "balance", "chunk", "train")  # with the experiment, what shaped the run
        experiment = params.experiment(name)
        logged = {"experiment": name, **dataclasses.asdict(experiment),
                  **{s: dataclasses.asdict(getattr(params, s)) for s in sections}}
        return cls(name, experiment, params.train, params.chunk, params.mlflow.experiment_name, logged,
                   study_tags(params.study.name, params.split.fold, params.train.seed))


def model_preprocessing(name: str, experiment: ExperimentParams, chunk_size: int, stage_preprocessing: dict,
                        signals: SignalSet | None = None, train_rows: torch.Tensor | None = None) -> Preprocessing:
    """The preprocessing object experiment NAME trains with, from the spectrogram stage's settings.

    A spectrogram featurizer with robustness options (conditioning, log spectra) normalises with
    statistics of its own features: those of every chunk of the training recordings ``train_rows``
    of ``signals``, unaugmented."""
    if experiment.raw_signal:
        featurizer = RawCrops(float(stage_preprocessing["sampling_rate_hz"]), experiment.crop_samples,
                              experiment.conditioning)
    else:
        featurizer = dataclasses.replace(SpectrogramChunks.from_stage(stage_preprocessing, chunk_size),
                                         conditioning=experiment.conditioning, log_floor=experiment.log_floor)
        if featurizer.from_samples:
            if signals is None or train_rows is None:
                raise ValueError(f"experiment {name}: its conditioned spectra need the training signals to normalise")
            starts, _ = window_positions(signals, torch.unique(train_rows), featurizer)
            featurizer = featurizer.fitted_to(cut(signals.samples, starts.to(signals.samples.device),
                                                  featurizer.window_samples))
    return Preprocessing(featurizer, tuple(stage_preprocessing["classes"]))


def stored_signals(store: SignalSet, rows: list[int], fs: float) -> dict[int, Signal]:
    """Recordings ``rows`` of the signals stage's store (samples as in their files, at ``fs``), by row."""
    samples, offsets = store.samples.cpu(), store.offsets.tolist()
    return {r: Signal(samples[offsets[r]: offsets[r + 1]].numpy(), fs) for r in rows}


def validation(preprocessing: Preprocessing, signals_path: Path, spectrogram_dir: Path, val_path: Path, seed: int,
               batch_size: int) -> Validation:
    """The validation after each epoch: the validation recordings (those of the chunk file ``val_path``)
    from the signals stage's store, cut by the model's preprocessing once, as the evaluate stage cuts
    them from their files (``seed``: the balanced set of a featurizer without a chunk file)."""
    store = load_signal_set(signals_path, spectrogram_dir)
    chunks = Chunks.load(val_path, "cpu")
    signals = stored_signals(store, split_rows(chunks), preprocessing.fs)
    windows = split_windows(preprocessing, signals, store.labels, chunks, seed, str(signals_path))
    return Validation(preprocessing, windows, store.labels, batch_size)


def run_train(sections: TrainSections, spectrogram_dir: Path, signals_path: Path, balance_path: Path, chunks_dir: Path,
              out_dir: Path, metrics_path: Path, history_path: Path, speed_path: Path | None = None,
              params_file: Path | None = None, system_metrics: bool = True) -> dict:
    """The `train@NAME` stage, with NAME's ``sections`` of params.yaml. Each epoch is validated on the
    validation recordings of ``signals_path`` through the model's Predictor (``scoring.Validation``)."""
    import mlflow

    from ecgpipe.reporting import plots
    from ecgpipe.tracking import runs as tracking

    tune_for_training()  # process-wide allocator and denormal settings: speed only
    tracking.check_store_file(tracking.tracking_uri())  # before the data loads, not after the training
    name, experiment, train, chunk = sections.name, sections.experiment, sections.train, sections.chunk
    device = resolve_device(train.device)
    preprocessing_path = Path(spectrogram_dir) / PREPROCESSING_FILE
    stage_preprocessing = read_json(preprocessing_path)

    val_path = Path(chunks_dir) / "val.pt"
    sources = LoaderSources(spectrogram_dir, balance_path, chunks_dir, signals_path, device,
                            train.batch_size, chunk.size, chunk.seed, experiment.augment, experiment.class_balance)
    loader = LOADERS[experiment.loader](
        sources,
        lambda signals, rows: model_preprocessing(name, experiment, chunk.size, stage_preprocessing, signals, rows))
    batches, preprocessing = loader.batches, loader.preprocessing
    validate = validation(preprocessing, signals_path, spectrogram_dir, val_path, chunk.seed, train.eval_batch_size)
    inputs = loader.inputs + [val_path, preprocessing_path, Path(signals_path)]
    spec = model_spec(name, experiment.model, preprocessing)

    torch.manual_seed(train.seed)  # the network's initial weights
    model = build_model(spec).to(device)
    precision = resolve_precision(experiment.precision, device)
    log.info("training %s on %s in %s: %s", name, device, precision, model)

    tags = {**tracking.run_tags(device), **sections.study_tags, "precision": precision}
    with tracking.start_run(sections.mlflow_experiment, name, sections.logged, tags,
                            system_metrics=system_metrics) as run:
        tracking.log_lineage(inputs, params_file)
        try:
            history = fit(model, batches, validate, experiment.epochs, experiment.lr, train.seed,
                          on_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
                          lr_schedule=experiment.lr_schedule, precision=precision,
                          class_weights=loader.class_weights)
        except TrainingError as exc:  # the MLflow run ends FAILED, and nothing is written
            raise TrainingError(f"experiment {name}: {exc} (experiments.{name}.lr is {experiment.lr:g})") from None
        model = model.cpu().eval()
        example = validate.windows.x[:4]
        signature = mlflow.models.infer_signature(example.numpy(), model(example).detach().numpy())
        mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example.numpy(),
                                 pip_requirements=network_requirements())
        mlflow.log_dict(spec, "model.json")
        fig = plots.training_curves(history.epochs, name)
        mlflow.log_figure(fig, "training_curves.png")
        plots.close(fig)
        # epochs: the step at which the evaluate stage logs its figures, where the curves of the same names end
        run_info = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                    "tracking_uri": tracking.tracking_uri(), "epochs": experiment.epochs}

    table = pd.DataFrame(history.epochs).drop(columns=list(TIMING_KEYS))
    summary = {k: round(v, 6) for k, v in history.last().items() if k != "epoch" and k not in TIMING_KEYS}
    summary["epochs"] = experiment.epochs
    speed = {"examples_per_s": round(history.median("examples_per_s")),
             "seconds": round(sum(e["epoch_seconds"] for e in history.epochs), 1), "device": str(device),
             "precision": precision}
    with staged_outputs() as staged:
        folder = staged.dir(out_dir)
        write_tensors(folder / WEIGHTS_FILE, model.state_dict())
        (folder / SPEC_FILE).write_text(json_text(spec))
        (folder / RUN_FILE).write_text(json_text(run_info))
        table.to_csv(staged.file(history_path), index=False, float_format="%.6g")
        staged.file(metrics_path).write_text(json_text(summary))
        if speed_path is not None:
            staged.file(speed_path).write_text(json_text(speed))
    return summary
