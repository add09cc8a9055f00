"""The champion: a declared gate and tie-break (report.gate, prefer, order), never file order or
digits within noise; the registry moves @champion only from the workspace's dvc repro or
`ecgpipe promote`."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgpipe.cli import main as cli_main
from ecgpipe.core.errors import ParamsError, TrackingStoreError
from ecgpipe.params import GateCheck, Preference, load_params, parse_params
from ecgpipe.reporting.champion import choose_champion
from tests.conftest import ROOT

METRIC = "record_f1_A"


def table(rows: dict[str, dict]) -> pd.DataFrame:
    return pd.DataFrame([{"experiment": name, **figures} for name, figures in rows.items()])


def within_noise(a: str, b: str) -> tuple[float, float, float]:
    return (0.0, -0.02, 0.02)  # every pair: an interval that includes 0


def test_ties_go_to_the_declared_preference_then_order_never_to_file_order():
    rows = {"a": {METRIC: 0.95, "min_shift_roc_auc": 0.990}, "b": {METRIC: 0.95, "min_shift_roc_auc": 0.985},
            "c": {METRIC: 0.95, "min_shift_roc_auc": 0.950}}
    prefer = [Preference("min_shift_roc_auc", tolerance=0.01)]
    for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "a", "c"]):  # file order must not matter
        shuffled = table({name: rows[name] for name in order})
        decision = choose_champion(shuffled, METRIC, {}, prefer, ["b"], within_noise)
        assert decision.champion == "b"  # a and b within 0.01 of the best ROC AUC; then report.order
        assert set(decision.table.loc[decision.table["candidate"], "experiment"]) == {"a", "b", "c"}
        assert "report.order" in decision.how
        # without an order: the highest champion metric (a tie here), then the name
        assert choose_champion(shuffled, METRIC, {}, prefer, [], within_noise).champion == "a"


def test_a_plain_model_never_wins_over_a_robust_one_within_noise():
    rows = table({"plain": {METRIC: 0.962, "robust": 0, "min_shift_roc_auc": 0.99},
                  "robust": {METRIC: 0.958, "robust": 1, "min_shift_roc_auc": 0.99}})
    prefer = [Preference("robust"), Preference("min_shift_roc_auc", tolerance=0.01)]
    assert choose_champion(rows, METRIC, {}, prefer, [], within_noise).champion == "robust"
    # when the plain one is better beyond the noise, the robust one is not a candidate
    better = choose_champion(rows, METRIC, {}, prefer, [], lambda a, b: (-0.004, -0.008, -0.001))
    assert better.champion == "plain"


def test_the_gate_says_why_and_no_eligible_model_means_no_champion():
    rows = table({"a": {METRIC: 0.97, "min_shift_roc_auc": 0.93}, "b": {METRIC: 0.95, "min_shift_roc_auc": float("nan")},
                  "c": {METRIC: 0.90, "min_shift_roc_auc": 0.99}})
    gate = {"min_shift_roc_auc": GateCheck(at_least=0.98)}
    decision = choose_champion(rows, METRIC, gate, [], [], within_noise)
    assert decision.champion == "c"  # the lower F1, but the only one that passes the deployment check
    why = dict(zip(decision.table["experiment"], decision.table["why_not"]))
    assert why == {"a": "min_shift_roc_auc 0.9300 < 0.98", "b": "min_shift_roc_auc missing", "c": ""}
    none = choose_champion(rows, METRIC, {"min_shift_roc_auc": GateCheck(at_least=0.999)}, [], [], within_noise)
    assert none.champion is None and "no experiment passed the gate" in none.how
    assert not none.table["eligible"].any()
    with pytest.raises(ParamsError, match=r"report.gate.min_shift_auc: expected a column of results.csv"):
        choose_champion(rows, METRIC, {"min_shift_auc": GateCheck(at_least=0.9)}, [], [], within_noise)
    # any figure may be gated, e.g. specificity on other rhythms once a task has it
    rows["record_specificity_A"] = [0.80, 0.99, 0.97]
    gated = choose_champion(rows, METRIC, {"record_specificity_A": GateCheck(at_least=0.95)}, [], [], within_noise)
    assert gated.champion == "b"


def test_gate_params_are_checked(small_params):
    small_params["report"] = {"gate": {"min_shift_roc_auc": {"at_least": 0.9, "at_most": 1.0}}}
    with pytest.raises(ParamsError, match=r"report.gate.min_shift_roc_auc: expected a mapping with one of at_least or "
                                          r"at_most"):
        parse_params(small_params)
    small_params["report"] = {"prefer": [{"figure": "robust", "tolerance": -1}]}
    with pytest.raises(ParamsError, match=r"report.prefer\[0\].tolerance: expected a tolerance of at least 0"):
        parse_params(small_params)
    small_params["report"] = {"gate": {"x": {"at_lest": 1}}}
    with pytest.raises(ParamsError, match=r"report.gate.x.at_lest: expected one of the known keys"):
        parse_params(small_params)


def test_perturbed_figures_do_not_flip_the_projects_choice():
    """The committed real-archive metrics, each figure moved at random by up to twice what it moved
    between two CPUs (tests/data/cross_cpu_spread.csv: the results of the lock before d8e913a, on
    another EPYC, against those of d8e913a), and the champion metric's paired intervals by up to 0.03
    (the README's largest cross-CPU change of a champion's F1): the champion stays the same."""
    from ecgpipe.pipeline.evaluate import bootstrap_of
    from ecgpipe.pipeline.report import results_table
    from ecgpipe.reporting.tables import paired_validation_difference, record_figure

    params = load_params(ROOT / "params.yaml")
    base = results_table(params.experiments, params.spectrogram, ROOT / "metrics")
    spread = pd.read_csv(Path(__file__).parent / "data" / "cross_cpu_spread.csv").set_index("experiment")
    bootstrap = bootstrap_of(params.evaluate)
    cache = {}

    def paired(a, b):
        if (a, b) not in cache:
            d = paired_validation_difference(a, b, record_figure(METRIC), ROOT / "plots", bootstrap)
            cache[a, b] = (d.difference, d.low, d.high)
        return cache[a, b]

    report = params.report
    expected = choose_champion(base, METRIC, report.gate, report.prefer, report.order, paired).champion
    assert expected is not None
    rng = np.random.default_rng(0)
    for _ in range(300):
        moved = base.copy()
        for column in spread.columns:
            bound = 2 * spread.loc[moved["experiment"], column].to_numpy()
            moved[column] = moved[column] + rng.uniform(-bound, bound)
        shift = rng.uniform(-0.03, 0.03)

        def moved_paired(a, b, shift=shift):
            return tuple(np.add(paired(a, b), shift))
        decision = choose_champion(moved, METRIC, report.gate, report.prefer, report.order, moved_paired)
        assert decision.champion == expected, decision.table


# --- the registry ------------------------------------------------------------------------------

def test_the_alias_is_champion_only_outside_dvc_experiments_and_studies(monkeypatch):
    from ecgpipe.tracking.registry import registry_alias

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert registry_alias() == "champion"
    assert registry_alias("cv") == "candidate-cv"  # a study's queued run
    monkeypatch.setenv("DVC_EXP_NAME", "four_class")  # dvc exp run (workspace, --temp or --queue)
    assert registry_alias() == "candidate-four_class"
    monkeypatch.setenv("DVC_EXP_NAME", "odd name/1")
    assert registry_alias() == "candidate-odd-name-1"


def test_candidates_leave_champion_and_promote_moves_it_on_purpose(evaluated, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from ecgpipe.tracking.registry import current_version, register_choice

    out, name, uri = evaluated["out"], evaluated["name"], evaluated["uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    first = register_choice(name, out / "models", "ecgpipe-test", "champion", "the gate's choice")
    assert first["model_uri"] == "models:/ecgpipe-test@champion"
    candidate = register_choice(name, out / "models", "ecgpipe-test", "candidate-exp1", "an experiment's choice")
    assert candidate["version"] != first["version"]
    assert current_version(uri, "ecgpipe-test")["version"] == first["version"]  # @champion did not move
    # a rerun of the same choice registers nothing new
    assert register_choice(name, out / "models", "ecgpipe-test", "champion", "again")["version"] == first["version"]
    # the alias handed to another version and back (a task's serve stage, then the workspace's report):
    # the version that held it before takes it again, no new version each time
    other_run = client.create_run(client.get_run(first["run_id"]).info.experiment_id).info.run_id
    other = client.create_model_version("ecgpipe-test", f"runs:/{other_run}/predictor", run_id=other_run)
    client.set_registered_model_alias("ecgpipe-test", "champion", other.version)
    assert register_choice(name, out / "models", "ecgpipe-test", "champion", "back")["version"] == first["version"]
    assert len(client.search_model_versions("name='ecgpipe-test'")) == 3  # first, the candidate, the other run's

    cli_main(["promote", "ecgpipe-test", str(candidate["version"]), "--why", "better on device X", "--by", "alice"])
    promoted = json.loads(capsys.readouterr().out)
    assert promoted["previous_version"] == first["version"] and promoted["version"] == candidate["version"]
    assert current_version(uri, "ecgpipe-test")["version"] == candidate["version"]
    tags = client.get_model_version("ecgpipe-test", str(candidate["version"])).tags
    assert tags["ecgpipe.champion.by"] == "alice" and tags["ecgpipe.champion.why"] == "better on device X"
    assert tags["ecgpipe.champion.at"].endswith("+00:00")
    assert client.get_model_version("ecgpipe-test", str(first["version"])).tags["ecgpipe.champion.by"] == \
        "the report stage"

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["promote", "ecgpipe-test", "99", "--why", "x"])
    assert str(exit_info.value.code).startswith("error: ecgpipe-test version 99: not in the MLflow store")
    with pytest.raises(TrackingStoreError, match="no MLflow store at sqlite:///"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'nothing.db'}")
        from ecgpipe.tracking.registry import promote
        promote("ecgpipe-test", 1, "x", "y")
