"""Every flat figure name (MLflow metrics, results.csv columns), built and read here only.

A figure is ``<split>_<level>_<figure>[_<class>]`` (``val_record_f1_A``), a device shift's
``<split>_shift_<shift>_<figure>[_<class>]`` and ``..._change_<figure>``; an interval adds
``_ci_low`` and ``_ci_high`` to the name of its figure. MLflow names allow no ``~`` (CinC's noise
class), so a metric spells it ``noise``."""
from __future__ import annotations

CI_LOW, CI_HIGH = "_ci_low", "_ci_high"


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


def study_metric(figure: str) -> str:
    """The MLflow metric of a study's figure (``record_f1_A``): the validation split's."""
    return joined("val", figure)
