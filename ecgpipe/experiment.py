"""One training experiment end to end: data to the device, train, save, track in MLflow.

Outputs of experiment NAME (paths from dvc.yaml):
- ``models/NAME/``: ``model.pt`` (state dict), ``model.json`` (what builds the network, and its
  :class:`~ecgpipe.preprocessing.Preprocessing`: the preprocessing travels with the weights), and
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
from torch import nn

from ecgpipe.cpu import tune_for_training
from ecgpipe.data.signals import SignalSet, load_signal_set
from ecgpipe.data.store import PREPROCESSING_FILE, SPECTRA_FILE
from ecgpipe.errors import ModelFileError, TrainingError
from ecgpipe.io import json_text, read_json, staged_outputs, write_tensors
from ecgpipe.models import create_model
from ecgpipe.params import Params
from ecgpipe.preprocessing import Preprocessing, RawCrops, SpectrogramChunks
from ecgpipe.training import (
    Chunks, Spectrograms, chunked_batches, fit, n_outputs_for, random_chunk_batches, random_crop_batches,
    resolve_device, sample_windows, window_positions,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"
RUN_FILE = "mlflow_run.json"
# per-epoch figures that measure the machine, not the model: in MLflow and speed.json only
TIMING_KEYS = ("examples_per_s", "epoch_seconds")


def model_preprocessing(name: str, params: Params, stage_preprocessing: dict,
                        signals: SignalSet | None = None, train_rows: torch.Tensor | None = None) -> Preprocessing:
    """The preprocessing object experiment NAME trains with, from the spectrogram stage's settings.

    A spectrogram featurizer with robustness options (conditioning, log spectra) normalises with
    statistics of its own features: those of every chunk of the training recordings ``train_rows``
    of ``signals``, unaugmented."""
    experiment = params.experiment(name)
    if experiment.raw_signal:
        featurizer = RawCrops(float(stage_preprocessing["sampling_rate_hz"]), experiment.crop_samples,
                              experiment.conditioning)
    else:
        featurizer = dataclasses.replace(SpectrogramChunks.from_stage(stage_preprocessing, params.chunk.size),
                                         conditioning=experiment.conditioning, log_floor=experiment.log_floor)
        if featurizer.from_samples:
            if signals is None or train_rows is None:
                raise ValueError(f"experiment {name}: its conditioned spectra need the training signals to normalise")
            starts, _ = window_positions(signals, torch.unique(train_rows), featurizer)
            featurizer = featurizer.fitted_to(torch.cat(list(
                sample_windows(signals.samples, starts.to(signals.samples.device), featurizer.window_samples, 4096))))
    return Preprocessing(featurizer, tuple(stage_preprocessing["classes"]))


def model_spec(name: str, params: Params, preprocessing: Preprocessing) -> dict:
    """Everything needed to rebuild the network and feed it a raw recording."""
    n_steps, n_inputs = preprocessing.featurizer.input_shape
    return {
        "experiment": name,
        "model": params.experiment(name).model,
        "n_inputs": n_inputs,
        "n_outputs": n_outputs_for(len(preprocessing.class_names)),
        "n_steps": n_steps,
        "class_names": list(preprocessing.class_names),
        "preprocessing": preprocessing.to_dict(),
    }


def build_model(spec: dict) -> nn.Module:
    return create_model(spec["model"], spec["n_inputs"], spec["n_outputs"], n_steps=spec["n_steps"])


SPEC_KEYS = ("model", "n_inputs", "n_outputs", "n_steps", "class_names", "preprocessing")
_RETRAIN = "retrain it (dvc repro), or load it with the ecgpipe version that wrote it"


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_trained(model_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The trained network of an experiment's output folder, in eval mode, and its spec
    (``Preprocessing.from_spec(spec)`` gives its preprocessing object).

    A folder this version cannot load (another version's keys, weights of another network, a
    damaged file) is a ModelFileError naming the file and what to do, never a traceback.
    """
    spec_path, weights_path = Path(model_dir) / SPEC_FILE, Path(model_dir) / WEIGHTS_FILE
    try:
        spec = read_json(spec_path)
    except (ValueError, UnicodeDecodeError) as exc:  # json's errors are ValueErrors
        raise ModelFileError(f"{spec_path}: not valid JSON ({_cause(exc)}); damaged? {_RETRAIN}") from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise ModelFileError(f"{spec_path}: written by another version of ecgpipe (no {', '.join(missing)}); {_RETRAIN}")
    try:
        Preprocessing.from_spec(spec)
        model = build_model(spec)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{spec_path}: written by another version of ecgpipe ({_cause(exc)}); {_RETRAIN}") from None
    try:
        state = torch.load(weights_path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ModelFileError(f"{weights_path}: not a readable weights file ({_cause(exc)}); damaged or truncated? "
                             f"{_RETRAIN}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{weights_path}: does not match {SPEC_FILE}'s network {spec['model']!r} "
                             f"({_cause(exc)}); the two files come from different trainings: retrain it (dvc repro)"
                             ) from None
    return model.to(device).eval(), spec


def logged_params(name: str, params: Params) -> dict:
    """The resolved parameters that shaped this run, for MLflow."""
    sections = ("spectrogram", "split", "balance", "chunk", "train")
    return {
        "experiment": name,
        **dataclasses.asdict(params.experiment(name)),
        **{s: dataclasses.asdict(getattr(params, s)) for s in sections},
    }


def run_train(params: Params, name: str, spectrogram_dir: Path, balance_path: Path, chunks_dir: Path,
              out_dir: Path, metrics_path: Path, history_path: Path, speed_path: Path | None = None,
              params_file: Path | None = None, system_metrics: bool = True, signals_path: Path | None = None) -> dict:
    """The `train@NAME` stage."""
    import mlflow

    from ecgpipe import plots, tracking

    tune_for_training()  # process-wide allocator and denormal settings: speed only
    tracking.check_store_file(tracking.tracking_uri())  # before the data loads, not after the training
    experiment = params.experiment(name)
    device = resolve_device(params.train.device)
    preprocessing_path = Path(spectrogram_dir) / PREPROCESSING_FILE
    stage_preprocessing = read_json(preprocessing_path)

    val_path = Path(chunks_dir) / "val.pt"
    val = Chunks.load(val_path, device)
    if experiment.loader != "random_crop":
        preprocessing = model_preprocessing(name, params, stage_preprocessing)
    if experiment.loader == "chunked":
        inputs = [Path(chunks_dir) / "train.pt"]
        batches = chunked_batches(Chunks.load(inputs[0], device), params.train.batch_size)
    elif experiment.loader == "random_chunk":
        inputs = [Path(spectrogram_dir) / SPECTRA_FILE, Path(balance_path)]
        recordings = Spectrograms.load(spectrogram_dir, balance_path, device)
        batches = random_chunk_batches(recordings, params.chunk.size, params.train.batch_size)
    else:  # random_crop: the raw signal; validated on the crops that score the validation recordings
        if signals_path is None:
            raise ValueError(f"experiment {name}: the random_crop loader needs the signals stage's file (--signals)")
        inputs = [Path(signals_path), Path(balance_path)]
        signals = load_signal_set(signals_path, spectrogram_dir).to(device)
        train_rows = torch.tensor(read_json(balance_path)["train"], dtype=torch.long, device=device)
        preprocessing = model_preprocessing(name, params, stage_preprocessing, signals, train_rows)
        batches = random_crop_batches(signals, train_rows, preprocessing.featurizer, params.train.batch_size,
                                      experiment.augment)
        val = Chunks.from_crops(signals, torch.unique_consecutive(val.records), preprocessing.featurizer,
                                params.chunk.seed)
    inputs += [val_path, preprocessing_path]
    spec = model_spec(name, params, preprocessing)

    torch.manual_seed(params.train.seed)  # the network's initial weights
    model = build_model(spec).to(device)
    log.info("training %s on %s: %s", name, device, model)

    tags = tracking.run_tags(device)
    if params.study.name is not None:  # a fold of a cross-validation study (ecgpipe.study)
        tags.update({"study": params.study.name, "fold": str(params.split.fold), "seed": str(params.train.seed)})
    with tracking.start_run(params.mlflow.experiment_name, name, logged_params(name, params),
                            tags, system_metrics=system_metrics) as run:
        tracking.log_lineage(inputs, params_file)
        try:
            history = fit(model, batches, val, experiment.epochs, experiment.lr, params.train.seed,
                          params.train.eval_batch_size,
                          on_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
                          lr_schedule=experiment.lr_schedule)
        except TrainingError as exc:  # the MLflow run ends FAILED, and nothing is written
            raise TrainingError(f"experiment {name}: {exc} (experiments.{name}.lr is {experiment.lr:g})") from None
        model = model.cpu().eval()
        example = val.x[:4].cpu()
        signature = mlflow.models.infer_signature(example.numpy(), model(example).detach().numpy())
        mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example.numpy())
        mlflow.log_dict(spec, "model.json")
        fig = plots.training_curves(history.epochs, name)
        mlflow.log_figure(fig, "training_curves.png")
        run_info = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                    "tracking_uri": tracking.tracking_uri()}

    table = pd.DataFrame(history.epochs).drop(columns=list(TIMING_KEYS))
    summary = {k: round(v, 6) for k, v in history.last().items() if k != "epoch" and k not in TIMING_KEYS}
    summary["epochs"] = experiment.epochs
    speed = {"examples_per_s": round(history.median("examples_per_s")),
             "seconds": round(sum(e["epoch_seconds"] for e in history.epochs), 1), "device": str(device)}
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
