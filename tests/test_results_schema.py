"""The results schema (ecgpipe/core/results.py): every figure's name is made there, and only there."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ecgpipe.core import results

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "ecgpipe" / "core" / "results.py"

# A string that spells a figure's name, or the start of one: a level and a figure (``record_f1_A``,
# ``balanced_chunk_acc``, ``val_chunk_balanced_accuracy``), a device shift's columns (``worst_shift``,
# ``min_shift_roc_auc``), a history column (``val_balanced_acc``), or a bare prefix that an f-string
# completes into one (``f"record_{key}"``, ``f"val_{k}"``).
LEVEL = r"(record|chunk|chunk_balanced|balanced_chunk|notebook_balanced_chunk)"
FIGURE = (r"(acc|accuracy|balanced_acc|balanced_accuracy|f1|roc_auc|average_precision|macro_f1|challenge_score|af_"
          r"|precision|recall|specificity)")
FIGURE_NAME = re.compile(rf"^(val_|train_|test_)?({LEVEL}_{FIGURE}|worst_shift|min_shift|shift_$|{LEVEL}_$)"
                         r"|^(val|train)_(loss|acc|accuracy|balanced|balanced_acc|balanced_loss)$|^(val|train|test)_$")


def figure_name_literals(path: Path) -> list[str]:
    """``line: 'literal'`` for every string constant of ``path`` (f-strings' constant parts included,
    docstrings not) that spells a figure name."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [f"{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and FIGURE_NAME.search(node.value)]


def test_no_module_but_the_schema_spells_a_figure_name():
    found = {str(path.relative_to(ROOT)): hits for folder in ("ecgpipe", "benchmarks")
             for path in sorted((ROOT / folder).rglob("*.py")) if path != SCHEMA
             if (hits := figure_name_literals(path))}
    assert found == {}, "figure names belong in ecgpipe/core/results.py"


def test_the_check_finds_a_figure_name_spelled_elsewhere(tmp_path):
    """The check above on code that spells names as the package did before the schema."""
    source = tmp_path / "report.py"
    source.write_text('"""Docstrings may say record_f1_A."""\n'
                      'row = {"balanced_chunk_acc": 1, f"record_{key}_{c}": 2, "record": 3, "chunk_size": 4}\n'
                      'name = f"val_{k}"\nworst = "min_shift_roc_auc"\nhistory = "val_balanced_acc"\n')
    assert sorted(figure_name_literals(source)) == ["2: 'balanced_chunk_acc'", "2: 'record_'", "3: 'val_'",
                                            "4: 'min_shift_roc_auc'", "5: 'val_balanced_acc'"]


def test_results_columns_of_an_af_alarm_in_the_reports_order():
    levels = {"chunk_balanced": {"accuracy": 0.9}, "chunk": {"accuracy": 0.8},
              "record": {"accuracy": 0.7, "balanced_accuracy": 0.6, "f1": {"N": 0.5, "A": 0.4, "~": 0.3},
                         "recall": {"N": 0.21, "A": 0.22, "~": 0.23}, "macro_f1": 0.2, "roc_auc": 0.1,
                         "average_precision": 0.05, "af_specificity": {"N": 0.91, "~": 0.92},
                         "af_specificity_at_sensitivity_95": {"N": 0.81, "~": 0.82}, "af_roc_auc": 0.99,
                         "ci": {"accuracy": [0.6, 0.8], "recall": {"A": [0.1, 0.3]}}}}
    columns = results.figure_columns(levels)
    assert list(columns.items()) == [
        ("chunk_balanced_accuracy", 0.9), ("chunk_accuracy", 0.8), ("record_accuracy", 0.7),
        ("record_balanced_accuracy", 0.6), ("record_f1_N", 0.5), ("record_f1_A", 0.4), ("record_f1_~", 0.3),
        ("record_macro_f1", 0.2), ("record_roc_auc", 0.1), ("record_average_precision", 0.05), ("record_recall_A", 0.22),
        ("record_af_specificity_N", 0.91), ("record_af_specificity_~", 0.92),
        ("record_af_specificity_at_sensitivity_95_N", 0.81), ("record_af_specificity_at_sensitivity_95_~", 0.82),
        ("record_af_roc_auc", 0.99)]
    # each record column names its figure in eval.json, and back
    for column in columns:
        if results.is_record_column(column):
            assert results.record_column(results.record_figure(column)) == column
    assert results.interval_columns(levels["record"], ["chunk_accuracy", "record_accuracy", "record_recall_A"]) == {
        "record_accuracy_ci_low": 0.6, "record_accuracy_ci_high": 0.8,
        "record_recall_A_ci_low": 0.1, "record_recall_A_ci_high": 0.3}
    with pytest.raises(KeyError, match=r"no figure 'f1_O'; expected one of \['accuracy', 'balanced_accuracy', 'f1_N'"):
        results.figure(levels["record"], "f1_O")


def test_worst_shift_columns_name_the_positive_class():
    worst = {"shift": "gain_2x", "f1_A": 0.8, "f1_A_change": -0.05, "min_roc_auc": 0.97, "min_roc_auc_shift": "x"}
    assert results.worst_shift_columns(worst, "A") == {
        "worst_shift": "gain_2x", "worst_shift_f1_A": 0.8, "worst_shift_f1_A_change": -0.05, "min_shift_roc_auc": 0.97}
    # a model read as an AF alarm: the gate of docs/decisions/af-detector-gate.md reads these two too
    worst.update({"recall_A_change": -0.04, "recall_A_change_shift": "y", "min_af_roc_auc": 0.96})
    assert results.worst_shift_columns(worst, "A") == {
        "worst_shift": "gain_2x", "worst_shift_f1_A": 0.8, "worst_shift_f1_A_change": -0.05, "min_shift_roc_auc": 0.97,
        "worst_shift_recall_A_change": -0.04, "min_shift_af_roc_auc": 0.96}


def test_one_name_per_figure_in_every_form():
    """A figure's name in results.csv and study.csv is its MLflow name without the split, and the
    history after each epoch uses the MLflow name: the notebook's figure is the same name everywhere."""
    notebook = results.history_name(results.VAL, "chunk_balanced", "accuracy")
    assert notebook == "val_chunk_balanced_accuracy" == results.study_metric(results.CHUNK_COLUMNS["chunk_balanced"])
    assert results.NOTEBOOK_COLUMN.endswith(results.CHUNK_COLUMNS["chunk_balanced"])
    for column in (*results.COMPARED, *results.STUDY_PAIRED[:2]):
        level = next(lv for lv in sorted(results.LEVELS, key=len, reverse=True) if column.startswith(lv + "_"))
        assert results.study_metric(column) == results.history_name(results.VAL, level, column.removeprefix(level + "_"))
    assert [results.record_column(f) for f in ("accuracy", "balanced_accuracy", "recall_A")] == [
        "record_accuracy", "record_balanced_accuracy", "record_recall_A"]
