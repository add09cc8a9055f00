"""Cross-validation studies: the queued commands, the aggregation across folds, and a synthetic
study run end to end by two parallel DVC queue workers."""
import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ecgpipe.core.errors import StudyError
from ecgpipe.pipeline.study import queue_commands
from ecgpipe.reporting.study import StudyRuns, summarise, t_interval
from tests.conftest import empty_store


def test_queue_commands_one_per_fold_and_seed():
    commands = queue_commands("cv", 3, [1, 2], ["a-chunked", "b-random_chunk"])
    assert len(commands) == 6
    assert commands[0] == ["dvc", "exp", "run", "--queue", "--name", "cv-fold0-seed1", "-S", "split.folds=3",
                           "-S", "split.fold=0", "-S", "train.seed=1", "-S", "study.name=cv",
                           "evaluate@a-chunked", "evaluate@b-random_chunk"]
    assert {tuple(c[9:12:2]) for c in commands} == {(f"split.fold={k}", f"train.seed={s}")
                                                     for k in range(3) for s in (1, 2)}
    # a task's study runs the task's stages, which dvc.yaml names by task and experiment
    task_commands = queue_commands("cv", 3, [1], ["a-chunked"], task="four_class")
    assert task_commands[0][-1] == "task_evaluate@four_class-a-chunked"
    assert task_commands[0][:-1] == commands[0][:-2]
    # a network's rhythm ensemble (NETWORK+rhythm) is evaluated by its own stage, after the network's
    ensemble = queue_commands("cv", 3, [1], ["a-chunked", "a-chunked+rhythm"], task="four_class")[0]
    assert ensemble[-2:] == ["task_evaluate@four_class-a-chunked", "task_ensemble_evaluate@four_class-a-chunked"]


def test_t_interval_matches_scipy():
    values = np.array([0.91, 0.88, 0.93, 0.90, 0.86])
    mean, sd, low, high = t_interval(values)
    expected = scipy.stats.t.interval(0.95, 4, loc=values.mean(), scale=values.std(ddof=1) / np.sqrt(5))
    assert (mean, sd) == pytest.approx((values.mean(), values.std(ddof=1)))
    assert (low, high) == pytest.approx(expected)


def test_summary_and_paired_differences_across_folds():
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(5):
        difficulty = rng.normal(0, 0.03)  # folds differ; paired differences remove that
        for name, level in (("strong", 0.90), ("weak", 0.85), ("twin", 0.90)):
            noise = rng.normal(0, 0.003)
            rows.append({"experiment": name, "fold": fold, "seed": 1, "run_id": f"{name}{fold}",
                         "record_f1_A": level + difficulty + noise, "record_roc_auc": 0.98 + noise,
                         "record_balanced_accuracy": level, "record_macro_f1": level,
                         "worst_shift_f1_A": level - 0.1})
    summary, pairs = summarise(StudyRuns("s", pd.DataFrame(rows)))
    assert summary["folds"].tolist() == [5, 5, 5]
    strong = summary.set_index("experiment").loc["strong"]
    assert strong["record_f1_A_ci_low"] < strong["record_f1_A_mean"] < strong["record_f1_A_ci_high"]
    real = {(r["a"], r["b"]): r["record_f1_A_real"] for _, r in pairs.iterrows()}

    def verdict(a, b):
        return real[(a, b)] if (a, b) in real else real[(b, a)]

    assert verdict("strong", "weak") and verdict("twin", "weak")  # a planted 0.05 gap, through fold noise
    assert not verdict("strong", "twin")  # the same level: within noise


@pytest.fixture
def study_project(committed_project, small_params):
    small_params["split"]["folds"] = 2
    return committed_project(small_params)


def test_a_study_run_by_two_queue_workers_loses_nothing(study_project):
    import mlflow
    from mlflow.tracking import MlflowClient

    project, run = study_project
    # one experiment: what is under test is the queue (two workers, two folds); studies of several
    # experiments and their paired comparisons are tested on hand-built stores below
    experiments = ["mean_spectrum-chunked"]
    run("ecgpipe", "study", "run", "--name", "cv", "--folds", "2", "--jobs", "2",
        "--wait", "--experiments", *experiments)
    status = run(sys.executable, "-m", "dvc", "queue", "status")
    assert "Failed" not in status, status
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("ecgpipe")
    assert experiment.artifact_location == (project / "mlartifacts").as_uri()  # beside the store, not a temp copy
    found = client.search_runs([experiment.experiment_id], filter_string="tags.study = 'cv'")
    runs = [r for r in found if "study_parent" not in r.data.tags]  # the study's own run, made when it was queued
    assert len(found) == len(runs) + 1
    assert sorted((r.info.run_name, r.data.tags["fold"]) for r in runs) == sorted(
        (e, str(k)) for e in experiments for k in range(2))
    assert not list((project / ".dvc" / "tmp").glob("exps/tmp*"))  # the temporary copies are gone ...
    for r in runs:  # ... and every run is finished, evaluated, and its artifacts readable
        assert r.info.status == "FINISHED" and "val_record_f1_A" in r.data.metrics
        per_shift = [v for k, v in r.data.metrics.items() if re.fullmatch(r"val_shift_[^_]+(_[^_]+)*_f1_A", k)
                     and "_change_" not in k]
        assert len(per_shift) == 2 and r.data.metrics["val_worst_shift_f1_A"] == min(per_shift)  # conftest's two shifts
        assert r.data.tags["seed"] == "12345" and r.data.tags["dvc_experiment"].startswith("cv-fold")
        spec = json.loads(open(mlflow.artifacts.download_artifacts(
            run_id=r.info.run_id, artifact_path="model.json", tracking_uri=store)).read())
        assert spec["experiment"] == r.info.run_name
    # a study registers nothing, and never moves @champion
    assert all("champion" not in m.aliases for m in client.search_registered_models())
    run("ecgpipe", "study", "report", "--name", "cv", "--out", "reports")
    markdown = (project / "reports" / "study.md").read_text()
    assert "# Study `cv`" in markdown and all(f"| {e} | 2 |" in markdown for e in experiments)
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.study_parent = 'true'")
    assert len(parent) == 1 and f"{experiments[0]}/record_f1_A_mean" in parent[0].data.metrics
    assert {r.info.run_id for r in runs} == {
        r.info.run_id for r in client.search_runs([experiment.experiment_id],
                                                   filter_string=f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")}


@pytest.mark.parametrize("argv, expected", [
    (["study", "run", "--name", "cv", "--folds", "0"], "argument --folds: expected at least 2, got 0"),
    (["study", "run", "--name", "cv", "--folds", "1", "--wait"], "argument --folds: expected at least 2, got 1"),
    (["study", "run", "--name", "cv", "--jobs", "0", "--wait"], "argument --jobs: expected at least 1, got 0"),
    (["study", "run", "--name", "cv", "--seeds", "-1"], "argument --seeds: expected at least 0, got -1"),
    (["study", "report", "--name", "x'y"], "argument --name: expected a name of letters, digits, '_', '.' and '-'"),
    (["study", "report", "--name", "cv", "--af-threshold", "1"],
     "argument --af-threshold: expected a number between 0 and 1 (exclusive), got 1"),
    (["study", "report", "--name", "cv", "--af-threshold", "a tenth"],
     "argument --af-threshold: expected a number between 0 and 1, got 'a tenth'"),
])
def test_study_arguments_are_checked_at_once(argv, expected, capsys, monkeypatch):
    from ecgpipe.cli import main

    monkeypatch.setattr("ecgpipe.pipeline.study.run_study", lambda *a, **k: pytest.fail("the study ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_wait_exits_non_zero_naming_the_failed_runs(monkeypatch):
    """`--wait` once returned 0 when a fold failed (visible only in `dvc queue logs`)."""
    from ecgpipe.pipeline import study

    earlier = [("aaa1111", "cv-fold1-seed1", "Failed")]  # an earlier attempt's failure is not this one's
    after = [("bbb2222", "cv-fold0-seed1", "Success"), ("ccc3333", "cv-fold1-seed1", "Failed"), *earlier,
             ("ddd4444", "other-fold0-seed1", "Failed")]
    answers = iter([earlier, after])
    monkeypatch.setattr(study, "check_store", lambda uri: None)
    monkeypatch.setattr(study, "prepare_store", lambda uri, name: None)
    monkeypatch.setattr(study, "record_settings", lambda uri, experiment, name, overrides: None)
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 0})())
    monkeypatch.setattr(study, "_queue_rows", lambda: next(answers))
    monkeypatch.setattr(study, "_queue_busy", lambda: False)
    with pytest.raises(study.StudyError, match=r"^1 of 2 runs of study cv failed: cv-fold1-seed1; "
                                               r"`dvc queue logs cv-fold1-seed1` says why$"):
        study.run_study("cv", 2, [1], ["a-chunked"], 1, "ecgpipe", wait=True)
    answers = iter([earlier, after[:1]])
    study.run_study("cv", 2, [1], ["a-chunked"], 1, "ecgpipe", wait=True)  # nothing new failed: returns


@pytest.mark.parametrize("hours", [0.01, 2.5])
def test_wait_looks_at_the_queue_less_often_the_longer_it_waits(monkeypatch, hours):
    """Each look is a `dvc queue status` process (about a second of CPU): every 5 s it took a tenth of a
    2-core machine from a study of hours. The end is still seen soon: within a twentieth of the time waited."""
    from ecgpipe.pipeline import study

    clock, looks, ends = [0.0], [], hours * 3600
    monkeypatch.setattr(study.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(study.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(study, "check_store", lambda uri: None)
    monkeypatch.setattr(study, "prepare_store", lambda uri, name: None)
    monkeypatch.setattr(study, "record_settings", lambda uri, experiment, name, overrides: None)
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 0})())
    monkeypatch.setattr(study, "_queue_rows", lambda: [])
    monkeypatch.setattr(study, "_queue_busy", lambda: looks.append(clock[0]) or clock[0] < ends)
    study.run_study("cv", 2, [1], ["a-chunked"], 1, "ecgpipe", wait=True)
    assert ends <= looks[-1] <= ends + max(2.0, ends / 20)
    assert len(looks) <= (ends / 2 + 1 if hours < 1 else 250)  # a look every 5 s: 1,800 in 2.5 hours


def _hand_built_store(tmp_path, values, drop=None, tags=lambda name, fold: {}, study="hand", params=None):
    """A store with one finished run per (experiment, fold), tagged as study ``study``'s (and with
    ``tags``), with known figures (and MLflow ``params``); a second call adds a study to the store."""
    import mlflow

    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}" if store.exists() else empty_store(store)  # a second call adds to the store
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("ecgpipe")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("ecgpipe")
    for (name, fold), figures in values.items():
        run = client.create_run(experiment_id, run_name=name,
                                tags={"study": study, "fold": str(fold), "seed": "7", **tags(name, fold)})
        for key, value in (params or {}).items():
            client.log_param(run.info.run_id, key, value)
        for figure, value in figures.items():
            if (name, fold, figure) != drop:
                client.log_metric(run.info.run_id, f"val_{figure}", value)
        client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def test_study_report_numbers_are_the_hand_computed_ones(tmp_path):
    """The aggregation read back from a store built by hand: means, sds, t-intervals and paired
    differences equal the ones computed here from the same values (a renamed metric once gave an
    all-NaN report that passed)."""
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.reporting.study import report_study

    rng = np.random.default_rng(4)
    values = {(name, fold): {f: float(rng.uniform(0.7, 0.99)) for f in FIGURES}
              for name in ("lstm", "resnet") for fold in range(3)}
    uri = _hand_built_store(tmp_path, values)
    summary, pairs = report_study("hand", uri, "ecgpipe", tmp_path / "reports")
    t = scipy.stats.t.ppf(0.975, 2)
    for name in ("lstm", "resnet"):
        row = summary.set_index("experiment").loc[name]
        for f in FIGURES:
            x = np.array([values[(name, k)][f] for k in range(3)])
            half = t * x.std(ddof=1) / np.sqrt(3)
            assert row[f"{f}_mean"] == pytest.approx(x.mean(), abs=1e-12)
            assert row[f"{f}_sd"] == pytest.approx(x.std(ddof=1), abs=1e-12)
            assert (row[f"{f}_ci_low"], row[f"{f}_ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    (pair,) = pairs.to_dict("records")
    d = np.array([values[(pair["a"], k)]["record_f1_A"] - values[(pair["b"], k)]["record_f1_A"] for k in range(3)])
    assert pair["record_f1_A_difference"] == pytest.approx(d.mean(), abs=1e-12)
    assert (pair["record_f1_A_ci_low"], pair["record_f1_A_ci_high"]) == pytest.approx(
        (d.mean() - t * d.std(ddof=1) / np.sqrt(3), d.mean() + t * d.std(ddof=1) / np.sqrt(3)))
    written = pd.read_csv(tmp_path / "reports" / "study.csv")
    assert not written.isna().any().any() and len(written) == 2
    best = summary.iloc[0]
    assert f"| {best['experiment']} | 3 | {best['record_f1_A_mean']:.3f} ± {best['record_f1_A_sd']:.3f}" in (
        tmp_path / "reports" / "study.md").read_text()


def test_the_report_says_which_commits_and_machines_made_the_runs(tmp_path):
    """A committed study names its code, machine and commands; one whose folds came from two commits
    says so (results differ between CPU models and between versions of the code)."""
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.reporting.study import report_study

    values = {(name, fold): {f: 0.8 + 0.01 * fold for f in FIGURES} for name in ("lstm", "resnet") for fold in range(3)}

    def tags(name, fold):
        return {"mlflow.source.git.commit": ("a" if fold < 2 else "b") * 40, "cpu": "Test CPU 9000", "device": "cpu",
                "torch_version": "2.13.0+cpu"}

    report_study("hand", _hand_built_store(tmp_path, values, tags=tags), "ecgpipe", tmp_path / "out")
    markdown = (tmp_path / "out" / "study.md").read_text()
    provenance = markdown[markdown.index("## Provenance"):]
    assert "- Runs: 6 (MLflow tag `study=hand`): 2 experiments, folds 0, 1, 2, seeds 7." in provenance
    assert ("- Code: commit 2 different ones, so the folds were not all made alike: aaaaaaaaaaaa (4 runs); "
            "bbbbbbbbbbbb (2 runs)") in provenance
    assert "- Machine: Test CPU 9000 (every run); device cpu (every run); torch 2.13.0+cpu (every run)." in provenance
    assert (f"`ecgpipe study run --name hand --folds ? --seeds 7 --experiments lstm resnet`; this report by "
            f"`ecgpipe study report --name hand --out {tmp_path / 'out'}`") in provenance

    # runs that recorded no machine (a rhythm ensemble's run tags none) are counted, not read as another machine
    def some_untagged(name, fold):
        return tags(name, fold) | ({"cpu": "", "device": "", "torch_version": ""} if name == "lstm" else {})

    report_study("hand", _hand_built_store(tmp_path / "other", values, tags=some_untagged), "ecgpipe", tmp_path / "out2")
    markdown = (tmp_path / "out2" / "study.md").read_text()
    assert ("- Machine: Test CPU 9000 (3 runs); not recorded by the run (3 runs); device cpu (3 runs); "
            "not recorded (3 runs); torch") in markdown


def test_a_run_without_a_figure_is_named_not_averaged_as_nan(tmp_path):
    from ecgpipe.core.errors import StudyError
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.reporting.study import collect_runs

    values = {(name, fold): {f: 0.9 for f in FIGURES} for name in ("lstm", "resnet") for fold in range(2)}
    uri = _hand_built_store(tmp_path, values, drop=("resnet", 1, "record_f1_A"))
    with pytest.raises(StudyError, match=r"resnet \(fold 1, seed 7\): no metric val_record_f1_A in its MLflow run "
                                         r"[0-9a-f]+; expected every study figure \(evaluated by another version of "
                                         r"ecgpipe\?\)"):
        collect_runs("hand", uri, "ecgpipe")


def test_ray_cells_run_the_queue_workers_commands_in_place():
    from ecgpipe.pipeline.ray_study import cells

    made = cells("cv", 3, [1, 2], ["a-chunked"], git_url="g", branch="b", commit="c", dvc_url="d",
                 tracking_uri="http://x", threads=1)
    assert [(c.fold, c.seed) for c in made] == [(k, s) for s in (1, 2) for k in range(3)]
    queued = queue_commands("cv", 3, [1, 2], ["a-chunked"])
    assert [c.exp_run for c in made] == [[w for w in q if w != "--queue"] for q in queued]
    assert made[4].exp_name == "cv-fold1-seed2"


def test_remote_set_configures_both_remotes_with_absolute_paths(tmp_path, monkeypatch):
    import subprocess

    from ecgpipe.cli import main
    from ecgpipe.pipeline.remotes import dvc_remote_url, git_remote_url

    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    monkeypatch.chdir(project)
    main(["remote", "set", "--git", "../remote.git", "--dvc", "../cache"])
    assert git_remote_url(project) == str(tmp_path / "remote.git")
    assert (tmp_path / "remote.git" / "HEAD").is_file()  # a bare repository made for it
    assert dvc_remote_url(project) == str(tmp_path / "cache")
    main(["remote", "set", "--git", "../other.git", "--dvc", "s3://bucket/cache"])  # set again: replaced
    assert git_remote_url(project).endswith("other.git") and dvc_remote_url(project) == "s3://bucket/cache"


def test_a_ray_study_refuses_a_store_that_other_machines_cannot_reach(tmp_path, monkeypatch):
    from tests.conftest import cli_exit_message

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    message = cli_exit_message(["study", "run", "--backend", "ray", "--name", "cv", "--folds", "2",
                                "--experiments", "mean_spectrum-chunked"])
    assert "a study on Ray logs from every node to one tracking server" in message
    assert "\n" not in message.strip()


def test_a_four_class_study_reports_and_ranks_by_the_challenge_score(tmp_path):
    """Runs with the four-class figures (challenge score, F1 of N, O, ~, AF's false alarms on O) get
    them in the report, ranked and compared pair by pair on the challenge score; a run of the same
    study without them is named."""
    from ecgpipe.core.errors import StudyError
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.core.results import STUDY_TASK_FIGURES as TASK_FIGURES
    from ecgpipe.reporting.study import collect_runs, report_study

    rng = np.random.default_rng(5)
    values = {(name, fold): {f: float(rng.uniform(0.6, 0.95)) for f in FIGURES + TASK_FIGURES}
              for name in ("lstm", "resnet") for fold in range(3)}
    for fold in range(3):  # resnet: the better challenge score, the worse F1(A)
        values[("resnet", fold)]["record_challenge_score"] = values[("lstm", fold)]["record_challenge_score"] + 0.05
        values[("resnet", fold)]["record_f1_A"] = values[("lstm", fold)]["record_f1_A"] - 0.05
    uri = _hand_built_store(tmp_path, values)
    summary, pairs = report_study("hand", uri, "ecgpipe", tmp_path / "reports")
    assert list(summary["experiment"]) == ["resnet", "lstm"]
    scores = np.array([values[("resnet", k)]["record_challenge_score"] for k in range(3)])
    assert summary.loc[0, "record_challenge_score_mean"] == pytest.approx(scores.mean(), abs=1e-12)
    (pair,) = pairs.to_dict("records")
    assert pair["record_challenge_score_difference"] == pytest.approx(0.05, abs=1e-9) and pair["record_challenge_score_real"]
    text = (tmp_path / "reports" / "study.md").read_text()
    # every figure pair by pair, the ranking one first
    assert "| resnet | lstm | 3 | record_challenge_score | +0.050 [+0.050, +0.050] | real |" in text
    assert "| resnet | lstm | 3 | record_af_specificity_at_sensitivity_95_O |" in text
    assert "record_af_specificity_at_sensitivity_95_O" in text and "record_f1_noise" in text

    (tmp_path / "other").mkdir()
    uri = _hand_built_store(tmp_path / "other", values, drop=("lstm", 2, "record_f1_O"))
    with pytest.raises(StudyError, match=r"lstm \(fold 2, seed 7\): no metric val_record_f1_O"):
        collect_runs("hand", uri, "ecgpipe")


def test_a_study_judges_each_fold_by_the_tasks_gate(tmp_path):
    """With the task's gate, every fold's run is judged as the report stage judges an experiment: its
    served threshold, each gated figure under results.csv's name (the worst shift's through the
    schema), ✗ on a failed check, and how many folds pass."""
    import mlflow

    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.params import GateCheck
    from ecgpipe.reporting.study import report_study

    gate = {"record_recall_A": GateCheck(at_least=0.93), "record_af_specificity_~": GateCheck(at_least=0.8),
            "worst_shift_recall_A_change": GateCheck(at_least=-0.05), "min_shift_af_roc_auc": GateCheck(at_least=0.95)}
    values = {}
    for fold in range(3):
        shifted = {"worst_shift_f1_A": 0.8, "worst_shift_f1_A_change": -0.01, "worst_shift_min_roc_auc": 0.97,
                   "worst_shift_recall_A_change": -0.02, "worst_shift_min_af_roc_auc": 0.97}
        figures = {f: 0.9 for f in FIGURES} | shifted | {"record_recall_A": 0.95, "record_af_specificity_noise": 0.85}
        values[("net+rhythm", fold)] = figures
        values[("net", fold)] = dict(figures)
    values[("net", 1)]["record_recall_A"] = 0.91  # fails on AF found
    values[("net", 2)]["worst_shift_min_af_roc_auc"] = 0.94  # fails under a shift
    values[("net", 2)]["record_af_specificity_noise"] = 0.70  # and on ~
    uri = _hand_built_store(tmp_path, values)
    client = mlflow.MlflowClient(uri)
    for run in client.search_runs([client.get_experiment_by_name("ecgpipe").experiment_id]):
        client.log_metric(run.info.run_id, "threshold_A", 0.1 + int(run.data.tags["fold"]) / 100)
    report_study("hand", uri, "ecgpipe", tmp_path / "reports", gate=gate)

    judged = pd.read_csv(tmp_path / "reports" / "gate.csv")
    verdicts = {(r.experiment, r.fold): r.passes for r in judged.itertuples()}
    assert verdicts == {("net+rhythm", 0): True, ("net+rhythm", 1): True, ("net+rhythm", 2): True,
                        ("net", 0): True, ("net", 1): False, ("net", 2): False}
    net_2 = judged.set_index(["experiment", "fold"]).loc[("net", 2)]
    assert net_2["min_shift_af_roc_auc"] == pytest.approx(0.94) and net_2["threshold_A"] == pytest.approx(0.12)
    assert net_2["failures"] == ("record_af_specificity_~ 0.7000 < 0.8; min_shift_af_roc_auc 0.9400 < 0.95")
    text = (tmp_path / "reports" / "study.md").read_text()
    assert "| net | 1 | 0.110 | 0.910 ✗ | 0.850 | -0.020 | 0.970 | fails |" in text
    assert "| record_recall_A (≥ 0.93) |" in text
    assert "| net | mean | " in text and "| passes on 1 of 3 folds |" in text
    assert "| passes on 3 of 3 folds |" in text
    # a rhythm ensemble's figures on the study's parent run: MLflow refuses '+' in a metric name
    parent = client.search_runs([client.get_experiment_by_name("ecgpipe").experiment_id],
                                filter_string="tags.study_parent = 'true'")[0]
    assert parent.data.metrics["net_plus_rhythm/record_recall_A_mean"] == pytest.approx(0.95)
    # without a gate (a study of no task), no gate section
    report_study("hand", uri, "ecgpipe", tmp_path / "plain")
    assert "The gate" not in (tmp_path / "plain" / "study.md").read_text()
    assert not (tmp_path / "plain" / "gate.csv").exists()


def test_an_af_against_the_rest_study_reports_the_false_alarms_per_label(tmp_path):
    """Runs of AF against the rest have AF's false alarms on N, O and ~ but no challenge score: the
    report gives the former, ranks by F1(A), and leaves the four-class figures out."""
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.reporting.study import report_study

    af = ("record_af_specificity_O", "record_af_specificity_at_sensitivity_95_N",
          "record_af_specificity_at_sensitivity_95_O", "record_af_specificity_at_sensitivity_95_noise")
    rng = np.random.default_rng(6)
    values = {(name, fold): {f: float(rng.uniform(0.6, 0.95)) for f in FIGURES + af}
              for name in ("lstm", "resnet") for fold in range(3)}
    for fold in range(3):
        values[("resnet", fold)]["record_f1_A"] = values[("lstm", fold)]["record_f1_A"] + 0.02
    summary, pairs = report_study("hand", _hand_built_store(tmp_path, values), "ecgpipe", tmp_path / "reports")
    assert list(summary["experiment"]) == ["resnet", "lstm"]
    noise = np.array([values[("lstm", k)]["record_af_specificity_at_sensitivity_95_noise"] for k in range(3)])
    lstm = summary.set_index("experiment").loc["lstm"]
    assert lstm["record_af_specificity_at_sensitivity_95_noise_mean"] == pytest.approx(noise.mean(), abs=1e-12)
    text = (tmp_path / "reports" / "study.md").read_text()
    assert "record_af_specificity_at_sensitivity_95_N" in text and "record_challenge_score" not in text
    assert "record_f1_O" not in text


def test_a_candidate_study_is_paired_against_another_fold_by_fold(tmp_path):
    """`study report --against OTHER`: a candidate recipe's study (`study run --set`) and today's, the
    same experiment in each, paired on each fold's recordings as computed here; the provenance gives both
    studies' commands, the candidate's with its --set. Studies of other folds are refused."""
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.pipeline.study import record_settings
    from ecgpipe.reporting.study import report_study

    rng = np.random.default_rng(9)
    today = {("resnet", k): {f: float(rng.uniform(0.7, 0.9)) for f in FIGURES} for k in range(3)}
    candidate = {("resnet", k): {f: float(rng.uniform(0.7, 0.99)) for f in FIGURES} for k in range(3)}
    uri = _hand_built_store(tmp_path, today, study="today", params={"split.folds": 3})
    _hand_built_store(tmp_path, candidate, study="crop18", params={"split.folds": 3})
    record_settings(uri, "ecgpipe", "crop18", ("experiments.resnet.crop_samples=5400",))
    summary, pairs = report_study("crop18", uri, "ecgpipe", tmp_path / "reports", against="today")
    assert sorted(summary["experiment"]) == ["crop18/resnet", "today/resnet"]
    (pair,) = pairs.to_dict("records")
    sign = 1 if pair["a"] == "crop18/resnet" else -1
    d = np.array([candidate[("resnet", k)]["record_f1_A"] - today[("resnet", k)]["record_f1_A"] for k in range(3)])
    assert sign * pair["record_f1_A_difference"] == pytest.approx(d.mean(), abs=1e-12) and pair["folds"] == 3
    text = (tmp_path / "reports" / "study.md").read_text()
    assert ("Made by `ecgpipe study run --name crop18 --folds 3 --seeds 7 --set experiments.resnet.crop_samples=5400 "
            "--experiments resnet` and `ecgpipe study run --name today --folds 3 --seeds 7 --experiments resnet`") in text
    assert "this report by `ecgpipe study report --name crop18 --out" in text and "--against today`" in text

    _hand_built_store(tmp_path, today, study="five", params={"split.folds": 5})
    with pytest.raises(StudyError, match=r"study crop18 has split.folds \['3'\] and five \['5'\]; expected the same"):
        report_study("crop18", uri, "ecgpipe", tmp_path / "other", against="five")
    with pytest.raises(StudyError, match="--against crop18: expected another study"):
        report_study("crop18", uri, "ecgpipe", tmp_path / "other", against="crop18")


def test_a_lever_study_pairs_the_gates_device_shift_checks_with_todays(tmp_path):
    """A lever is judged, among others, by AF found's change under the worst device shift
    (docs/decisions/af-detector-levers.md): with the task's gate, the report's table and its pairs across
    studies carry the gate's shift checks, paired fold by fold as computed here."""
    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.params import GateCheck
    from ecgpipe.reporting.study import report_study

    rng = np.random.default_rng(3)

    def runs():
        return {("resnet", k): {f: float(rng.uniform(0.7, 0.9)) for f in FIGURES} | {
            "worst_shift_f1_A": 0.8, "worst_shift_f1_A_change": -0.01, "worst_shift_min_roc_auc": 0.97,
            "worst_shift_recall_A_change": float(rng.uniform(-0.06, 0.0)),
            "worst_shift_min_af_roc_auc": float(rng.uniform(0.95, 0.99))} for k in range(3)}

    today, candidate = runs(), runs()
    uri = _hand_built_store(tmp_path, today, study="today", params={"split.folds": 3})
    _hand_built_store(tmp_path, candidate, study="weights", params={"split.folds": 3})
    gate = {"record_recall_A": GateCheck(at_least=0.5), "worst_shift_recall_A_change": GateCheck(at_least=-0.05),
            "min_shift_af_roc_auc": GateCheck(at_least=0.95)}
    summary, pairs = report_study("weights", uri, "ecgpipe", tmp_path / "reports", gate=gate, against="today")
    (pair,) = pairs.to_dict("records")
    sign = 1 if pair["a"] == "weights/resnet" else -1
    for column, metric in (("worst_shift_recall_A_change", "worst_shift_recall_A_change"),
                           ("min_shift_af_roc_auc", "worst_shift_min_af_roc_auc")):
        d = np.array([candidate[("resnet", k)][metric] - today[("resnet", k)][metric] for k in range(3)])
        assert sign * pair[f"{column}_difference"] == pytest.approx(d.mean(), abs=1e-12), column
        mean = np.mean([candidate[("resnet", k)][metric] for k in range(3)])
        assert summary.set_index("experiment").loc["weights/resnet", f"{column}_mean"] == pytest.approx(mean, abs=1e-12)
    assert "| worst_shift_recall_A_change |" in (tmp_path / "reports" / "study.md").read_text()
    # a study whose runs logged no device shift: the table leaves the gate's shift checks out
    plain = {("resnet", k): {f: 0.8 for f in FIGURES if f != "worst_shift_f1_A"} for k in range(3)}
    (tmp_path / "plain").mkdir()
    uri = _hand_built_store(tmp_path / "plain", plain, study="plain", params={"split.folds": 3})
    summary, _ = report_study("plain", uri, "ecgpipe", tmp_path / "plain" / "reports", gate=gate)
    assert "worst_shift_recall_A_change_mean" not in summary.columns


def test_a_study_keeps_the_settings_it_was_queued_with(tmp_path):
    """`study run --set` is recorded on the study's parent run; queueing more of the study with other
    settings is refused, as one study's runs must share one recipe."""
    import mlflow

    from ecgpipe.pipeline.study import prepare_store, record_settings
    from ecgpipe.reporting.study import parent_settings

    uri = empty_store(tmp_path / "mlflow.db")
    prepare_store(uri, "ecgpipe")
    record_settings(uri, "ecgpipe", "cv", ("train.batch_size=64",))
    record_settings(uri, "ecgpipe", "cv", ("train.batch_size=64",))  # more seeds, same recipe: fine
    (parent,) = mlflow.MlflowClient(uri).search_runs(["0", "1"], "tags.study = 'cv'")
    assert parent_settings(parent) == ["train.batch_size=64"]
    with pytest.raises(StudyError, match=r"study cv was queued with --set train.batch_size=64; .* --set \(none\) "
                                         r"needs a study of its own"):
        record_settings(uri, "ecgpipe", "cv", ())
    # a value with spaces (a YAML list) comes back whole, not split at its spaces
    record_settings(uri, "ecgpipe", "orders", ("report.order=[a, b]",))
    (parent,) = mlflow.MlflowClient(uri).search_runs(["0", "1"], "tags.study = 'orders'")
    assert parent_settings(parent) == ["report.order=[a, b]"]


def test_set_is_checked_against_params_before_anything_is_queued(monkeypatch, capsys):
    from ecgpipe.cli import main
    from ecgpipe.pipeline.study import queue_commands, with_overrides

    commands = queue_commands("cv", 2, [1], ["a-chunked"], overrides=("train.batch_size=64", "chunk.size=20"))
    assert commands[0][12:18] == ["-S", "study.name=cv", "-S", "train.batch_size=64", "-S", "chunk.size=20"]
    assert commands[0][-1] == "evaluate@a-chunked"
    assert with_overrides({"train": {"batch_size": 192}}, ("train.batch_size=64",), "p.yaml") == {"train": {"batch_size": 64}}
    calls = []
    monkeypatch.setattr("ecgpipe.pipeline.study.run_study", lambda *a, **k: calls.append(k))
    params = str(Path(__file__).parents[1] / "params.yaml")
    key = "experiments.raw_resnet-robust_crop.epochs"
    main(["study", "run", "--name", "cv", "--task", "four_class", "--params", params, "--set", f"{key}=40"])
    assert calls[0]["overrides"] == (f"{key}=40",)
    with pytest.raises(SystemExit) as exit_info:  # a value the task's checks refuse, named with the user's file
        main(["study", "run", "--name", "cv", "--task", "four_class", "--params", params, "--set",
              "experiments.raw_resnet-robust_crop.crop_samples=3600"])
    assert (f"{params} with --set experiments.raw_resnet-robust_crop.crop_samples=3600: task four_class: params: "
            "experiments.raw_resnet-robust_crop.crop_samples: expected at most spectrogram.min_length") in str(exit_info.value.code)
    for value in (key, f"~{key}=1", f"++{key}=1"):  # no value; Hydra's delete and add-or-change, which DVC would obey
        with pytest.raises(SystemExit) as exit_info:
            main(["study", "run", "--name", "cv", "--params", params, "--set", value])
        assert exit_info.value.code == 2 and "argument --set: expected KEY=VALUE" in capsys.readouterr().err
    # '+' adds a key params.yaml leaves at its default, as DVC's -S does; the schema still checks it
    added = "+task_ensembles.raw_resnet-robust_crop.combiner=logistic"
    main(["study", "run", "--name", "cv", "--task", "four_class", "--params", params, "--set", added])
    assert calls[1]["overrides"] == (added,)
    assert queue_commands("cv", 2, [1], ["a"], overrides=(added,))[0][12:16] == ["-S", "study.name=cv", "-S", added]
    for value, expected in (("train.batchsize=64", f"--set train.batchsize=64: {params} has no train.batchsize; "
                                                   "expected a key it has (+train.batchsize=... adds one"),
                            ("+train.batch_size=64", f"--set +train.batch_size=64: {params} already has "
                                                     "train.batch_size; drop the '+'"),
                            ("+task_ensembles.raw_resnet-robust_crop.combinr=logistic",
                             "task_ensembles.raw_resnet-robust_crop.combinr: expected one of the known keys"),
                            ("train.batch_size.x=1", "--set train.batch_size.x=1: train.batch_size is not a section"),
                            ("train.batch_size=-3", "train.batch_size: expected"),
                            ("train.seed=[1", "--set train.seed=[1: expected a YAML value after '=', as DVC's -S "
                                              "reads it, got '[1'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["study", "run", "--name", "cv", "--params", params, "--set", value])
        assert expected in str(exit_info.value.code), value
    assert len(calls) == 2


def test_a_task_study_queues_the_tasks_stages_into_its_mlflow_experiment(monkeypatch, capsys):
    from ecgpipe.cli import main

    calls = []
    monkeypatch.setattr("ecgpipe.pipeline.study.run_study", lambda *a, **k: calls.append((a, k)))
    params = str(Path(__file__).parents[1] / "params.yaml")
    main(["study", "run", "--name", "cv", "--task", "four_class", "--params", params])
    (name, folds, seeds, experiments, jobs, experiment_name), kwargs = calls[0]
    # every experiment the task makes: its network and that network's rhythm ensemble
    assert experiments == ["raw_resnet-robust_crop", "raw_resnet-robust_crop+rhythm"]
    assert experiment_name == "ecgpipe-four-class" and kwargs["task"] == "four_class"
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "run", "--name", "cv", "--task", "four_class", "--params", params, "--experiments", "conv+rhythm"])
    assert "--experiments: 'conv+rhythm': expected one of ['raw_resnet-robust_crop', 'raw_resnet-robust_crop+rhythm']" \
        in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "run", "--name", "cv", "--task", "nine_class", "--params", params])
    assert "tasks.nine_class: no such task" in str(exit_info.value.code)


def _store_with_tables(tmp_path, seeds, experiments=("resnet",), study="hand", commit="") -> tuple[str, dict]:
    """A study's store whose runs (three folds, each seed and experiment) logged the evaluate stage's
    table of their validation recordings, each in its own order; returns the store and each run's P(A)
    (keyed by fold and seed, and by experiment too where there are several). A second study goes into
    the same store (``tmp_path``'s)."""
    import mlflow

    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.reporting.study import RECORD_PREDICTIONS

    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}" if path.exists() else empty_store(path)
    client = mlflow.MlflowClient(uri)
    known = client.get_experiment_by_name("ecgpipe")
    experiment_id = known.experiment_id if known else client.create_experiment("ecgpipe")
    rng = np.random.default_rng([6, *seeds])  # another study: other probabilities
    probs = {}
    for fold in range(3):
        records = [f"A{fold}{i:03d}" for i in range(40)]
        actual = np.array(["N"] * 30 + ["A"] * 10)
        for seed, name in itertools.product(seeds, experiments):
            p_a = np.clip((actual == "A") * 0.5 + rng.uniform(0, 0.6, 40), 0, 1)
            probs[(fold, seed) if len(experiments) == 1 else (name, fold, seed)] = p_a
            run = client.create_run(experiment_id, run_name=name,
                                    tags={"study": study, "fold": str(fold), "seed": str(seed),
                                          **({"mlflow.source.git.commit": commit} if commit else {})})
            for figure in FIGURES:
                client.log_metric(run.info.run_id, f"val_{figure}", 0.5)
            order = rng.permutation(40)  # each run's table in its own order: matched by record
            table = pd.DataFrame({"record": records, "actual": actual, "p_N": 1 - p_a, "p_A": p_a}).iloc[order]
            client.log_table(run.info.run_id, table, RECORD_PREDICTIONS)
            client.set_terminated(run.info.run_id, "FINISHED")
    return uri, probs


def test_two_seeds_are_scored_alone_and_as_their_mean_on_the_same_recordings(tmp_path):
    """A fold trained with two seeds: each seed's figures and the mean of their probabilities, from the
    validation tables the evaluate stage logs, equal scikit-learn's on the same recordings; the mean
    is compared to each seed paired by fold."""
    from sklearn.metrics import roc_auc_score

    from ecgpipe.reporting.study import SEEDS_MEAN, report_study

    uri, probs = _store_with_tables(tmp_path, (1, 2))
    report_study("hand", uri, "ecgpipe", tmp_path / "reports")
    seeds = pd.read_csv(tmp_path / "reports" / "seeds.csv")
    assert sorted(seeds["candidate"].unique()) == [SEEDS_MEAN, "seed 1", "seed 2"] and len(seeds) == 9
    y = np.array([0] * 30 + [1] * 10)
    for fold in range(3):
        row = seeds[(seeds["fold"] == fold) & (seeds["candidate"] == SEEDS_MEAN)].iloc[0]
        mean = (probs[(fold, 1)] + probs[(fold, 2)]) / 2
        assert row["record_roc_auc"] == pytest.approx(roc_auc_score(y, mean), abs=1e-4)
        alone = seeds[(seeds["fold"] == fold) & (seeds["candidate"] == "seed 2")].iloc[0]
        assert alone["record_roc_auc"] == pytest.approx(roc_auc_score(y, probs[(fold, 2)]), abs=1e-4)
    text = (tmp_path / "reports" / "study.md").read_text()
    assert f"| {SEEDS_MEAN} − seed 1 | 3 |" in text and f"| {SEEDS_MEAN} − seed 2 | 3 |" in text
    assert "--task" not in text


def test_a_study_of_another_seed_is_scored_with_todays_as_one_recipes_seeds(tmp_path):
    """`study report --against` a study of the same recipe (no --set, one commit) with another seed: the
    seeds section scores each seed and the mean of both studies' probabilities on each fold's recordings,
    paired with each seed; a study of another commit is not pooled (no merge of other code's runs)."""
    from sklearn.metrics import roc_auc_score

    from ecgpipe.reporting.study import SEEDS_MEAN, report_study

    _, today = _store_with_tables(tmp_path, (12345,), study="today", commit="a" * 40)
    uri, candidate = _store_with_tables(tmp_path, (2026,), study="seed2026", commit="a" * 40)
    report_study("seed2026", uri, "ecgpipe", tmp_path / "reports", against="today")
    seeds = pd.read_csv(tmp_path / "reports" / "seeds.csv")
    assert sorted(seeds["candidate"].unique()) == [SEEDS_MEAN, "seed 12345", "seed 2026"]
    assert set(seeds["experiment"]) == {"resnet"} and len(seeds) == 9
    y = np.array([0] * 30 + [1] * 10)
    for fold in range(3):
        row = seeds[(seeds["fold"] == fold) & (seeds["candidate"] == SEEDS_MEAN)].iloc[0]
        mean = (today[(fold, 12345)] + candidate[(fold, 2026)]) / 2
        assert row["record_roc_auc"] == pytest.approx(roc_auc_score(y, mean), abs=1e-4)
    text = (tmp_path / "reports" / "study.md").read_text()
    assert "The seeds of studies seed2026 and today together" in text
    assert f"| {SEEDS_MEAN} − seed 12345 | 3 |" in text and f"| {SEEDS_MEAN} − seed 2026 | 3 |" in text

    _store_with_tables(tmp_path, (7,), study="other_code", commit="b" * 40)
    report_study("other_code", uri, "ecgpipe", tmp_path / "other", against="today")
    seeds = pd.read_csv(tmp_path / "other" / "seeds.csv")
    assert SEEDS_MEAN not in set(seeds["candidate"])
    assert set(seeds["experiment"]) == {"other_code/resnet", "today/resnet"}
    assert "together" not in (tmp_path / "other" / "study.md").read_text()


def test_one_seed_is_scored_at_its_most_likely_class_without_a_mean(tmp_path):
    from sklearn.metrics import f1_score

    from ecgpipe.reporting.study import SEEDS_MEAN, report_study

    uri, probs = _store_with_tables(tmp_path, (7,))
    report_study("hand", uri, "ecgpipe", tmp_path / "reports", task="four_class")
    seeds = pd.read_csv(tmp_path / "reports" / "seeds.csv")
    assert list(seeds["candidate"].unique()) == ["seed 7"] and len(seeds) == 3
    y = np.array([0] * 30 + [1] * 10)
    for fold in range(3):  # F1(A) at the most likely class, whatever a served rule said
        expected = f1_score(y, (probs[(fold, 7)] > 0.5).astype(int))
        assert seeds.loc[seeds["fold"] == fold, "record_f1_A"].iloc[0] == pytest.approx(expected, abs=1e-4)
    text = (tmp_path / "reports" / "study.md").read_text()
    assert "## At the most likely class" in text and f"| {SEEDS_MEAN} − seed" not in text
    assert "ecgpipe study report --name hand --task four_class" in text


def test_two_experiments_are_paired_at_the_most_likely_class_seed_by_seed(tmp_path):
    """The seeds' figures of two experiments, paired by fold for the same seed: their difference is the
    mean across folds of the two experiments' figures as scikit-learn gives them on the same recordings."""
    from sklearn.metrics import roc_auc_score

    from ecgpipe.reporting.study import report_study

    uri, probs = _store_with_tables(tmp_path, (7,), experiments=("resnet", "resnet+rhythm"))
    report_study("hand", uri, "ecgpipe", tmp_path / "reports")
    y = np.array([0] * 30 + [1] * 10)
    differences = [roc_auc_score(y, probs[("resnet+rhythm", fold, 7)]) - roc_auc_score(y, probs[("resnet", fold, 7)])
                   for fold in range(3)]
    text = (tmp_path / "reports" / "study.md").read_text()
    section = text.split("### Experiment against experiment")[1].split("## Provenance")[0]
    row = next(line for line in section.splitlines() if line.startswith("| resnet"))
    header = next(line for line in section.splitlines() if line.startswith("| a − b"))
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    cell = dict(zip(cells(header), cells(row)))["record_roc_auc"]
    sign = 1 if row.startswith("| resnet+rhythm − resnet") else -1
    assert float(cell.split()[0]) == pytest.approx(sign * np.mean(differences), abs=6e-4)
    assert "| seed 7 | 3 |" in row


def test_a_declared_threshold_is_scored_beside_each_folds_served_point(tmp_path, monkeypatch):
    """``--af-threshold``: each run's table of its validation recordings labelled AF when P(A) reaches the
    declared threshold gives AF found and each label's share not called AF as counted here by hand,
    beside the run's own served-point figures, paired fold by fold (B − A), and judged by the gate's
    checks on recordings."""
    import mlflow

    from ecgpipe.core.results import STUDY_FIGURES as FIGURES
    from ecgpipe.params import GateCheck
    from ecgpipe.reporting.study import RECORD_PREDICTIONS, report_study

    uri = empty_store(tmp_path / "mlflow.db")
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("ecgpipe")
    rng = np.random.default_rng(8)
    actual = np.array(["N"] * 20 + ["A"] * 10 + ["O"] * 10 + ["~"] * 4)
    expected, served = {}, {}
    for fold in range(3):
        p_a = np.clip((actual == "A") * 0.15 + (actual == "O") * 0.05 + rng.uniform(0, 0.5, len(actual)), 0, 0.97)
        rest = (1 - p_a) / 3
        table = pd.DataFrame({"record": [f"R{fold}{i:02d}" for i in range(len(actual))], "actual": actual,
                              "predicted": actual, "p_N": rest, "p_A": p_a, "p_O": rest, "p_~": rest})
        called = p_a >= 0.3
        expected[fold] = {"record_recall_A": called[actual == "A"].mean(),
                          "record_af_specificity_O": 1 - called[actual == "O"].mean(),
                          "record_af_specificity_~": 1 - called[actual == "~"].mean()}
        served[fold] = {"record_recall_A": 0.99, "record_af_specificity_O": 0.5, "record_af_specificity_noise": 0.6}
        run = client.create_run(experiment_id, run_name="net", tags={"study": "hand", "fold": str(fold), "seed": "7"})
        for name, value in {**{f: 0.5 for f in FIGURES}, **served[fold]}.items():
            client.log_metric(run.info.run_id, f"val_{name}", value)
        client.log_table(run.info.run_id, table, RECORD_PREDICTIONS)
        client.set_terminated(run.info.run_id, "FINISHED")
    gate = {"record_recall_A": GateCheck(at_least=0.7), "record_af_specificity_O": GateCheck(at_least=0.55)}
    downloads = []
    real_download = mlflow.MlflowClient.download_artifacts
    monkeypatch.setattr(mlflow.MlflowClient, "download_artifacts",
                        lambda self, run_id, path, dst=None: downloads.append(run_id) or real_download(self, run_id, path, dst))
    report_study("hand", uri, "ecgpipe", tmp_path / "reports", gate=gate, af_threshold=0.3)
    assert sorted(downloads) == sorted(set(downloads)) and len(downloads) == 3  # each run's table read once

    rows = pd.read_csv(tmp_path / "reports" / "threshold.csv")
    for fold in range(3):
        b = rows[(rows["fold"] == fold) & (rows["rule"] == "B: P(A) ≥ 0.3")].iloc[0]
        a = rows[(rows["fold"] == fold) & (rows["rule"] == "A: served point")].iloc[0]
        assert b["record_recall_A"] == pytest.approx(expected[fold]["record_recall_A"], abs=1e-4)
        assert b["record_af_specificity_O"] == pytest.approx(expected[fold]["record_af_specificity_O"], abs=1e-4)
        assert a["record_recall_A"] == pytest.approx(0.99) and a["record_af_specificity_O"] == pytest.approx(0.5)
    text = (tmp_path / "reports" / "study.md").read_text()
    gain = np.mean([expected[k]["record_af_specificity_O"] - 0.5 for k in range(3)])
    assert f"+{gain:.3f} [" in text[text.index("| B − A | 3 |"):]
    passes = sum(expected[k]["record_recall_A"] >= 0.7 and expected[k]["record_af_specificity_O"] >= 0.55 for k in range(3))
    assert "| B: P(A) ≥ 0.3 | 3 |" in text and f"passes on {passes} of 3 folds" in text
    assert "| A: served point | 3 |" in text and "passes on 0 of 3 folds |" in text  # O: 0.5 < 0.55
    assert f"this report by `ecgpipe study report --name hand --out {tmp_path / 'reports'} --af-threshold 0.3`" in text
