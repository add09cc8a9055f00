"""`ecgpipe bench train` on a few minibatches: both sides run, in their own processes."""
import pytest
import torch

from ecgpipe.bench import load_notebook_baseline
from ecgpipe.bench.train import _baseline_network, bench_train, speedups
from ecgpipe.cli import main
from ecgpipe.cli import main as cli_main
from ecgpipe.models import create_model


def test_bench_train_reports_both_sides_and_their_ratio(monkeypatch):
    # --compile's processes run eager here (inductor compiles for a minute): its bookkeeping is under test
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    result = bench_train(batches=2, repeats=1, device="cpu", notebook=True, models=["mean_spectrum", "lstm"],
                         data_scale=0.01, bf16=True, warmup=1, compiled=True)
    assert result["device"] == "cpu" and result["batch_size"] == 192 and result["data_scale"] == 0.01
    assert result["warmup"] == 1
    assert set(result["examples_per_s"]) == set(result["notebook_examples_per_s"]) == {"mean_spectrum", "lstm"}
    assert result["notebook_baseline"]["lstm"] == "notebook TorchLSTMNet"
    assert result["notebook_cpu_settings"] == "none (as the notebook)"
    for name in ("mean_spectrum", "lstm"):
        ours, theirs = result["examples_per_s"][name], result["notebook_examples_per_s"][name]
        assert ours > 0 and theirs > 0
        # the ratio of the medians, rounded to 3 decimals (a 2-batch ratio may be far below 1)
        assert result["speedup"][name] == pytest.approx(ours / theirs, rel=0.01, abs=6e-4)
        assert result["speedup_per_repeat"][name] == [result["speedup"][name]]  # one repeat: its ratio
    # bfloat16 beside float32 for the networks autocast trains (not the hand-written LSTM), as this CPU
    # runs it (float32 where it has no native bfloat16)
    from ecgpipe.training.precision import resolve_precision

    assert result["bf16_ran_as"] == resolve_precision("bfloat16", torch.device("cpu"))
    assert set(result["bf16_examples_per_s"]) == set(result["bf16_speedup"]) == {"mean_spectrum"}
    ratio = result["bf16_examples_per_s"]["mean_spectrum"] / result["examples_per_s"]["mean_spectrum"]
    assert result["bf16_speedup"]["mean_spectrum"] == pytest.approx(ratio, rel=0.01, abs=6e-4)
    # compiled beside eager, each precision against its own eager run (bfloat16 only where autocast trains)
    assert set(result["compiled_speedup"]) == {"mean_spectrum", "lstm"}
    assert set(result["compiled_bf16_speedup"]) == {"mean_spectrum"}
    for key, eager in (("compiled", "examples_per_s"), ("compiled_bf16", "bf16_examples_per_s")):
        ratio = result[f"{key}_examples_per_s"]["mean_spectrum"] / result[eager]["mean_spectrum"]
        assert result[f"{key}_speedup"]["mean_spectrum"] == pytest.approx(ratio, rel=0.01, abs=6e-4), key


def test_bench_train_times_the_raw_network_through_its_crop_loader_without_a_baseline():
    result = bench_train(batches=2, repeats=1, device="cpu", notebook=True, models=["raw_resnet", "mean_spectrum"],
                         data_scale=0.01, warmup=0)
    assert result["examples_per_s"]["raw_resnet"] > 0
    assert set(result["notebook_examples_per_s"]) == set(result["speedup"]) == {"mean_spectrum"}


def test_speedup_is_the_median_of_the_per_repeat_ratios_of_neighbouring_processes():
    ours = [{"examples_per_s": {"conv": v}} for v in (300.0, 200.0, 330.0)]
    notebook = [{"examples_per_s": {"conv": v}} for v in (100.0, 200.0, 100.0)]
    median, per_repeat = speedups(ours, notebook, ["conv"])
    assert per_repeat == {"conv": [3.0, 1.0, 3.3]}
    assert median == {"conv": 3.0}  # not 830 / 400, the ratio of the sides' sums


def test_bench_train_rejects_an_unknown_model():
    with pytest.raises(SystemExit, match=r"unknown models \['gru'\]"):
        main(["bench", "train", "--batches", "1", "--models", "gru"])


def test_bench_train_rejects_no_repeats_before_starting_a_process():
    with pytest.raises(ValueError, match=r"--batches and --repeats must be at least 1, got 5 and 0"):
        bench_train(batches=5, repeats=0)
    with pytest.raises(ValueError, match=r"--data-scale must be in \(0, 1\], got 0.0"):
        bench_train(batches=5, repeats=1, data_scale=0.0)
    with pytest.raises(ValueError, match=r"--warmup must be at least 0, got -1"):
        bench_train(batches=5, repeats=1, warmup=-1)


@pytest.mark.parametrize("name", ["mean_spectrum", "fully_connected", "conv", "torch_lstm"])
def test_each_baseline_is_the_notebooks_network_for_the_same_function(name):
    """The baseline trains the notebook's own network; with our weights copied in, it computes our
    model's function (so a speed-up compares code, not architectures)."""
    torch.manual_seed(0)
    label, baseline = _baseline_network(name)
    assert label.startswith("notebook ")
    ours = create_model(name, 17, 1, n_steps=40)
    ours_params, theirs_params = list(ours.parameters()), list(baseline.parameters())
    assert len(ours_params) == len(theirs_params)
    with torch.no_grad():
        for p, q in zip(ours_params, theirs_params):
            q.copy_(p if p.shape == q.shape else p.T)  # input-major linear weights are stored transposed
    x = torch.randn(5, 40, 17)
    torch.testing.assert_close(baseline(x), ours(x), rtol=1e-5, atol=1e-6)


def test_bench_data_runs_on_an_archive(archive_path, monkeypatch, tmp_path, capsys):
    """The README's `ecgpipe bench data` (it once failed for every input)."""
    import json

    import yaml

    from tests.conftest import small_params_dict

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params_dict(), sort_keys=False))
    monkeypatch.setenv("ECGPIPE_ARCHIVE", str(archive_path))
    main(["bench", "data", "--params", str(params), "--repeats", "1", "--json", str(tmp_path / "bench.json")])
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert result["repeats"] == 1 and result["archive"] == str(archive_path)
    assert all(result["seconds"][step] > 0 for step in ("records", "spectrogram", "total"))
    counts = result["counts"]
    assert counts["train"]["chunks"] > 0 and counts["val"]["balanced_chunks"] >= counts["val"]["chunks"]


@pytest.mark.parametrize("argv, expected", [
    (["bench", "data", "--repeats", "0"], "argument --repeats: expected at least 1, got 0"),
    (["bench", "train", "--repeats", "0"], "argument --repeats: expected at least 1, got 0"),
    (["bench", "train", "--batches", "-3"], "argument --batches: expected at least 1, got -3"),
    (["bench", "train", "--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
])
def test_bench_options_are_checked_before_anything_runs(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_the_notebook_baselines_are_found_in_the_checkout_or_named(tmp_path, monkeypatch, capsys):
    """The baselines live in benchmarks/notebook/, outside the installed package: from another folder
    the command says where it looks, in one line."""
    assert load_notebook_baseline("notebook_train").NotebookConvNet  # from the project's root
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "train", "--batches", "2", "--repeats", "1", "--notebook", "--models", "conv"])
    assert "benchmarks/notebook/notebook_train.py" in str(exit_info.value)
    assert "run the benchmark from the project's root folder" in str(exit_info.value)
