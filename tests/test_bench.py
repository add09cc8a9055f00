"""`ecgpipe bench train` on a few minibatches: both sides run, in their own processes."""
import pytest

from ecgpipe.bench.train import bench_train
from ecgpipe.cli import main


def test_bench_train_reports_both_sides_and_their_ratio():
    result = bench_train(batches=2, repeats=1, device="cpu", notebook=True, models=["mean_spectrum", "lstm"])
    assert result["device"] == "cpu" and result["batch_size"] == 192
    assert set(result["examples_per_s"]) == set(result["notebook_examples_per_s"]) == {"mean_spectrum", "lstm"}
    assert result["notebook_baseline"]["lstm"] == "notebook TorchLSTMNet"
    assert result["notebook_cpu_settings"] == "none (as the notebook)"
    for name in ("mean_spectrum", "lstm"):
        ours, theirs = result["examples_per_s"][name], result["notebook_examples_per_s"][name]
        assert ours > 0 and theirs > 0
        assert abs(result["speedup"][name] - ours / theirs) < 0.01 * result["speedup"][name]


def test_bench_train_rejects_an_unknown_model():
    with pytest.raises(SystemExit, match=r"unknown models \['gru'\]"):
        main(["bench", "train", "--batches", "1", "--models", "gru"])
