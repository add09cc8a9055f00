"""`ecgpipe bench train` on a few minibatches: both sides run, in their own processes."""
import pytest
import torch

from ecgpipe.bench import load_notebook_baseline
from ecgpipe.bench.train import _baseline_network, bench_train, speedups
from ecgpipe.cli import main
from ecgpipe.cli import main as cli_main
from ecgpipe.models import create_model


def test_bench_train_runs_each_side_in_its_own_process_and_reports_their_ratios(monkeypatch):
    """The orchestration, with each fresh process replaced by a record of how it was started and a
    speed that depends on it (the processes themselves run in the next test)."""
    from ecgpipe.bench import train as bench

    calls = []
    speeds = {("ours", "float32", False): 300.0, ("notebook", "float32", False): 100.0,
              ("ours", "bfloat16", False): 450.0, ("ours", "float32", True): 330.0, ("ours", "bfloat16", True): 540.0}

    def fake_side(side, name, batches, device, tuned, data_scale=1.0, precision="float32", warmup=10, compiled=False):
        calls.append((side, name, precision, compiled, tuned, batches, data_scale, warmup))
        repeat = sum(1 for c in calls if c[:4] == (side, name, precision, compiled))  # 1, 2, 3
        speed = speeds[side, precision, compiled] * (1.1 if repeat == 2 else 1.0)  # repeat 2: the machine ran faster
        return {"examples_per_s": speed, "label": f"notebook {name}" if side == "notebook" else None,
                "device": "cpu", "gpu": None, "precision": "bfloat16-ran-as", "torch_threads": 2}

    monkeypatch.setattr(bench, "_run_side", fake_side)
    result = bench.bench_train(batches=7, repeats=3, device="cpu", notebook=True, models=["mean_spectrum", "lstm"],
                               data_scale=0.01, bf16=True, warmup=1, compiled=True)
    # per repeat and model: ours, its bfloat16 twin (autocast trains mean_spectrum, not the hand-written
    # LSTM), compiled in each precision it ran eagerly, then the notebook; ours tuned, the notebook not
    one_repeat = [("ours", "mean_spectrum", "float32", False, True), ("ours", "mean_spectrum", "bfloat16", False, True),
                  ("ours", "mean_spectrum", "float32", True, True), ("ours", "mean_spectrum", "bfloat16", True, True),
                  ("notebook", "mean_spectrum", "float32", False, False),
                  ("ours", "lstm", "float32", False, True), ("ours", "lstm", "float32", True, True),
                  ("notebook", "lstm", "float32", False, False)]
    assert [c[:5] for c in calls] == one_repeat * 3
    assert {c[5:] for c in calls} == {(7, 0.01, 1)}
    assert result["device"] == "cpu" and result["batch_size"] == 192 and result["data_scale"] == 0.01
    assert result["warmup"] == 1 and result["repeats"] == 3 and result["torch_threads"] == 2
    assert result["examples_per_s"] == {"mean_spectrum": 300.0, "lstm": 300.0}  # the median of 300, 330, 300
    assert result["notebook_examples_per_s"] == {"mean_spectrum": 100.0, "lstm": 100.0}
    assert result["notebook_baseline"] == {"mean_spectrum": "notebook mean_spectrum", "lstm": "notebook lstm"}
    assert result["notebook_cpu_settings"] == "none (as the notebook)"
    # each ratio from two neighbouring processes of one repeat: in repeat 2 both sides ran 10% faster,
    # and the ratio of that repeat is the same as in the others
    assert result["speedup"] == {"mean_spectrum": 3.0, "lstm": 3.0}
    assert result["speedup_per_repeat"] == {"mean_spectrum": [3.0] * 3, "lstm": [3.0] * 3}
    assert result["bf16_ran_as"] == "bfloat16-ran-as"  # as the bfloat16 process reported it
    assert result["bf16_speedup"] == {"mean_spectrum": 1.5} and result["bf16_examples_per_s"] == {"mean_spectrum": 450.0}
    assert result["compiled_speedup"] == {"mean_spectrum": 1.1, "lstm": 1.1}  # each against its own eager run
    assert result["compiled_bf16_speedup"] == {"mean_spectrum": 1.2}


def test_bench_train_times_each_side_in_a_fresh_process(monkeypatch):
    """The real processes: ours for a raw-signal network (no notebook baseline) and a spectrogram one
    with the notebook's, and one under bfloat16 and torch.compile (run eagerly here: inductor compiles
    for a minute; the flags reaching the process is what is under test)."""
    from ecgpipe.bench.train import _run_side
    from ecgpipe.training.precision import resolve_precision

    result = bench_train(batches=2, repeats=1, device="cpu", notebook=True, models=["raw_resnet", "mean_spectrum"],
                         data_scale=0.01, warmup=0)
    assert result["examples_per_s"]["raw_resnet"] > 0 and result["examples_per_s"]["mean_spectrum"] > 0
    assert set(result["notebook_examples_per_s"]) == set(result["speedup"]) == {"mean_spectrum"}
    assert result["notebook_baseline"] == {"mean_spectrum": "notebook MeanSpectrumNet"}
    ratio = result["examples_per_s"]["mean_spectrum"] / result["notebook_examples_per_s"]["mean_spectrum"]
    assert result["speedup"]["mean_spectrum"] == pytest.approx(ratio, rel=0.01, abs=6e-4)  # rounded to 3 decimals
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    side = _run_side("ours", "mean_spectrum", 2, "cpu", True, 0.01, "bfloat16", 0, True)
    assert side["examples_per_s"] > 0 and side["precision"] == resolve_precision("bfloat16", torch.device("cpu"))


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
    assert all(result["seconds"][step] > 0 for step in ("spectrogram", "split", "balance", "chunk", "total"))
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
