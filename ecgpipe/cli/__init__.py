"""The `ecgpipe` command."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecgpipe.pipeline.stage import INPUT_ERRORS, exit_with_error, exit_with_store_error

# errors shown as one line: the user's input or the file system, not a bug
CLI_ERRORS = INPUT_ERRORS + (ValueError, OSError)


def _json_output(args: argparse.Namespace) -> Path | None:
    """Where ``--json`` goes, checked before the benchmark runs (a folder or an input is refused)."""
    from ecgpipe.core.io import user_output

    return None if args.json is None else user_output(args.json, "--json", [args.params] if "params" in args else [])


def _print_and_write(result: dict, target: Path | None) -> None:
    from ecgpipe.core.io import json_text, write_user_output

    print(json.dumps(result, indent=2))
    if target is not None:
        write_user_output(target, json_text(result))


def _bench_data(args: argparse.Namespace) -> None:
    from ecgpipe.bench.data import bench_data

    target = _json_output(args)
    _print_and_write(bench_data(args.params, repeats=args.repeats, notebook=args.notebook), target)


def _bench_train(args: argparse.Namespace) -> None:
    from ecgpipe.bench.train import bench_train

    target = _json_output(args)
    _print_and_write(bench_train(args.batches, args.repeats, args.device, args.notebook, args.models,
                                 args.tuned_notebook, args.data_scale, args.bf16, args.warmup, args.compile), target)


def _checked(check_name: str):
    """An argparse type from one of the recording readers' option checks, so that a bad value stops the
    call before any file is read, with argparse's one line naming the option."""
    def convert(text: str) -> float:
        from ecgpipe.core.errors import PredictError
        from ecgpipe.inference import readers

        try:
            return getattr(readers, check_name)(text, "")
        except PredictError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None
    convert.__name__ = check_name.removeprefix("check_")  # argparse names the type in some messages
    return convert


def _at_least(minimum: int, at_most: int | None = None, why: str = ""):
    """An argparse type: a whole number of at least ``minimum`` (and at most ``at_most``, for ``why``)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {value}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"expected at most {at_most:,} ({why}), got {value:,}")
        return value
    convert.__name__ = f"at_least_{minimum}"
    return convert


MAX_REASON_CHARS = 5_000  # a reason is a model version's tag; MLflow's run tags stop at 8,000


def _words(text: str) -> str:
    """An argparse type: some words (not blank), of at most MAX_REASON_CHARS characters."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected some words, got an empty text")
    if len(text) > MAX_REASON_CHARS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_REASON_CHARS:,} characters, got {len(text):,}")
    return text


def _probability(text: str) -> float:
    """An argparse type: a threshold on a probability, strictly between 0 and 1 (0 would call everything
    AF, 1 almost nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {value:g}")
    return value


# the ship stage's output in this checkout: the served detector and its model card, kept in git
SHIPPED_FOLDER = Path(__file__).resolve().parents[2] / "pretrained"
MAX_STUDY_FOLDS = 50  # a study trains every experiment once per fold and seed; 50 folds is 50 trainings each


def _study_name(text: str) -> str:
    from ecgpipe.core.errors import StudyError
    from ecgpipe.reporting.study import check_study_name

    try:
        return check_study_name(text)
    except StudyError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def _override(text: str) -> str:
    """A ``--set KEY=VALUE`` of params.yaml (KEY dotted, as `dvc exp run -S` takes it; ``+KEY=VALUE``
    adds a key the file leaves at its default)."""
    import re

    # DVC reads -S with Hydra's grammar: a key's parts are identifiers, '+' in front adds the key ('~' would
    # delete one, and '++' add or change: not taken, a study changes a recipe's values)
    if not re.fullmatch(r"\+?[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*=.+", text):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or +KEY=VALUE with KEY a dotted key of params.yaml "
                                         f"(e.g. experiments.NAME.epochs=40), got {text!r}")
    return text


def _device(text: str) -> str:
    from ecgpipe.core.device import DEVICE_NAMES, is_device_name

    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"expected {DEVICE_NAMES}, got {text!r}")
    return text


def _predict(args: argparse.Namespace) -> None:
    import pandas as pd

    from ecgpipe.core.io import user_output, write_user_output
    from ecgpipe.ensemble.serving import load_classifier, model_folder
    from ecgpipe.inference.predictor import predict_files

    if args.model is None:  # the detector shipped in git (the ship stage's pretrained/)
        from ecgpipe.pipeline.ship import shipped_model

        folder, named = shipped_model(SHIPPED_FOLDER)
        folder = str(folder)
        print(named, file=sys.stderr)
    else:
        # checked before any recording is read: a folder, one of the recordings, or a path inside the
        # model (its own files, or the download of a models:/ URI) is refused
        folder = model_folder(args.model)
    target = None if args.out is None else user_output(args.out, "--out", args.files, protected=[folder])
    predictor = load_classifier(folder)  # a network's predictor, or an ensemble
    table = pd.DataFrame(predict_files(predictor, args.files, fs=args.fs, gain=args.gain, lead=args.lead))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    if target is not None:
        write_user_output(target, table.to_csv(index=False, float_format="%.6f"))
    failed = table["error"].astype(bool).sum()
    if failed:
        sys.exit(f"{failed} of {len(table)} recordings could not be classified (see the error column)")


def _study_run(args: argparse.Namespace) -> None:
    from ecgpipe.pipeline.study import run_study, study_params

    params = study_params(args.params, args.task, tuple(args.overrides or ()))
    experiments = args.experiments or params.experiment_names()
    for name in experiments:  # an unknown name fails here, before anything is queued
        if name not in params.experiment_names():
            sys.exit(f"ecgpipe study run: --experiments: {name!r}: expected one of {params.experiment_names()} (the "
                     f"experiments{' and ensembles of task ' + args.task if args.task else ''} of {args.params})")
    if args.backend == "ray":
        from ecgpipe.pipeline.ray_study import run_ray_study

        if args.task is not None:
            sys.exit("ecgpipe study run: --task: the ray backend runs the notebook's task only; use --backend dvc-queue")
        if args.overrides:
            sys.exit("ecgpipe study run: --set: the ray backend runs params.yaml as committed; use --backend dvc-queue")

        # a task asks Ray for a GPU when the experiments train on one (train.device: cuda...)
        gpus = 1 if params.train.device.startswith("cuda") else 0
        for row in run_ray_study(args.name, args.folds, args.seeds, experiments, params.mlflow.experiment_name,
                                 address=args.address, cpus=args.cpus_per_task, gpus=gpus, retries=args.retries):
            print(f"{row['experiment']}: ran on node {row['node_ip']} ({row['node_id'][:12]})")
        return
    run_study(args.name, args.folds, args.seeds, experiments, args.jobs, params.mlflow.experiment_name,
              wait=args.wait, task=args.task, overrides=tuple(args.overrides))


def _remote_set(args: argparse.Namespace) -> None:
    from ecgpipe.pipeline.remotes import REMOTE, set_remotes

    set_remotes(args.git, args.dvc)
    print(f"git remote {REMOTE} -> {args.git}; DVC remote {REMOTE} (default) -> {args.dvc}")


def _study_report(args: argparse.Namespace) -> None:
    from ecgpipe.pipeline.study import study_params
    from ecgpipe.reporting.study import report_study
    from ecgpipe.tracking.runs import tracking_uri

    params = study_params(args.params, args.task)
    report_study(args.name, tracking_uri(), params.mlflow.experiment_name, args.out, params.evaluate.confidence,
                 args.task, params.report.gate, args.af_threshold, args.against)
    print((args.out / "study.md").read_text())


def _promote(args: argparse.Namespace) -> None:
    from ecgpipe.tracking.registry import promote

    print(json.dumps(promote(args.model, args.version, args.why, args.by), indent=2))


def _server_start(args: argparse.Namespace) -> None:
    from ecgpipe.tracking.accounts import ADMIN_PASSWORD_ENV, read_password
    from ecgpipe.tracking.server import start_server

    admin_password = read_password(args.admin_password_file, ADMIN_PASSWORD_ENV, "the admin password")
    state = start_server(args.folder, args.host, args.port, auth=args.auth, admin_password=admin_password)
    print(f"MLflow tracking server on PostgreSQL: {state['tracking_uri']} (data in {args.folder.resolve()})")
    print(f"export MLFLOW_TRACKING_URI={state['tracking_uri']}")
    if state["auth"]:
        print("every client signs in: export MLFLOW_TRACKING_USERNAME=NAME MLFLOW_TRACKING_PASSWORD=...; "
              f"add accounts with `ecgpipe server user add NAME --role writer|reader --folder {args.folder}`")


def _server_user(args: argparse.Namespace) -> None:
    from ecgpipe.tracking.server import manage_account

    uri = manage_account(args.folder, args.action, args.name, args.role, args.password_file, args.admin_password_file)
    print(f"{'added' if args.action == 'add' else 'removed'} the account {args.name}"
          f"{f' ({args.role})' if args.action == 'add' else ''} on {uri}")


def _server_stop(args: argparse.Namespace) -> None:
    from ecgpipe.tracking.server import stop_server

    stop_server(args.folder)
    print(f"stopped the tracking server of {args.folder.resolve()}")


def _default_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecgpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="classify recordings: one row each (record, label, p_<class>, error)",
        description="Classify recordings (.mat CinC, .hea WFDB, one-column .csv or .npy) with a trained model, "
                    "using the preprocessing it was trained with. Other sampling rates are resampled.")
    predict.add_argument("--model",
                         help="a predictors/NAME or models/NAME folder, an ensemble's model folder, or an MLflow "
                              f"runs:/... or models:/... URI (default: the detector shipped in {SHIPPED_FOLDER})")
    predict.add_argument("--fs", type=_checked("check_sampling_rate"), help="sampling rate in Hz of every file given: needed for .csv and .npy; "
                         "overrides the 300 Hz of .mat files and the rate in WFDB headers")
    predict.add_argument("--gain", type=_checked("check_gain"), default=1000.0,
                         help=".csv/.npy samples are in units of 1/GAIN mV (default 1000, as CinC)")
    predict.add_argument("--lead", help="the lead to classify in multi-lead WFDB records: a name from the header "
                         "(such as II) or an index; the output then says which lead each row used")
    predict.add_argument("--out", type=Path, help="also write the table to this CSV file")
    predict.add_argument("files", nargs="+", help="recordings")
    predict.set_defaults(func=_predict)
    study = commands.add_parser("study", help="cross-validation studies run by DVC's queue or on a Ray cluster").add_subparsers(
        dest="what", required=True)
    run = study.add_parser("run", help="queue one DVC experiment per fold and seed, then start the queue's workers",
                           description="Queues `dvc exp run --queue -S split.fold=K -S train.seed=S -S study.name=NAME "
                                       "evaluate@EXPERIMENT...` for every fold and seed, then `dvc queue start -j JOBS`.")
    run.add_argument("--name", required=True, type=_study_name,
                     help="the study's name: its MLflow runs are tagged study=NAME")
    run.add_argument("--folds", type=_at_least(2, MAX_STUDY_FOLDS, "each fold is a whole training"), default=5, help="stratified folds (split.folds)")
    run.add_argument("--seeds", type=_at_least(0), nargs="+", default=[12345], help="training seeds (train.seed)")
    run.add_argument("--jobs", type=_at_least(1), default=1, help="parallel queue workers")
    run.add_argument("--experiments", nargs="+", help="experiments of params.yaml, or of --task (its networks and NETWORK+rhythm ensembles; default: all)")
    run.add_argument("--wait", action="store_true",
                     help="return only when the queue is empty; exit non-zero naming the study's failed runs")
    run.add_argument("--params", type=Path, default=Path("params.yaml"))
    run.add_argument("--set", dest="overrides", action="append", default=[], type=_override, metavar="KEY=VALUE",
                     help="a value of params.yaml that every queued experiment changes (`dvc exp run -S`), for a "
                          "candidate recipe's study; repeatable; compare it with `study report --against`")
    run.add_argument("--task", help="a task of params.yaml's tasks: its stages and MLflow experiment "
                                    "(--experiments then names its task_experiments)")
    run.add_argument("--backend", choices=["dvc-queue", "ray"], default="dvc-queue",
                     help="dvc-queue: DVC's local queue workers (one machine); ray: one Ray task per fold and seed "
                          "on a Ray cluster, each in a fresh clone, with the remotes of `ecgpipe remote set` and "
                          "the tracking server of $MLFLOW_TRACKING_URI (always waits)")
    run.add_argument("--address", help="ray: the cluster's address, e.g. 10.0.0.5:6379 (default: a new local cluster)")
    run.add_argument("--cpus-per-task", type=_at_least(1), default=1, help="ray: CPUs each task reserves")
    run.add_argument("--retries", type=_at_least(0), default=2, help="ray: retries of a failed or lost task")
    run.set_defaults(func=_study_run)
    report = study.add_parser("report", help="aggregate a study's finished runs from MLflow")
    report.add_argument("--name", required=True, type=_study_name)
    report.add_argument("--out", type=Path, default=Path("reports"), help="folder for study.md, .csv and .png")
    report.add_argument("--params", type=Path, default=Path("params.yaml"))
    report.add_argument("--task", help="a task of params.yaml's tasks: the study's runs are in its MLflow experiment")
    report.add_argument("--against", type=_study_name, metavar="OTHER",
                        help="also read study OTHER's runs (same folds) and pair every figure of the two studies' "
                             "experiments fold by fold, named STUDY/EXPERIMENT: a `study run --set` candidate "
                             "against today's recipe")
    report.add_argument("--af-threshold", type=_probability, default=None,
                        help="also score every fold's validation recordings with AF when P(A) reaches this declared "
                             "threshold, beside its served operating point (docs/decisions/af-operating-point.md)")
    report.set_defaults(func=_study_report)
    remote = commands.add_parser("remote", help="the git and DVC remotes that studies on Ray share").add_subparsers(
        dest="what", required=True)
    remote_set = remote.add_parser(
        "set", help="point the git remote and the default DVC remote `ecgpipe` at these URLs",
        description="`git remote add|set-url ecgpipe GIT` (a bare repository is made at a new local path) and "
                    "`dvc remote add --local --default --force ecgpipe DVC`. Paths, s3://, ssh://: any URL git and "
                    "DVC take.")
    remote_set.add_argument("--git", required=True, help="the git remote: commits and DVC experiments")
    remote_set.add_argument("--dvc", required=True, help="the DVC remote: the cache")
    remote_set.set_defaults(func=_remote_set)
    promote = commands.add_parser(
        "promote", help="move @champion of a registered model to a version, on purpose",
        description="Points the alias `champion` of MODEL in the MLflow Model Registry ($MLFLOW_TRACKING_URI, "
                    "default sqlite:///mlflow.db) at VERSION, and tags the version with who, when and why. Only "
                    "this command and the workspace's `dvc repro` move @champion.")
    promote.add_argument("model", help="a registered model, e.g. ecgpipe-af")
    promote.add_argument("version", type=_at_least(1), help="its version number")
    promote.add_argument("--why", required=True, type=_words, help="the reason, kept as a tag of the version")
    promote.add_argument("--by", default=_default_user(), type=_words, help="who (default: this user)")
    promote.set_defaults(func=_promote)
    server = commands.add_parser("server", help="an MLflow tracking server on PostgreSQL, for a team").add_subparsers(
        dest="what", required=True)
    # no abbreviations: `--admin-password SECRET` must not be read as --admin-password-file's path
    start = server.add_parser(
        "start", allow_abbrev=False, help="start PostgreSQL and `mlflow server` (served artifacts) on the data in --folder",
        description="Makes the PostgreSQL cluster on first start (initdb), then runs `mlflow server` with it as the "
                    "backend store and --folder/artifacts as the served artifact store, in the background. Prints "
                    "the MLFLOW_TRACKING_URI to export.")
    start.add_argument("--folder", type=Path, default=Path("mlflow-server"), help="where the data and logs live")
    start.add_argument("--host", default="127.0.0.1", help="the address to bind (default: this machine only)")
    start.add_argument("--port", type=_at_least(1, 65535, "a TCP port"), help="the server's port (default: a free one)")
    start.add_argument("--auth", action="store_true",
                       help="accounts on a loopback server too (always on for any other --host)")
    start.add_argument("--admin-password-file", type=Path, metavar="FILE",
                       help="the admin account's password, one line in a file only its owner can read "
                            "(or $ECGPIPE_SERVER_ADMIN_PASSWORD); required off loopback")
    start.set_defaults(func=_server_start)
    user = server.add_parser(
        "user", allow_abbrev=False, help="add or remove an account of a server with accounts",
        description="Readers read every run and model; writers (the accounts that run the pipeline or "
                    "`ecgpipe promote`) also log runs, register versions and move aliases. Needs the admin password "
                    "($ECGPIPE_SERVER_ADMIN_PASSWORD or --admin-password-file).")
    user.add_argument("action", choices=["add", "remove"])
    user.add_argument("name", help="the account's user name")
    user.add_argument("--role", choices=["reader", "writer"], default="reader", help="(add) default: reader")
    user.add_argument("--password-file", type=Path, metavar="FILE",
                      help="(add) the account's password, one line in a file only its owner can read "
                           "(or $ECGPIPE_SERVER_USER_PASSWORD)")
    user.add_argument("--admin-password-file", type=Path, metavar="FILE")
    user.add_argument("--folder", type=Path, default=Path("mlflow-server"))
    user.set_defaults(func=_server_user)
    stop = server.add_parser("stop", help="stop the server and PostgreSQL of --folder")
    stop.add_argument("--folder", type=Path, default=Path("mlflow-server"))
    stop.set_defaults(func=_server_stop)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    data = bench.add_parser(
        "data", help="time the data preparation (archive from $ECGPIPE_ARCHIVE or the download address)"
    )
    data.add_argument("--json", type=Path, help="also write the result here")
    data.add_argument("--params", type=Path, default=Path("params.yaml"))
    data.add_argument("--repeats", type=_at_least(1), default=3, help="fresh-process runs; medians are reported")
    data.add_argument("--notebook", action="store_true", help="also time the notebook's own code, interleaved")
    data.set_defaults(func=_bench_data)
    train = bench.add_parser("train", help="training throughput (examples/s) of every registered model")
    train.add_argument("--batches", type=_at_least(1), default=200,
                       help="timed minibatches per model and repeat (shorter windows are noisier)")
    train.add_argument("--repeats", type=_at_least(1), default=5, help="medians over this many interleaved repeats")
    train.add_argument("--device", type=_device, default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    train.add_argument("--notebook", action="store_true", help="also time the notebook's loop, interleaved")
    train.add_argument("--tuned-notebook", action="store_true",
                       help="give the notebook's process the training path's CPU settings too (ecgpipe.training.cpu)")
    train.add_argument("--models", nargs="+", help="only these models")
    train.add_argument("--bf16", action="store_true",
                       help="also time each model under bfloat16 autocast, interleaved, and report the ratio")
    train.add_argument("--data-scale", type=float, default=1.0,
                       help="the data set the batches come from, as a fraction of the real training split's size "
                            "(default 1; memory and set-up time scale with it, the timed steps do not)")
    train.add_argument("--warmup", type=_at_least(0),
                       help="untimed minibatches first in each process (default: ecgpipe.bench.train.WARMUP, the ten "
                            "a fresh process takes to settle; fewer only where the figure does not matter)")
    train.add_argument("--compile", action="store_true",
                       help="also time each model under torch.compile (inductor), in each precision timed, interleaved, "
                            "and report the ratio to eager; the first epoch, where it compiles, is not timed")
    train.add_argument("--json", type=Path, help="also write the result here")
    train.set_defaults(func=_bench_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CLI_ERRORS as exc:
        exit_with_error(exc)
    except Exception as exc:
        exit_with_store_error(exc)
        raise
