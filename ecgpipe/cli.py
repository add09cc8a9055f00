"""The `ecgpipe` command."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecgpipe.stage import INPUT_ERRORS


def _bench_data(args: argparse.Namespace) -> None:
    from ecgpipe.bench.data import bench_data

    result = bench_data(args.params, repeats=args.repeats, notebook=args.notebook)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from ecgpipe.io import write_json

        write_json(args.json, result)


def _bench_train(args: argparse.Namespace) -> None:
    from ecgpipe.bench.train import bench_train

    result = bench_train(args.batches, args.repeats, args.device, args.notebook, args.models)
    print(json.dumps(result, indent=2))
    if args.json:
        from ecgpipe.io import write_json

        write_json(args.json, result)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecgpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    data = bench.add_parser(
        "data", help="time the data preparation (archive from $ECGPIPE_ARCHIVE or the download address)"
    )
    data.add_argument("--json", type=Path, help="also write the result here")
    data.add_argument("--params", type=Path, default=Path("params.yaml"))
    data.add_argument("--repeats", type=int, default=3, help="fresh-process runs; medians are reported")
    data.add_argument("--notebook", action="store_true", help="also time the notebook's own code, interleaved")
    data.set_defaults(func=_bench_data)
    train = bench.add_parser("train", help="training throughput (examples/s) of every registered model")
    train.add_argument("--batches", type=int, default=50, help="timed minibatches per model and repeat")
    train.add_argument("--repeats", type=int, default=3, help="medians over this many interleaved repeats")
    train.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    train.add_argument("--notebook", action="store_true", help="also time the notebook's loop, interleaved")
    train.add_argument("--models", nargs="+", help="only these models")
    train.add_argument("--json", type=Path, help="also write the result here")
    train.set_defaults(func=_bench_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except INPUT_ERRORS as exc:
        sys.exit(f"error: {exc}")
