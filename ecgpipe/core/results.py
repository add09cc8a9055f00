"""The results schema: every figure's name, in each form it is written or read, built and read here only.

A figure is scored at one *level* (``LEVELS``) of a split: the notebook's balanced chunks
(``chunk_balanced``: each class's chunks oversampled to equal counts), all chunks (``chunk``) and
whole recordings (``record``). Its forms:

- eval.json (the evaluate stage): ``{split: {level: {figure: value or {class: value}, "ci": {...}}}}``,
  with the device shifts under ``shifts_key(split)`` and the worst of them under ``worst_shift_key(split)``;
- MLflow metrics: ``<split>_<level>_<figure>[_<class>]`` (``val_record_f1_A``), a device shift's
  ``<split>_shift_<shift>_<figure>[_<class>]`` and ``..._change_<figure>``, the worst shift's
  ``<split>_worst_shift_<figure>``; MLflow names allow no ``~`` (CinC's noise class), so a metric
  spells it ``noise``;
- results.csv (the report), the gates and a study (study.csv, MLflow's study runs): the MLflow name
  without its split (``record_f1_A``, ``chunk_balanced_accuracy``), and the worst shift's columns
  (``worst_shift_columns``);
- the training history (train.json, plots/history/NAME.csv, MLflow's curves per epoch): the MLflow
  name (``history_name``), as the validation after each epoch scores as the evaluate stage does.

One figure, one name: ``<level>_<figure>[_<class>]``, with its split before it where the form holds
several splits (the notebook's balanced chunk accuracy is ``val_chunk_balanced_accuracy`` in the
history and MLflow, ``chunk_balanced.accuracy`` in eval.json's nesting and ``chunk_balanced_accuracy``
in results.csv and study.csv). An interval adds ``_ci_low`` and ``_ci_high`` to its figure's name.
"""
from __future__ import annotations

CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
LEVELS = ("chunk_balanced", "chunk", "record")
RECORD = LEVELS[-1]
AF = "A"  # CinC's label of atrial fibrillation


def joined(*parts: str) -> str:
    """The non-empty ``parts`` joined by ``_``: ``joined("val", "record", "f1", "A")``."""
    return "_".join(p for p in parts if p)


def interval(name: str) -> tuple[str, str]:
    """The names of the low and high ends of figure ``name``'s interval."""
    return name + CI_LOW, name + CI_HIGH


def with_interval(name: str, value: float, low: float, high: float) -> dict[str, float]:
    return {name: float(value), name + CI_LOW: float(low), name + CI_HIGH: float(high)}


def is_interval(name: str) -> bool:
    return name.endswith((CI_LOW, CI_HIGH))


def mlflow_names(flat: dict[str, float]) -> dict[str, float]:
    """``flat`` with names that MLflow accepts (``~`` spelled ``noise``)."""
    return {k.replace("~", "noise"): v for k, v in flat.items()}


def figure(figures: dict, name: str):
    """One figure of a level's scores (or of their intervals or resamples) by flat name: ``f1_A``,
    ``roc_auc``, ``recall_N`` ..."""
    if name in figures and not isinstance(figures[name], dict):
        return figures[name]
    key, _, cls = name.rpartition("_")
    if key in figures and isinstance(figures[key], dict) and cls in figures[key]:
        return figures[key][cls]
    raise KeyError(f"no figure {name!r}; expected one of {flat_names(figures)}")


def flat_names(figures: dict) -> list[str]:
    names = []
    for key, value in figures.items():
        names += [joined(key, c) for c in value] if isinstance(value, dict) else [key]
    return names


# --- eval.json ---------------------------------------------------------------------------------


def shifts_key(split: str) -> str:
    """eval.json's section of a split's device shifts: ``{shift: figures}``."""
    return joined(split, "shifts")


def worst_shift_key(split: str) -> str:
    """eval.json's section of a split's worst shift (``robustness.worst_shift``); its figures are
    also MLflow metrics under this prefix."""
    return joined(split, "worst_shift")


def shift_metric_prefix(split: str, shift: str) -> str:
    """The MLflow prefix of one device shift's figures: ``val_shift_gain_2x``."""
    return joined(split, "shift", shift)


# --- results.csv and the gates ----------------------------------------------------------------

NOTEBOOK_COLUMN = "notebook_chunk_balanced_accuracy"  # the notebook's own printed figure, where the task is its
CHUNK_COLUMNS = {level: joined(level, "accuracy") for level in LEVELS[:2]}  # each chunk level's accuracy
RECORD_PREFIX = RECORD + "_"
AF_ALARM_PREFIX = RECORD_PREFIX + "af_"
WORST_SHIFT = "worst_shift"  # the column of the worst shift's name, and the prefix of its figures
MIN_SHIFT_ROC_AUC = "min_shift_roc_auc"  # the lowest ROC AUC under any shift
MIN_SHIFT_AF_ROC_AUC = "min_shift_af_roc_auc"  # an AF alarm's lowest AF ROC AUC under any shift
SHIFT_COLUMNS = (WORST_SHIFT, "min_shift_")  # column prefixes: shown in the report's shift section
SCORE_COLUMN_PREFIXES = (RECORD_PREFIX, "chunk_")  # the columns a champion metric may be


def record_column(figure_name: str) -> str:
    """The results.csv column of a recording-level figure (``f1_A`` -> ``record_f1_A``)."""
    return RECORD_PREFIX + figure_name


COMPARED = [CHUNK_COLUMNS["chunk_balanced"], *map(record_column, ("accuracy", "balanced_accuracy", "f1_A", "macro_f1",
                                                                   "roc_auc"))]  # the report's comparison figure
DEFAULT_CHAMPION_METRIC = record_column("f1_A")


def record_figure(column: str) -> str:
    """The flat figure name (``f1_A``, ``roc_auc``) of a ``record_*`` column of results.csv."""
    return column.removeprefix(RECORD_PREFIX)


def is_record_column(column: str) -> bool:
    return column.startswith(RECORD_PREFIX)


def figure_columns(levels: dict) -> dict:
    """results.csv's figure columns of one split's scores (eval.json's ``{level: scores}``), without
    their intervals (``interval_columns``), in the report's order."""
    record = levels[RECORD]
    names = ["accuracy", "balanced_accuracy", *[joined("f1", c) for c in record["f1"]], "macro_f1", "roc_auc",
             "average_precision"]
    if "challenge_score" in record:
        names.append("challenge_score")
    if "af_roc_auc" in record:  # more classes than N and A: the model read as an AF alarm too
        names += [joined("recall", AF), *[joined(key, c) for key in ("af_specificity", "af_specificity_at_sensitivity_95")
                                          for c in record[key]], "af_roc_auc"]
    # a model without chunks (a rhythm ensemble) leaves the chunk columns empty
    return {**{CHUNK_COLUMNS[level]: levels[level]["accuracy"] if level in levels else None
               for level in ("chunk_balanced", "chunk")},
            **{record_column(n): figure(record, n) for n in names}}


def interval_columns(record: dict, columns) -> dict:
    """Each ``record_*`` column's interval, as ``<column>_ci_low`` / ``_ci_high``, from eval.json's ``ci``."""
    return {name: value for column in columns if is_record_column(column)
            for name, value in zip(interval(column), figure(record["ci"], record_figure(column)))}


def worst_shift_columns(worst: dict, positive: str) -> dict:
    """results.csv's columns of the worst shift (``robustness.worst_shift``) for ``positive``'s F1."""
    f1, recall = joined("f1", positive), joined("recall", positive)
    columns = {WORST_SHIFT: worst["shift"], joined(WORST_SHIFT, f1): worst[f1],
               joined(WORST_SHIFT, f1, "change"): worst[joined(f1, "change")], MIN_SHIFT_ROC_AUC: worst["min_roc_auc"]}
    if "min_af_roc_auc" in worst:  # a model read as an AF alarm: AF found and its ranking, under the worst shift
        columns.update({joined(WORST_SHIFT, recall, "change"): worst[joined(recall, "change")],
                        MIN_SHIFT_AF_ROC_AUC: worst["min_af_roc_auc"]})
    return columns


# --- rhythms a task never saw ---------------------------------------------------------------------

UNSEEN = "unseen"  # eval.json's section, and the prefix of its figures in MLflow and results.csv


def unseen_columns(unseen: dict) -> dict:
    """results.csv's (and MLflow's) columns of the AF false alarms on labels a task never trained on:
    ``unseen_af_specificity_O`` and its interval, per label."""
    columns = {}
    for label, value in unseen["af_specificity"].items():
        name = joined(UNSEEN, "af_specificity", label)
        columns.update(with_interval(name, value, *unseen["ci"]["af_specificity"][label]))
    return columns


# --- the served operating point and calibration -------------------------------------------------


def calibration_columns(section: dict, positive: str) -> dict:
    """results.csv's (and MLflow's) columns of eval.json's ``calibration`` section: the temperature, the
    decision's threshold on P(positive), and the calibration error of P(positive) with its interval and
    without the temperature."""
    ece = joined(RECORD, "ece", positive)
    columns = {"temperature": section["temperature"], **with_interval(ece, section["ece"], *section["ci"]),
               joined(ece, "uncalibrated"): section["ece_uncalibrated"]}
    if "decision" in section:
        columns[joined("threshold", positive)] = section["decision"]["threshold"]
    return columns


# --- studies -----------------------------------------------------------------------------------

STUDY_FIGURES = ("record_f1_A", "record_roc_auc", "record_balanced_accuracy", "record_macro_f1",
                 "worst_shift_f1_A")  # F1(A) under the device shift that lowers it most (evaluate.shifts)
STUDY_PAIRED = ("record_f1_A", "record_roc_auc", "worst_shift_f1_A")  # the figures compared pair by pair
# A study of the four-class task adds the challenge score (also compared pair by pair) and the other
# classes' F1; one of it or of AF against the rest adds AF's false alarms on N, O and ~: figures
# that every run of such a study has (MLflow spells CinC's noise label ``noise``).
# (the served operating point's figures: where a task fits one, each fold's own)
STUDY_SERVED_FIGURES = ("record_recall_A", "record_af_specificity_N", "record_af_specificity_O",
                        "record_af_specificity_noise")
STUDY_TASK_FIGURES = ("record_challenge_score", "record_f1_N", "record_f1_O", "record_f1_noise",
                      *STUDY_SERVED_FIGURES, "record_af_specificity_at_sensitivity_95_N",
                      "record_af_specificity_at_sensitivity_95_O", "record_af_specificity_at_sensitivity_95_noise")
STUDY_TASK_PAIRED = ("record_challenge_score",)
# A study of several seeds compares each seed with the mean of their probabilities on figures of the
# probabilities alone (no operating point was fitted for the mean: its labels, and the single seeds'
# in that comparison, are the most likely class)
SEED_FIGURES = ("record_challenge_score", "record_f1_A", "record_roc_auc", "record_af_roc_auc",
                "record_af_specificity_at_sensitivity_95_N", "record_af_specificity_at_sensitivity_95_O",
                "record_af_specificity_at_sensitivity_95_noise")
OPTIONAL_STUDY_FIGURE = "worst_shift_f1_A"  # missing from every run of a study without device shifts


def study_metric(figure_name: str) -> str:
    """The MLflow metric of a study's figure (``record_f1_A``): the validation split's."""
    return joined("val", figure_name)


# --- the training history ----------------------------------------------------------------------

# what each epoch is measured on (split, level), with its label in the curves' figure: the training
# batches, and the validation recordings at each level, scored as the evaluate stage scores them
TRAIN, VAL = "train", "val"
HISTORY_CURVES = {(TRAIN, ""): "train", (VAL, "chunk_balanced"): "val, balanced chunks",
                  (VAL, "chunk"): "val, chunks", (VAL, RECORD): "val, recordings"}


def history_name(split: str, level: str, figure_name: str) -> str:
    """A history column, the figure's MLflow name: ``history_name("val", "chunk_balanced", "accuracy")``
    is ``val_chunk_balanced_accuracy``; the training batches have no level (``train_loss``)."""
    return joined(split, level, figure_name)
