"""Typed, validated parameters: the one reader of ``params.yaml``.

Every stage calls :func:`load_params` and uses its own sections. Each section is a frozen
dataclass; pydantic (v2, strict) checks that the YAML mapping has exactly the dataclass's fields
with the right types, a shift is a union on its ``kind``, and each class's ``validate(key)`` then
checks the values. Any problem raises :class:`ParamsError`, one line naming the dotted key and
what was expected.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from ecgpipe.core.device import DEVICE_NAMES, is_device_name
from ecgpipe.core.errors import ParamsError, fail_param
from ecgpipe.core.results import DEFAULT_CHAMPION_METRIC, SCORE_COLUMN_PREFIXES
from ecgpipe.core.units import KNOWN_LABELS, MAX_RECORDING_SAMPLES, REST_LABEL, SAMPLING_RATE_HZ, SEED_LIMIT, is_plain_name
from ecgpipe.signal.augment import Augmentation
from ecgpipe.signal.conditioning import Conditioning
from ecgpipe.signal.shifts import SHIFT_KINDS, Shift


def _check_seed(key: str, seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        fail_param(key, f"a seed from 0 to {SEED_LIMIT - 1}", seed)


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    url: str
    sha256: str | None = None
    retries: int = 5
    timeout_s: float = 60.0

    def validate(self, key: str) -> None:
        if not self.url.startswith(("https://", "http://")):
            fail_param(f"{key}.url", "an http(s) address", self.url)
        if self.sha256 is not None and (
            len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256.lower())
        ):
            fail_param(f"{key}.sha256", "null or 64 hexadecimal digits", self.sha256)
        if self.retries < 0:
            fail_param(f"{key}.retries", "a count >= 0", self.retries)
        if self.timeout_s <= 0:
            fail_param(f"{key}.timeout_s", "a positive number of seconds", self.timeout_s)


@dataclasses.dataclass(frozen=True)
class SpectrogramParams:
    classes: list[str]
    min_length: int
    max_length: int
    nperseg: int
    noverlap: int
    scaling: Literal["spectrum", "density"] = "spectrum"
    # Precision of the per-frequency mean and std. The notebook accumulates them in float32,
    # which is what makes its printed mean 0.000327 and std 1.003635; float64 is exact.
    stats_dtype: Literal["float32", "float64"] = "float32"
    # Recordings per scipy call: bounds memory. A DVC param of this stage: batched FFTs may round
    # differently on another CPU, so no test or stage assumes the values are independent of it.
    batch_size: int = 256
    # A flat recording (every sample equal: a lead off, a dead channel) has no rhythm to learn from:
    # refuse (the stage stops and names them) or drop (left out, named in the log).
    flat_records: Literal["refuse", "drop"] = "refuse"

    def validate(self, key: str) -> None:
        if len(self.classes) < 2:
            fail_param(f"{key}.classes", "at least two labels (a classifier needs two classes)", self.classes)
        for label in self.classes:
            if label not in (*KNOWN_LABELS, REST_LABEL):
                fail_param(f"{key}.classes", f"labels from {list(KNOWN_LABELS)}, or {REST_LABEL!r} for all others",
                           label)
        if len(set(self.classes)) != len(self.classes):
            fail_param(f"{key}.classes", "labels without repeats", self.classes)
        if REST_LABEL in self.classes and set(KNOWN_LABELS) <= set(self.classes):
            fail_param(f"{key}.classes", f"{REST_LABEL!r} beside fewer than all of {list(KNOWN_LABELS)} (it holds "
                       "the labels not listed)", self.classes)
        if self.nperseg < 2:
            fail_param(f"{key}.nperseg", "an integer >= 2", self.nperseg)
        if not 0 <= self.noverlap < self.nperseg:
            fail_param(f"{key}.noverlap", f"0 <= noverlap < nperseg ({self.nperseg})", self.noverlap)
        if self.min_length < self.nperseg:
            fail_param(f"{key}.min_length", f"at least nperseg ({self.nperseg}) samples", self.min_length)
        if not self.min_length <= self.max_length <= MAX_RECORDING_SAMPLES:
            fail_param(f"{key}.max_length", f"from min_length ({self.min_length}) to {MAX_RECORDING_SAMPLES:,} samples "
                  "(every recording is padded to it in memory)", self.max_length)
        if self.batch_size < 1:
            fail_param(f"{key}.batch_size", "a positive integer", self.batch_size)


@dataclasses.dataclass(frozen=True)
class SplitParams:
    train: float
    val: float
    test: float = 0.0
    seed: int = 12345
    # Stratified: each class is split by the fractions separately.
    stratify: bool = False
    # K-fold cross-validation: with ``fold`` set (0 .. folds-1), the test fraction is held out first
    # (stratified), the rest is cut into ``folds`` stratified folds, fold ``fold`` is validation and
    # the others train (``train``/``val`` are then unused). null: the notebook's single split.
    folds: int = 5
    fold: int | None = None
    # this fraction of each class's training recordings held out of training (split.json's
    # "calibration"): the served operating point and the temperature are fitted on them, never on
    # the validation recordings they are reported on. 0: none (the notebook's split).
    calibration: float = 0.0

    def validate(self, key: str) -> None:
        _check_seed(f"{key}.seed", self.seed)
        if not 0.0 <= self.calibration <= 0.5:
            fail_param(f"{key}.calibration", "a fraction of the training recordings from 0 to 0.5", self.calibration)
        if self.folds < 2:
            fail_param(f"{key}.folds", "at least 2 folds", self.folds)
        if self.fold is not None and not 0 <= self.fold < self.folds:
            fail_param(f"{key}.fold", f"null or a fold from 0 to {self.folds - 1}", self.fold)
        for name in ("train", "val", "test"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                fail_param(f"{key}.{name}", "a fraction between 0 and 1", value)
        if self.train <= 0 or self.val <= 0:
            fail_param(f"{key}.train/{key}.val", "both > 0", (self.train, self.val))
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            fail_param(f"{key}.train + {key}.val + {key}.test", "fractions that sum to 1", round(total, 12))


@dataclasses.dataclass(frozen=True)
class BalanceParams:
    seed: int = 12345

    def validate(self, key: str) -> None:
        _check_seed(f"{key}.seed", self.seed)


@dataclasses.dataclass(frozen=True)
class ChunkParams:
    size: int
    seed: int = 12345

    def validate(self, key: str) -> None:
        if self.size < 1:
            fail_param(f"{key}.size", "a positive number of windows", self.size)
        _check_seed(f"{key}.seed", self.seed)


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Settings shared by every experiment."""

    batch_size: int = 192
    # Rows per forward pass in evaluation (and in training-time validation). It bounds memory, but
    # a CPU's matrix kernels may round a row differently in another batching (by ~1e-7), so the
    # stages that use it list it as a DVC param: changing it reruns them.
    eval_batch_size: int = 4096
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    seed: int = 12345

    def validate(self, key: str) -> None:
        if self.batch_size < 1:
            fail_param(f"{key}.batch_size", "a positive integer", self.batch_size)
        if self.eval_batch_size < 1:
            fail_param(f"{key}.eval_batch_size", "a positive integer", self.eval_batch_size)
        if not is_device_name(self.device):
            fail_param(f"{key}.device", DEVICE_NAMES, self.device)
        _check_seed(f"{key}.seed", self.seed)


MIN_CROP_SAMPLES = 64  # a crop must survive the raw network's six halvings


@dataclasses.dataclass(frozen=True)
class ExperimentParams:
    """One training run: a registered model, a loader, its epochs, learning rate and its schedule.

    ``lr_schedule``: ``constant`` (the notebook's) or ``cosine`` (from ``lr`` down towards 0 over the
    epochs, stepped once per epoch).

    Robustness to other devices (all off by default; they need the ``random_crop`` loader, which
    reads the raw signal): ``conditioning`` of every window (``ecgpipe.signal.conditioning``),
    ``log_floor`` (spectrogram networks: log10(power + log_floor) spectra) and ``augment``
    (``ecgpipe.signal.augment``: random gain, offset, wander, noise, stretch, dropout in training).
    """

    model: str
    loader: Literal["chunked", "random_chunk", "random_crop"]
    epochs: int
    lr: float
    lr_schedule: Literal["constant", "cosine"]
    # random_crop of a raw-signal network: the crop (samples at 300 Hz) it sees in training.
    # A spectrogram network's crop is the span of one chunk (chunk.size windows).
    crop_samples: int | None = None
    conditioning: Conditioning = Conditioning()
    log_floor: float | None = None
    augment: Augmentation | None = None
    # the forward pass in training (ecgpipe.training.precision): bfloat16 autocast where the CPU or GPU
    # runs it natively, else float32 with a log line. Per experiment: the notebook's ten stay float32.
    precision: Literal["float32", "bfloat16"] = "float32"
    # how training evens out the classes (ecgpipe.training.loaders): ``oversample`` (the balance stage's
    # rows, the notebook's) or ``loss_weights``: every training recording in its natural share, for as
    # many crops an epoch as the balanced set has, the loss weighted by the inverse of each class's share
    class_balance: Literal["oversample", "loss_weights"] = "oversample"

    @property
    def raw_signal(self) -> bool:
        """The network reads raw-signal crops, not spectrogram chunks."""
        from ecgpipe.models import input_kind

        return input_kind(self.model) == "raw_signal"

    @property
    def robust(self) -> bool:
        """Any of the robustness options set."""
        return not self.conditioning.is_identity or self.log_floor is not None or self.augment is not None

    def validate(self, key: str) -> None:
        from ecgpipe.models import input_kind, list_models, trains_in_bfloat16  # the registry: the valid names

        if self.model not in list_models():
            fail_param(f"{key}.model", f"one of {list_models()}", self.model)
        if self.raw_signal and self.loader != "random_crop":
            fail_param(f"{key}.loader", f"random_crop for model {self.model} (it reads {input_kind(self.model)} input)",
                  self.loader)
        if self.precision == "bfloat16" and not trains_in_bfloat16(self.model):
            fail_param(f"{key}.precision", f"float32 for model {self.model} (its backward is written by hand in float32; "
                       f"bfloat16 trains {[m for m in list_models() if trains_in_bfloat16(m)]})", self.precision)
        if self.raw_signal and (self.crop_samples is None or self.crop_samples < MIN_CROP_SAMPLES):
            fail_param(f"{key}.crop_samples", f"at least {MIN_CROP_SAMPLES} samples for the random_crop loader",
                  self.crop_samples)
        if not self.raw_signal and self.crop_samples is not None:
            fail_param(f"{key}.crop_samples", f"no crop_samples for spectrogram model {self.model} (its crop is the span "
                  "of one chunk of chunk.size windows)", self.crop_samples)
        if self.robust and self.loader != "random_crop":
            fail_param(f"{key}.loader", "random_crop with conditioning, log_floor or augment (they act on the raw signal, "
                  "which only that loader reads)", self.loader)
        self.conditioning.validate(f"{key}.conditioning", fs=SAMPLING_RATE_HZ)
        if self.log_floor is not None and (self.raw_signal or not self.log_floor > 0):
            expected = ("null for a raw-signal model (it has no spectra)" if self.raw_signal
                        else "null or a positive floor added to the power before log10")
            fail_param(f"{key}.log_floor", expected, self.log_floor)
        if self.class_balance != "oversample" and self.loader == "chunked":
            fail_param(f"{key}.class_balance", "oversample for the chunked loader (the chunk stage's training chunks "
                       "are balanced already; random_chunk and random_crop draw from the recordings)", self.class_balance)
        if self.epochs < 1:
            fail_param(f"{key}.epochs", "a positive integer", self.epochs)
        if not self.lr > 0:
            fail_param(f"{key}.lr", "a positive learning rate", self.lr)


@dataclasses.dataclass(frozen=True)
class MlflowParams:
    experiment_name: str = "ecgpipe"

    def validate(self, key: str) -> None:
        if not self.experiment_name.strip():
            fail_param(f"{key}.experiment_name", "a non-empty name", self.experiment_name)


# The bootstrap's resamples x recordings arrays: 10,000 x the 1,700 validation recordings of the four-class
# task are 0.14 GB each (float64), and a stage holds a few at once; 100 million took a stage to 22 GB.
MAX_BOOTSTRAP_RESAMPLES = 10_000


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    # how a recording's chunks become one probability: average the logits, then sigmoid/softmax;
    # or average the chunks' probabilities
    aggregation: Literal["mean_logit", "mean_probability"] = "mean_logit"
    # intervals of recording-level figures: a stratified bootstrap over the recordings
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 12345
    confidence: float = 0.95
    # device shifts (ecgpipe.signal.shifts): the validation recordings scored again under each, one at a time
    shifts: dict[str, typing.Annotated[Shift, pydantic.Field(discriminator="kind")]] = dataclasses.field(
        default_factory=dict)
    shift_seed: int = 12345
    # the served operating point, where split.calibration holds recordings out of training: the label
    # is AF when P(A) reaches the threshold that finds this share of their AF recordings (null: the
    # most likely class). Their temperature is fitted whenever they exist.
    af_sensitivity: float | None = None

    def validate(self, key: str) -> None:
        if self.af_sensitivity is not None and not 0.5 <= self.af_sensitivity < 1:
            fail_param(f"{key}.af_sensitivity", "null or a share of AF recordings from 0.5 to below 1, such as 0.95",
                       self.af_sensitivity)
        for name in self.shifts:
            if not is_plain_name(name):
                fail_param(f"{key}.shifts.{name}", "a name of letters, digits, '_', '.' and '-' (it names MLflow metrics)",
                      name)
        _check_seed(f"{key}.bootstrap_seed", self.bootstrap_seed)
        _check_seed(f"{key}.shift_seed", self.shift_seed)
        if not 100 <= self.bootstrap_resamples <= MAX_BOOTSTRAP_RESAMPLES:
            fail_param(f"{key}.bootstrap_resamples", f"100 to {MAX_BOOTSTRAP_RESAMPLES:,} resamples (each figure holds "
                       "resamples x validation recordings values in memory; past 10,000 an interval's bounds move by "
                       "far less than their last printed digit)", self.bootstrap_resamples)
        if not 0.5 <= self.confidence < 1:
            fail_param(f"{key}.confidence", "a level from 0.5 to below 1, such as 0.95", self.confidence)


@dataclasses.dataclass(frozen=True)
class GateCheck:
    """One deployment check of the champion gate: a results.csv figure at least or at most a bound."""

    at_least: float | None = None
    at_most: float | None = None

    def validate(self, key: str) -> None:
        if (self.at_least is None) == (self.at_most is None):
            fail_param(key, "a mapping with one of at_least or at_most", dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class Preference:
    """A tie-break among the champion's candidates: the highest ``figure`` wins, and every candidate
    within ``tolerance`` of it stays in for the next tie-break (so figures that differ within the
    noise between machines never decide)."""

    figure: str
    tolerance: float = 0.0

    def validate(self, key: str) -> None:
        if self.tolerance < 0:
            fail_param(f"{key}.tolerance", "a tolerance of at least 0", self.tolerance)


@dataclasses.dataclass(frozen=True)
class ReportParams:
    # the champion: the eligible experiment with the highest value of this results.csv column, or
    # one not distinguishable from it (paired bootstrap) chosen by `prefer`, then `order`
    champion_metric: str = DEFAULT_CHAMPION_METRIC
    registered_model: str = "ecgpipe-af"  # its name in the MLflow Model Registry (alias: champion)
    # deployment checks: results.csv column -> {at_least: x} or {at_most: x}; an experiment is eligible
    # only if it passes them all
    gate: dict[str, GateCheck] = dataclasses.field(default_factory=dict)
    prefer: list[Preference] = dataclasses.field(default_factory=list)
    # the last tie-break: experiments in this order first, then the others by name
    order: list[str] = dataclasses.field(default_factory=list)
    # a task's: the registered model whose @champion the task's champion takes once it passes the
    # task's gate (the AF detector serves as the workspace's ecgpipe-af); null: its own model only
    serve_as: str | None = None

    def validate(self, key: str) -> None:
        if self.serve_as is not None and not is_plain_name(self.serve_as):
            fail_param(f"{key}.serve_as", "null or a name of letters, digits, '_', '.' and '-'", self.serve_as)
        if not is_plain_name(self.registered_model):
            fail_param(f"{key}.registered_model", "a name of letters, digits, '_', '.' and '-' (MLflow's registry refuses "
                  "'/' and ':' in names)", self.registered_model)
        if not self.champion_metric.startswith(SCORE_COLUMN_PREFIXES):
            fail_param(f"{key}.champion_metric", f"a results.csv score column such as {DEFAULT_CHAMPION_METRIC}",
                       self.champion_metric)
        if len(set(self.order)) != len(self.order):
            fail_param(f"{key}.order", "each experiment once", self.order)


@dataclasses.dataclass(frozen=True)
class StudyParams:
    # set by `ecgpipe study run` for its queued experiments: their MLflow runs are tagged with it
    name: str | None = None

    def validate(self, key: str) -> None:
        if self.name is not None and not is_plain_name(self.name):
            fail_param(f"{key}.name", "null or a name of letters, digits, '_', '.' and '-'", self.name)


ENSEMBLE_SUFFIX = "+rhythm"
# how an ensemble joins its two models' probabilities (ecgpipe/ensemble/combiner.py): the weighted mean, or a
# logistic regression fitted on the recordings held out of training (named here: every stage reads params.py)
ENSEMBLE_COMBINERS = ("mean", "logistic")


def ensemble_name(network: str) -> str:
    """The experiment name of ``network``'s rhythm ensemble, e.g. ``raw_resnet-robust_crop+rhythm``."""
    return network + ENSEMBLE_SUFFIX


@dataclasses.dataclass(frozen=True)
class EnsembleParams:
    """An experiment of another kind (``ecgpipe.pipeline.ensemble``): a trained network of this file's
    experiments beside a gradient-boosted tree model on each recording's rhythm features (the
    features stage's), their probabilities averaged with ``network_weight`` on the network's, or, with
    ``combiner: logistic``, joined by a logistic regression fitted on the recordings ``split.calibration``
    holds out of training (:mod:`ecgpipe.ensemble.combiner`). Its name is the network's with ``+rhythm``
    (:func:`ensemble_name`)."""

    network_weight: float = 0.5
    seed: int = 12345  # the tree model's
    combiner: str = ENSEMBLE_COMBINERS[0]

    def validate(self, key: str) -> None:
        if not 0 <= self.network_weight <= 1:
            fail_param(f"{key}.network_weight", "a weight from 0 to 1", self.network_weight)
        _check_seed(f"{key}.seed", self.seed)
        if self.combiner not in ENSEMBLE_COMBINERS:
            fail_param(f"{key}.combiner", f"one of {', '.join(ENSEMBLE_COMBINERS)}", self.combiner)
        if self.combiner != "mean" and self.network_weight != EnsembleParams.network_weight:
            # the learned combiner weighs the two models itself: a weight set beside it would be ignored
            fail_param(f"{key}.network_weight", f"no network_weight with combiner {self.combiner} (it fits the "
                       "models' weights on the held-out recordings)", self.network_weight)


@dataclasses.dataclass(frozen=True)
class TaskParams:
    """A named variant of the whole pipeline, with its own family of stages in dvc.yaml (``task_*@NAME``):
    ``set`` maps dotted keys of this file to their values in the task; it trains ``task_experiments``."""

    set: dict[str, Any]

    def validate(self, key: str) -> None:
        for dotted in self.set:
            if dotted.split(".")[0] in OWN_SECTIONS:
                fail_param(f"{key}.set.{dotted}", f"a key outside {', '.join(OWN_SECTIONS)}", dotted)


# what a task's ``set`` may not change: the sections that say what is trained
OWN_SECTIONS = ("experiments", "ensembles", "tasks", "task_experiments", "task_ensembles")


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadParams
    spectrogram: SpectrogramParams
    split: SplitParams
    balance: BalanceParams
    chunk: ChunkParams
    train: TrainParams
    mlflow: MlflowParams
    experiments: dict[str, ExperimentParams]
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    study: StudyParams = StudyParams()
    # the tasks beside this file's own (ecgpipe.pipeline.task), and the experiments each of them trains;
    # a task's own params have neither
    tasks: dict[str, TaskParams] = dataclasses.field(default_factory=dict)
    task_experiments: list[str] = dataclasses.field(default_factory=list)
    # the rhythm ensembles (EnsembleParams) by their network: task_ensembles, those every task makes;
    # ensembles, those of a task's own params (task_params writes its task_ensembles there)
    ensembles: dict[str, EnsembleParams] = dataclasses.field(default_factory=dict)
    task_ensembles: dict[str, EnsembleParams] = dataclasses.field(default_factory=dict)

    def validate(self, key: str) -> None:
        if not self.experiments:
            fail_param("experiments", "at least one experiment", self.experiments)
        for name, experiment in self.experiments.items():
            # every kept recording must give a crop: min_length bounds the shortest one
            if experiment.raw_signal and experiment.crop_samples > self.spectrogram.min_length:
                fail_param(f"experiments.{name}.crop_samples", f"at most spectrogram.min_length "
                      f"({self.spectrogram.min_length}), so that every recording gives a crop; or raise min_length",
                      experiment.crop_samples)
            if not experiment.raw_signal and experiment.robust and self.spectrogram.scaling != "spectrum":
                # the conditioned chunks' spectra are computed in torch, with scaling 'spectrum' only
                fail_param("spectrogram.scaling", f"spectrum for experiment {name} (its conditioned spectra support "
                      "no other scaling)", self.spectrogram.scaling)
            if experiment.loader == "random_crop" and experiment.augment is not None:
                drawn = experiment.augment.input_samples(self.crop_span(experiment))
                if drawn > self.spectrogram.min_length:
                    fail_param(f"experiments.{name}.augment.stretch", f"a stretch whose crop ({drawn} samples) fits "
                          f"spectrogram.min_length ({self.spectrogram.min_length})", experiment.augment.stretch)
        for name in self.experiments:
            if not is_plain_name(name):
                fail_param(f"experiments.{name}", "a name of letters, digits, '_', '.' and '-'", name)
        for name in self.report.order:
            if name not in self.experiments:
                fail_param("report.order", f"experiments of this file ({', '.join(sorted(self.experiments))})", name)
        for name in self.task_experiments:
            if name not in self.experiments:
                fail_param("task_experiments", f"experiments of this file ({', '.join(sorted(self.experiments))})",
                           name)
        if self.tasks and not self.task_experiments:
            fail_param("task_experiments", "at least one experiment for the tasks to train", self.task_experiments)
        for section, trained, networks in (("ensembles", "experiments", self.experiments),
                                           ("task_ensembles", "task_experiments", self.task_experiments)):
            for network in getattr(self, section):
                if network not in networks:
                    fail_param(f"{section}.{network}", f"a network trained beside it (one of {trained}: "
                               f"{', '.join(sorted(networks))})", network)
        for task_name, task in self.tasks.items():
            if not is_plain_name(task_name):  # it names the task's folders
                fail_param(f"tasks.{task_name}", "a name of letters, digits, '_', '.' and '-'", task_name)
            for dotted in task.set:
                self._check_key(f"tasks.{task_name}.set", dotted)

    def _check_key(self, key: str, dotted: str) -> None:
        """A task's dotted key must name a setting of this schema (a typo would change nothing)."""
        section: Any = self
        for depth, part in enumerate(dotted.split(".")):
            if dataclasses.is_dataclass(section) and part in {f.name for f in dataclasses.fields(section)}:
                section = getattr(section, part)
            elif isinstance(section, dict) and part in section:
                section = section[part]
            else:
                where = ".".join(dotted.split(".")[:depth]) or "params.yaml"
                known = (sorted(f.name for f in dataclasses.fields(section)) if dataclasses.is_dataclass(section)
                         else sorted(section) if isinstance(section, dict) else [])
                fail_param(f"{key}.{dotted}", f"a key of params.yaml ({where} has {known})" if known
                           else f"a key of params.yaml ({where} is a value, not a section)", dotted)

    def crop_span(self, experiment: ExperimentParams) -> int:
        """Samples of one training crop of the random_crop loader: the crop of a raw-signal network, or
        the span of one chunk's windows for a spectrogram network."""
        if experiment.raw_signal:
            return experiment.crop_samples
        s = self.spectrogram
        return s.nperseg + (self.chunk.size - 1) * (s.nperseg - s.noverlap)

    def experiment_names(self) -> list[str]:
        """Every experiment this file's stages make: the networks, then their rhythm ensembles."""
        return [*self.experiments, *(ensemble_name(network) for network in self.ensembles)]

    def experiment(self, name: str) -> ExperimentParams:
        try:
            return self.experiments[name]
        except KeyError:
            raise ParamsError(f"params: experiments.{name}: no such experiment; known: {sorted(self.experiments)}") from None


# pydantic checks the structure: exact keys (unknown ones refused), types without coercion (no
# "40" for 40, no 1.5 for an integer, no true for a number), finite numbers (.nan and .inf are YAML
# numbers; no setting here means them), frozen objects. Each class's ``validate(key)`` then checks
# the values. The nested dataclasses (signal's settings too) inherit this configuration.
Params.__pydantic_config__ = {"extra": "forbid", "strict": True, "allow_inf_nan": False}
_SCHEMA = pydantic.TypeAdapter(Params)

_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "list_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping",
             "finite_number": "a finite number", "union_tag_not_found": "a mapping with a kind"}


def _dotted(loc: tuple) -> str:
    """pydantic's error location as the key a user writes: ``experiments.NAME.lr``, ``classes[1]``.
    The tag of a union (a shift's kind), which pydantic puts in the location, is not part of it."""
    key, tp = "", Params
    for part in loc:
        tp = _strip(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and part in SHIFT_KINDS:
            tp = SHIFT_KINDS[part]
            continue
        key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{part}"
        tp = _field_type(tp, part)
    return key


def _strip(tp: Any) -> Any:
    """``X | None`` -> X; ``Annotated[X, ...]`` -> X."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return tp


def _field_type(tp: Any, part: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(part)
    if typing.get_origin(tp) in (dict, list):
        return typing.get_args(tp)[-1]
    return None


def _type_at(loc: tuple) -> Any:
    tp = Params
    for part in loc:
        tp = _strip(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and part in SHIFT_KINDS:
            tp = SHIFT_KINDS[part]
        else:
            tp = _field_type(tp, part)
    return _strip(tp)


def _known_keys(loc: tuple) -> list[str]:
    tp = _type_at(loc)
    return sorted(f.name for f in dataclasses.fields(tp)) if dataclasses.is_dataclass(tp) else []


def _type_words(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list", dict: "a mapping"}
    return words.get(typing.get_origin(tp) or tp, "a mapping")


def _error_line(error: dict) -> str:
    """One line for pydantic's first error, in this module's words: ``params: KEY: expected ..., got ...``."""
    loc, kind = tuple(error["loc"]), error["type"]
    key = _dotted(loc)
    if kind == "missing":
        return f"params: {key}: missing (expected {_type_words(_type_at(loc))})"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"params: {key}: expected one of the known keys {_known_keys(loc[:-1])}, got 'an unknown key'"
    if kind == "literal_error":
        expected = "one of " + error["ctx"]["expected"].replace(" or ", ", ")
    elif kind == "union_tag_invalid":
        key, expected = f"{key}.kind", "one of " + error["ctx"]["expected_tags"]
        return f"params: {key}: expected {expected}, got {error['ctx']['tag']!r}"
    else:
        expected = _EXPECTED.get(kind, error["msg"][0].lower() + error["msg"][1:])
    return f"params: {key}: expected {expected}, got {error['input']!r}"


def _validate_values(obj: Any, key: str) -> None:
    """Each object's ``validate(key)``, innermost first."""
    if isinstance(obj, dict):
        for name, value in obj.items():
            _validate_values(value, f"{key}.{name}" if key else name)
        return
    if isinstance(obj, list):
        for i, value in enumerate(obj):
            _validate_values(value, f"{key}[{i}]")
        return
    if not dataclasses.is_dataclass(obj):
        return
    for field in dataclasses.fields(obj):
        _validate_values(getattr(obj, field.name), f"{key}.{field.name}" if key else field.name)
    if hasattr(obj, "validate"):
        obj.validate(key)


def parse_params(raw: Any) -> Params:
    """Validate an already-parsed ``params.yaml`` mapping."""
    if not isinstance(raw, dict):
        fail_param("params.yaml", "a mapping", raw)
    try:  # JSON, as a YAML file's values are: strict mode then reads mappings into the dataclasses
        params = _SCHEMA.validate_json(json.dumps(raw, default=str))
    except pydantic.ValidationError as exc:
        raise ParamsError(_error_line(exc.errors()[0])) from None
    _validate_values(params, "")
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML's own
    loader keeps the last one silently, so an edit to the first would change nothing)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(f"key {key!r} appears twice in one mapping, on lines {seen[key]} and {line}; "
                                  "expected each key once")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such parameters file") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        return parse_params(raw)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def as_dict(section: Any) -> dict[str, Any]:
    """A section as a plain mapping (for logging and for function keyword arguments)."""
    return dataclasses.asdict(section)
