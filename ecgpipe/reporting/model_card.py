"""The shipped detector's model card (MODEL_CARD.md), following the headings of "Model Cards for Model
Reporting" (Mitchell et al., 2019). Every figure in it is read from the pipeline's outputs for the
served experiment (its eval.json and the report's shift table), never typed by hand."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ecgpipe.core.results import AF, RECORD, interval
from ecgpipe.inference.preprocessing import Decision
from ecgpipe.inference.readers import MAX_DURATION_S, MAX_FS_HZ, MIN_FS_HZ
from ecgpipe.reporting.tables import to_markdown

CITATION = ('Clifford G.D., Liu C., Moody B., Lehman L.H., Silva I., Li Q., Johnson A.E., Mark R.G. "AF '
            'Classification from a Short Single Lead ECG Recording: the PhysioNet/Computing in Cardiology '
            'Challenge 2017". Computing in Cardiology 44, 2017.')


@dataclass(frozen=True)
class Shipped:
    """What is shipped: the served experiment and where its outputs are."""

    registered_model: str
    experiment: str
    run_id: str
    task: str | None  # None: the notebook's two-class task
    why: str


def _cell(value: float, bounds: list[float] | None) -> str:
    """A figure in the card's prose, with its interval where it has one (tables: ``to_markdown``)."""
    return f"{value:.3f}" if bounds is None else f"{value:.3f} [{bounds[0]:.3f}–{bounds[1]:.3f}]"


PER_CLASS = {"precision": "precision", "recall": "recall (sensitivity)", "specificity": "specificity", "f1": "F1"}


def class_figures_markdown(record: dict, class_names: list[str]) -> str:
    """Precision, recall (sensitivity), specificity and F1 of each class, with their intervals."""
    ci = record.get("ci", {})
    rows = []
    for c in class_names:
        row = {"class": c, "recordings": int(record["support"][c])}
        for key, heading in PER_CLASS.items():
            row[heading] = record[key][c]
            if c in ci.get(key, {}):
                row.update(zip(interval(heading), ci[key][c]))
        rows.append(row)
    return to_markdown(pd.DataFrame(rows))


def shifts_markdown(shifts: pd.DataFrame) -> str:
    """The device shifts (the report's shifts.csv rows): F1 of the positive class under each, its paired
    change against the clean recordings, and ROC AUC, each with its interval."""
    return to_markdown(shifts[["shift", *(c for f in ("f1", "f1_change", "roc_auc") for c in (f, *interval(f)))]])


def model_card(shipped: Shipped, model: dict, evaluation: dict, shifts: pd.DataFrame, size_bytes: int,
               confidence: float, ensemble: dict | None = None) -> str:
    """MODEL_CARD.md's text. ``model``: the predictor's (or the ensemble's network's) model.json;
    ``evaluation``: the experiment's eval.json; ``shifts``: its rows of the report's shifts.csv;
    ``ensemble``: a rhythm ensemble's ensemble.json (None: a network alone)."""
    classes = list(model["class_names"])
    featurizer = model["preprocessing"]["featurizer"]
    record = evaluation["val"][RECORD]
    level = f"{confidence:.0%}"
    task = "the notebook's two-class task (N against A)" if shipped.task is None else f"task `{shipped.task}`"
    ci = record.get("ci", {})
    lines = [
        f"# Model card: `{shipped.registered_model}` — {shipped.experiment}", "",
        "Written by the pipeline's `ship` stage from the served experiment's outputs (`dvc repro` rewrites it "
        "when the champion changes); do not edit by hand.", "",
        "## Model details", "",
        (f"- A `{model['model']}` network ({shipped.experiment}) of ecgpipe, trained on {task}; classes "
         if ensemble is None else
         f"- A rhythm ensemble ({shipped.experiment}) of ecgpipe, trained on {task}: a `{model['model']}` network "
         f"beside a gradient-boosted tree model on {len(ensemble['features'])} rhythm features of the recording "
         f"(RR irregularity, premature beats, beat shape, P waves, noise), their probabilities "
         + ("joined by a logistic regression fitted on recordings held out of training" if "combiner" in ensemble
            else f"averaged with weight {ensemble['network_weight']:g} on the network's") + "; classes ")
        + f"{', '.join(classes)}; AF is read as P({AF}).",
        f"- Served as `models:/{shipped.registered_model}@champion` (MLflow run `{shipped.run_id}`): {shipped.why}.",
        f"- This folder: the MLflow pyfunc model (`model/`, {size_bytes / 1e6:.1f} MB: weights, `model.json`, pinned "
        "`requirements.txt`, signature and input example). `ecgpipe predict RECORDING` uses it when no `--model` "
        "is given; `mlflow models serve -m pretrained/model` serves it.", "",
        "## Intended use", "",
        "- Research and teaching: screening short single-lead ECG recordings for atrial fibrillation, and a "
        "reference to compare AF classifiers reproducibly.",
        "- **Out of scope**: it is not a medical device and not a diagnosis. Do not use it to make or withhold "
        "clinical decisions; multi-lead diagnostic ECGs, paediatric recordings, pacemaker rhythms and any "
        "rhythm it was not trained on (below) are outside what it was tested on.", "",
        "## Input contract", "",
        f"- One lead, any sampling rate from {MIN_FS_HZ:g} Hz to {MAX_FS_HZ:,.0f} Hz (resampled to "
        f"{featurizer['sampling_rate_hz']:g} Hz), at most {MAX_DURATION_S / 3600:g} h long, in mV (CinC `.mat` files "
        "are 1000 units per mV; `--gain` for others); `.mat`, WFDB `.hea`, one-column `.csv` or `.npy`.",
        f"- Preprocessing is part of the model: `{featurizer['kind']}` "
        + (f"({featurizer['crop_samples']} samples, {featurizer['crop_samples'] / featurizer['sampling_rate_hz']:g} s"
           " per window; " if "crop_samples" in featurizer else "(")
        + f"recording probability: `{model['preprocessing']['aggregation']}` over its windows); "
        "a recording too short for one window is refused with an error naming it.", "",
        "## Training data", "",
        "- The PhysioNet/CinC Challenge 2017 training set (8,528 single-lead recordings from AliveCor devices, "
        "9–61 s, 300 Hz). Licence: Open Data Commons Attribution License v1.0 (ODC-By 1.0). Citation: "
        + CITATION,
        "- The split, balancing and crops are `params.yaml`'s (`split`, `balance`, `experiments`); the "
        "figures below are on the validation recordings, which the model never trained on and no setting "
        "was chosen on.", "",
        "## Factors", "",
        "- Rhythm: figures per class below, and AF's false alarms on rhythms outside its classes (known failure "
        "modes).",
        "- Device and setting: gain, offset, baseline wander, noise, mains interference, sampling rate and "
        "filtering, simulated on the validation recordings (device shifts).",
        "- Not measured: age, sex, ancestry, comorbidity (CinC 2017 does not give them).", "",
        "## Metrics and evaluation data", "",
        f"Per recording, on {record['n']:,} validation recordings, with {level} stratified-bootstrap intervals "
        "(`evaluate.bootstrap_resamples`), at the served label:", "",
        class_figures_markdown(record, classes),
        f"ROC AUC {_cell(record['roc_auc'], ci.get('roc_auc'))}; balanced accuracy "
        f"{_cell(record['balanced_accuracy'], ci.get('balanced_accuracy'))}.", ""]
    calibration = evaluation.get("calibration")
    if calibration:
        decision = calibration.get("decision")
        rule = ("the most likely class" if decision is None else
                f"{Decision.from_dict(decision).describe()} (the threshold that finds "
                f"{decision['sensitivity']:.0%} of the held-out {decision['positive']} recordings)")
        temperature = (f"Temperature {calibration['temperature']:.3f}" if ensemble is None else
                       "No temperature of its own (its network's, fitted the same way, is inside it)")
        lines += ["## Operating point and calibration", "",
                  f"- {temperature}; served label: {rule}. Both were fitted on training "
                  "recordings held out of training, never on the validation recordings.",
                  f"- Expected calibration error of P({AF}): {_cell(calibration['ece'], calibration.get('ci'))}"
                  + (f" (without the temperature: {calibration['ece_uncalibrated']:.3f})." if ensemble is None else "."),
                  ""]
    else:
        lines += ["## Operating point and calibration", "",
                  "- The served label is the most likely class; no temperature or threshold was fitted for this "
                  "model (its task holds no recordings out for that: `split.calibration` is 0).", ""]
    lines += ["## Device shifts (`evaluate.shifts`)", "",
              "The validation recordings again, changed as another device or setting would change them: `f1` is F1 of "
              f"{AF} under the shift, `f1_change` its paired change against the clean recordings, `roc_auc` the ROC AUC:", "",
              shifts_markdown(shifts)]
    unseen = evaluation.get("unseen")
    lines += ["## Known failure modes", ""]
    if unseen:
        called = [f"{1 - spec:.1%} of the {unseen['recordings'][label]:,} labelled `{label}` (specificity "
                  f"{_cell(spec, unseen.get('ci', {}).get('af_specificity', {}).get(label))})"
                  for label, spec in unseen["af_specificity"].items()]
        lines.append("- **Rhythms it was never shown** are called AF often: of CinC's recordings, "
                     + "; ".join(called) + ".")
    alarms = record.get("af_specificity")
    if alarms:  # a detector that has seen every rhythm: its false alarms on each of them, at the served label
        lines.append("- **False alarms at the served label**: of the validation recordings, "
                     + "; ".join(f"{1 - spec:.1%} of those labelled `{label}` are called AF (specificity "
                                 f"{_cell(spec, ci.get('af_specificity', {}).get(label))})"
                                 for label, spec in alarms.items())
                     + f"; {record['recall'][AF]:.1%} of the AF recordings are found. The threshold was fitted on "
                     "few held-out AF recordings: on another split it may fall elsewhere.")
    lines += ["- Recordings from other devices: the shifts above are simulated; real recordings of other devices "
              "were not part of its evaluation.",
              "- Short recordings: a recording shorter than one window is refused, not classified.", "",
              "## Ethical considerations and caveats", "",
              "- The training recordings come from one device family and a population the challenge does not "
              "describe (age, sex, ancestry unknown): performance on other populations is not known.",
              "- Labels are the challenge's (one annotation per recording, with known label noise).", "",
              "## How to reproduce", "",
              "`ECGPIPE_ARCHIVE=path/to/training2017.zip dvc repro` (or plain `dvc repro` to download the archive "
              "from PhysioNet) rebuilds this folder; `dvc status` says when it is stale.", ""]
    return "\n".join(lines)
