"""The champion, chosen by a declared gate and tie-break (``report`` in params.yaml), never by file
order or by digits within noise.

1. **Gate**: an experiment is eligible only if every figure of ``report.gate`` passes its bound.
2. **Candidates**: the eligible experiment with the highest ``champion_metric``, and every eligible
   one not distinguishable from it (its paired bootstrap interval reaches 0).
3. **Tie-break**: ``report.prefer`` in turn (the highest figure wins; all within its tolerance stay
   in), then ``report.order``, then the highest ``champion_metric``, then the name.
No eligible experiment: no champion (nothing is registered, and the report says why).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ecgpipe.core.errors import fail_param

# ``gate`` maps a results.csv column to a check with ``at_least``/``at_most`` (params.GateCheck); each of
# ``prefer`` has a ``figure`` and a ``tolerance`` (params.Preference). Duck-typed: params sits above this layer.

# (low, high) of the paired difference ``a - b`` of the champion metric: the bootstrap's interval
PairedInterval = Callable[[str, str], tuple[float, float, float]]


@dataclass(frozen=True)
class Decision:
    """The champion (None when no experiment passed the gate), the one line that says how it was
    chosen, and one row per experiment: eligible, why not, candidate, chosen."""

    champion: str | None
    how: str
    table: pd.DataFrame


def _check_columns(table: pd.DataFrame, metric: str, gate: dict, prefer: list) -> None:
    for figure, key in [(f, f"report.gate.{f}") for f in gate] + [
            (p.figure, f"report.prefer[{i}].figure") for i, p in enumerate(prefer)]:
        if figure not in table:
            fail_param(key, f"a column of results.csv such as {metric} or min_shift_roc_auc", figure)


def gate_failures(row: pd.Series, gate: dict) -> list[str]:
    """Why ``row`` fails the gate: one phrase per failed check (a missing figure fails)."""
    failures = []
    for figure, check in gate.items():
        value = float(row[figure]) if row[figure] is not None else math.nan
        if math.isnan(value):
            failures.append(f"{figure} missing")
        elif check.at_least is not None and value < check.at_least:
            failures.append(f"{figure} {value:.4f} < {check.at_least:g}")
        elif check.at_most is not None and value > check.at_most:
            failures.append(f"{figure} {value:.4f} > {check.at_most:g}")
    return failures


def _tie_break(candidates: list[str], by_name: pd.DataFrame, metric: str, prefer: list,
               order: list[str]) -> tuple[str, str]:
    remaining = list(candidates)
    steps = []
    for preference in prefer:
        if len(remaining) == 1:
            break
        values = by_name.loc[remaining, preference.figure].astype(float).fillna(-math.inf)  # missing: last
        best = values.max()
        if best == -math.inf:
            continue
        kept = [n for n in remaining if values[n] >= best - preference.tolerance]
        if len(kept) < len(remaining):
            steps.append(f"{preference.figure} (within {preference.tolerance:g} of the highest)")
        remaining = kept
    if len(remaining) > 1:
        ranked = sorted(remaining, key=lambda n: (order.index(n) if n in order else len(order),
                                                  -float(by_name.loc[n, metric]), n))
        steps.append("report.order" if ranked[0] in order else f"the highest {metric}")
        remaining = ranked[:1]
    return remaining[0], ", then ".join(steps)


def choose_champion(table: pd.DataFrame, metric: str, gate: dict, prefer: list,
                    order: list[str], paired: PairedInterval | None) -> Decision:
    """The champion of ``table`` (results.csv's rows). ``paired(a, b)`` gives (difference, low, high)
    of ``metric`` between two experiments on the same recordings; None (a chunk-level metric) makes
    the best alone the candidate."""
    _check_columns(table, metric, gate, prefer)
    by_name = table.set_index("experiment")
    rows = []
    for name, row in by_name.iterrows():
        failures = gate_failures(row, gate)
        rows.append({"experiment": name, metric: float(row[metric]), "eligible": not failures,
                     "why_not": "; ".join(failures), "candidate": False, "chosen": False})
    decision = pd.DataFrame(rows)
    eligible = decision.loc[decision["eligible"], "experiment"].tolist()
    if not eligible:
        return Decision(None, "no experiment passed the gate: nothing is registered", decision)
    best = max(eligible, key=lambda n: (float(by_name.loc[n, metric]), -eligible.index(n)))
    if paired is not None:
        candidates = [best] + [n for n in eligible if n != best and paired(n, best)[2] >= 0]
    else:  # no interval: only exact ties with the best are candidates
        candidates = [n for n in eligible if float(by_name.loc[n, metric]) == float(by_name.loc[best, metric])]
    champion, steps = _tie_break(candidates, by_name, metric, prefer, order)
    decision["candidate"] = decision["experiment"].isin(candidates)
    decision["chosen"] = decision["experiment"] == champion
    if len(candidates) == 1:
        how = f"the only eligible experiment not worse than the best on {metric}" if paired is not None else \
            f"the highest {metric} among the eligible experiments"
    else:
        how = (f"{len(candidates)} eligible experiments are not distinguishable on {metric}; "
               f"chosen by {steps}")
    return Decision(champion, how, decision)
