"""The `vaeviz` command line: train/runs/show/export/cancel/resume, and clean errors with exit codes."""

import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vaeviz.cli import main
from vaeviz.config import RunConfig
from vaeviz.runs import RunStore

SMALL = ["data.name=digits", "model.latent_dim=2", "model.hidden=32,32", "train.batch_size=32",
         "train.eval_every=50", "train.probe_size=200", "train.steps=100"]


def _sets(*pairs):
    return [arg for p in pairs for arg in ("--set", p)]


def _vaeviz(*args, timeout=120) -> subprocess.CompletedProcess:
    """The real program: `python -m vaeviz ...` in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vaeviz", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained(capsys) -> str:
    """A finished small run, trained in the foreground through the CLI."""
    code, out, err = _run(capsys, "train", *_sets(*SMALL), "--name", "small")
    assert code == 0, err
    return out.splitlines()[0].removeprefix("run: ")


def test_train_prints_the_run_first_then_rate_distortion_and_status(capsys):
    code, out, err = _run(capsys, "train", *_sets(*SMALL))
    assert code == 0, err
    lines = out.splitlines()
    rid = lines[0].removeprefix("run: ")
    assert lines[0] == f"run: {rid}" and len(rid) == 8
    values = dict(line.split(": ", 1) for line in lines[1:])
    assert float(values["rate"]) > 0 and float(values["distortion"]) > 0 and values["status"] == "done"
    assert "step 100/100" in err and "steps/s" in err and "loss" in err
    rec = RunStore().get(rid)
    assert rec.status == "done" and rec.step == 100 and rec.name == "vae-digits-1"


def test_runs_table_and_json(capsys, trained):
    code, out, _ = _run(capsys, "runs")
    header, row = out.splitlines()
    assert header.split() == ["id", "name", "status", "objective", "dataset", "step/steps"]
    assert row.split() == [trained, "small", "done", "vae", "digits", "100/100"]
    code, out, _ = _run(capsys, "runs", "--json")
    runs = json.loads(out)
    assert code == 0 and isinstance(runs, list) and len(runs) == 1
    assert {k: runs[0][k] for k in ("id", "name", "status", "objective", "dataset")} == {
        "id": trained, "name": "small", "status": "done", "objective": "vae", "dataset": "digits"}
    assert runs[0]["config"]["train"]["steps"] == 100
    assert json.loads(_run(capsys, "runs", "--json", "--status", "queued")[1]) == []


def test_export_csv_json_and_parquet(capsys, trained, tmp_path):
    code, out, _ = _run(capsys, "export", trained, "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0] == ["step", "split", "name", "value"]
    splits = {r[1] for r in rows[1:]}
    assert splits == {"train", "eval"}
    train_loss = [int(r[0]) for r in rows[1:] if r[1:3] == ["train", "loss"]]
    assert train_loss == list(range(1, 101))
    assert {int(r[0]) for r in rows[1:] if r[1] == "eval"} == {0, 50, 100}
    expected = RunStore().metrics(trained)
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(out)), expected, check_dtype=False)

    code, out, _ = _run(capsys, "export", trained[:4], "--format", "json")
    records = json.loads(out)
    assert code == 0 and len(records) == len(expected) and set(records[0]) == {"step", "split", "name", "value"}

    path = tmp_path / "m.parquet"
    assert _run(capsys, "export", "small", "--format", "parquet", "--out", str(path))[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected)
    path = tmp_path / "m.csv"
    assert _run(capsys, "export", trained, "--out", str(path))[0] == 0
    assert path.read_text().splitlines()[0] == "step,split,name,value"


def test_show_prints_status_last_metrics_and_config(capsys, trained):
    code, out, _ = _run(capsys, "show", trained)
    assert code == 0 and f"run:       {trained}  (small)" in out and "status:    done" in out
    assert "last train metrics (step 100):" in out and "last eval metrics (step 100):" in out
    assert "  elbo: " in out and '"steps": 100' in out


def test_background_cancel_and_resume_without_spawning(capsys):
    store = RunStore()
    store.register_worker(os.getpid())  # a live worker: --background must not start another
    code, out, err = _run(capsys, "train", *_sets(*SMALL), "--background")
    rid = out.splitlines()[0].removeprefix("run: ")
    assert code == 0 and out == f"run: {rid}\n" and "a running worker will pick it up" in err
    assert store.get(rid).status == "queued"
    assert _run(capsys, "cancel", rid) == (0, f"run {rid} cancelled\n", "")
    code, out, _ = _run(capsys, "resume", rid, "--background")
    assert code == 0 and out == f"run: {rid}\n"
    rec = store.get(rid)
    assert rec.status == "queued" and rec.resume
    store.claim_next(os.getpid())
    code, out, _ = _run(capsys, "cancel", rid)
    assert code == 0 and "cancel requested" in out and store.cancel_requested(rid)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "bogus.key=1"], "error: unknown key 'bogus.key'"),
        (["train", "--set", "model.latent_dim=0"], "error: invalid value for 'model.latent_dim': 0"),
        (["train", "--set", "train.lr=fast"], "error: invalid value for 'train.lr': 'fast' (expected float)"),
        (["train", "--set", "noequals"], "error: override 'noequals' is not of the form key=value"),
        (["train", "--config", "/nonexistent/c.json"], "error: cannot read config file /nonexistent/c.json"),
        (["train", "--preset", "no-such-preset"], "error: unknown preset 'no-such-preset'"),
        (["show", "abcdef12"], "error: no run 'abcdef12' (see `vaeviz runs`)"),
        (["export", "abcdef12"], "error: no run 'abcdef12'"),
        (["resume", "abcdef12"], "error: no run 'abcdef12'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, args, message):
    code, out, err = _run(capsys, *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1 and out == ""
    assert RunStore().list_runs() == []  # no run was created


def test_state_errors_exit_2(capsys, trained, tmp_path):
    assert _run(capsys, "resume", trained) == (2, "", f"error: run {trained} is done; only interrupted, failed, "
                                                     "cancelled runs can be resumed\n")
    assert _run(capsys, "cancel", trained) == (2, "", f"error: run {trained} is already done\n")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _run(capsys, "train", "--config", str(bad), "--preset", "vae-digits")
    assert code == 2 and err == "error: use either --config or --preset, not both\n"
    code, _, err = _run(capsys, "train", "--config", str(bad))
    assert code == 2 and err.startswith("error: config is not valid JSON")


def test_config_file_then_sets(capsys, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(RunConfig().with_overrides(SMALL + ["train.steps=40"]).to_json())
    code, out, err = _run(capsys, "train", "--config", str(path), "--set", "train.steps=30")
    assert code == 0, err
    rec = RunStore().get(out.splitlines()[0].removeprefix("run: "))
    assert rec.config.train.steps == 30 and rec.config.model.hidden == [32, 32] and rec.step == 30


def test_a_diverging_run_exits_1_with_step_and_term(capsys):
    code, out, err = _run(capsys, "train", *_sets(*SMALL, "train.lr=10"))
    assert code == 1 and "status: diverged" in out
    assert err.splitlines()[-1].startswith("error: diverged at step ") and "loss" in err


def test_datasets_and_presets_are_listed(capsys):
    code, out, _ = _run(capsys, "datasets")
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert code == 0 and {"digits", "mnist", "npz"} <= set(names)
    from vaeviz.presets import PRESETS

    code, out, _ = _run(capsys, "presets")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == list(PRESETS)


def test_eval_prints_json(capsys, trained):
    pytest.importorskip("vaeviz.analysis.evaluate")
    code, out, _ = _run(capsys, "eval", trained, "--json")
    result = json.loads(out)
    assert code == 0 and isinstance(result, dict) and result


@pytest.mark.parametrize("objective", [["objective.name=sigma_vae", "objective.variance=global_closed_form"],
                                       ["objective.name=geco", "objective.kappa=0.2"]], ids=["sigma_vae", "geco"])
def test_eval_batch_flag_does_not_change_the_metrics(capsys, objective):
    """σ* is the training split's and the noise is fixed per example: one fixed model, whatever the chunk."""
    code, out, err = _run(capsys, "train", *_sets(*SMALL, *objective))
    assert code == 0, err
    rid = out.splitlines()[0].removeprefix("run: ")
    results = {}
    for batch in ("1", "7", "500", "1000000"):  # the last: the whole eval split in one chunk
        code, out, err = _run(capsys, "eval", rid, "--json", "--batch", batch)
        assert code == 0, err
        results[batch] = json.loads(out)
    for key in ("elbo", "distortion", "iwae", "rate", "nll_sigma_free"):
        whole = results["1000000"][key]
        assert math.isfinite(whole), key
        for batch, r in results.items():
            assert r[key] == pytest.approx(whole, rel=1e-6), (key, batch)


def test_worker_command_exits_when_idle(capsys):
    code, out, _ = _run(capsys, "worker", "--exit-when-idle", "--poll", "0.05")
    assert code == 0 and out.strip().endswith("finished 0 run(s)")


def test_real_program_bad_value_and_bad_data_file_give_no_traceback(tmp_path):
    res = _vaeviz("train", "--set", "objective.name=nope")
    assert res.returncode == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: invalid value for 'objective.name': 'nope' (allowed: one of vae")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((10, 4), np.float32))
    res = _vaeviz("train", *_sets(*SMALL, "data.name=npz", f"data.path={bad}"))
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout
    assert res.stdout == ""  # refused before a run is created (preflight)
    error = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "bad.npz" in error[0] and res.stderr.count("\n") == 1
    assert RunStore().list_runs() == []


@pytest.mark.slow
def test_readme_digits_run_finishes_and_is_listed_done(capsys):
    res = _vaeviz("train", *_sets("data.name=digits", "objective.name=vae", "model.latent_dim=2", "train.steps=2000"))
    assert res.returncode == 0, res.stderr
    rid = res.stdout.splitlines()[0].removeprefix("run: ")
    assert any(line.startswith("rate: ") for line in res.stdout.splitlines())
    assert any(line.startswith("distortion: ") for line in res.stdout.splitlines())
    listing = _run(capsys, "runs")[1].splitlines()
    assert [line.split()[2] for line in listing if line.startswith(rid)] == ["done"]
    export = _run(capsys, "export", rid, "--format", "csv")[1].splitlines()
    assert export[0] == "step,split,name,value" and len(export) > 2000 * 4
    assert {line.split(",")[1] for line in export[1:]} == {"train", "eval"}


def test_sweep_trains_every_combination_as_one_batch(vaeviz_home):
    import subprocess
    import sys

    from vaeviz.runs import RunStore

    cmd = [sys.executable, "-m", "vaeviz", "sweep", "--set", "data.name=digits", "--set", "train.steps=40",
           "--set", "model.hidden=32", "--vary", "objective.name=vae,beta_vae", "--vary", "train.seed=0,1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ids = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("run: ")]
    assert len(ids) == 4
    runs = [RunStore(vaeviz_home).get(i) for i in ids]
    assert {r.status for r in runs} == {"done"} and len({r.batch for r in runs}) == 1
    assert sorted(r.name for r in runs) == ["digits objective=beta_vae seed=0", "digits objective=beta_vae seed=1",
                                            "digits objective=vae seed=0", "digits objective=vae seed=1"]
    bad = subprocess.run(cmd[:-4] + ["--vary", "objective.beta"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "key=v1,v2" in bad.stderr and "Traceback" not in bad.stderr


def test_an_objective_switch_after_a_preset_keeps_the_knobs_that_mean_the_same(capsys, monkeypatch):
    """`--set objective.name=beta_vae` after preset mixture-2d keeps its Gaussian decoder and σ = 0.05, silently;
    a switch to an objective without those knobs says so on stderr, once per knob however many runs."""
    monkeypatch.setattr("vaeviz.cli.ensure_worker", lambda store: None)  # queued only: the configs are the point
    code, out, err = _run(capsys, "sweep", "--preset", "mixture-2d", "--set", "objective.name=beta_vae",
                          "--vary", "train.seed=0,1", "--background")
    assert code == 0 and "note:" not in err, err
    runs = RunStore().list_runs()
    assert len(runs) == 2
    for r in runs:
        assert r.config.objective.name == "beta_vae" and r.config.data.name == "gaussian_mixture"
        assert (r.config.objective.decoder, r.config.objective.sigma) == ("gaussian", 0.05)
    code, out, err = _run(capsys, "sweep", "--preset", "mixture-2d", "--vary", "objective.name=beta_vae,rae",
                          "--vary", "train.seed=0,1", "--background")
    assert code == 0
    assert [line for line in err.splitlines() if line.startswith("note: ")] == [
        "note: objective.decoder = gaussian dropped (rae has no such knob)",
        "note: objective.sigma = 0.05 dropped (rae has no such knob)"]
    code, out, err = _run(capsys, "train", "--preset", "beta-vae-annealed-digits", "--set", "objective.name=beta_tcvae",
                          "--set", "objective.gamma=2", "--background")
    assert code == 0 and out.startswith("run: ")
    assert "note: objective.beta: 2 → 6 (beta_tcvae's beta is another knob: weight β of the total correlation)" in err
    assert RunStore().get(out.split()[1]).config.objective.beta == 6.0


# ----------------------------------------------------------------------------- preflight: refused before a run exists


def _refused(capsys, *args) -> str:
    """Run the CLI in-process; assert exit 2, one `error:` line, nothing on stdout and no run; return the line."""
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
    assert RunStore().list_runs() == []
    return err.strip()


@pytest.mark.parametrize(
    "sets, words",
    [
        (["data.n=1"], ["dataset 'digits': the train split has 1 example(s)", "data.n=1", "ex-post GMM"]),
        (["data.name=moons", "data.size=8", "data.eval_fraction=0.9"], ["7 held out", "data.eval_fraction=0.9"]),
        (["train.seed=4294967296"], ["'train.seed': 4294967296", "[0, 4294967295]"]),
        (["train.seed=1e400"], ["'train.seed': '1e400'", "expected int"]),
        (["train.seed=1e13"], ["'train.seed': 10000000000000"]),
        (["train.eval_every=1e400"], ["'train.eval_every': '1e400'"]),
        (["data.name=moons", "data.size=1e400"], ["'data.size': '1e400'"]),
        (["data.name=gaussian_mixture", "data.k=2.5e0"], ["'data.k': '2.5e0'", "expected int"]),
        (["model.arch=conv", "data.name=moons"], ["'model.arch': 'conv' needs images"]),
        (["data.name=shapes", "data.size=1000000"], ["needs 4.1 GB in memory, above the 2 GB limit"]),
        (["model.hidden=" + ",".join(["8192"] * 8)], ["'model.hidden'", "parameters", "4 GB limit"]),
        (["data.name=nope"], ["unknown dataset 'nope'"]),
    ],
)
def test_configs_that_would_fail_late_are_refused_before_a_run_exists(capsys, sets, words):
    for command in (["train"], ["train", "--background"], ["sweep", "--vary", "train.seed=0,1"]):
        line = _refused(capsys, *command, *_sets(*SMALL, *sets))
        for w in words:
            assert w in line, line


def test_two_image_npz_is_refused_before_a_run_exists(capsys, tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, x=np.full((2, 4), 0.5, np.float32))
    line = _refused(capsys, "train", *_sets(*SMALL, "data.name=npz", f"data.path={path}"))
    assert str(path) in line and "has 2 example(s); at least 3 are needed" in line


def test_unavailable_device_is_refused_with_our_message(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _refused(capsys, "train", *_sets(*SMALL, "train.device=cuda"))
    assert line.startswith("error: train.device=cuda: CUDA is not available on this machine (torch ")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    line = _refused(capsys, "sweep", "--vary", "train.seed=0,1", *_sets(*SMALL, "train.device=mps"))
    assert line.startswith("error: train.device=mps: MPS is not available on this machine (torch ")


def test_sweep_size_is_bounded_and_name_can_vary(capsys):
    seeds = ",".join(map(str, range(300)))
    assert _refused(capsys, "sweep", "--vary", f"train.seed={seeds}") == (
        "error: --vary gives 300 combinations; a sweep has at most 256 runs")
    assert _refused(capsys, "sweep", "--vary", "train.seed=,") == (
        "error: --vary 'train.seed=,' is not of the form key=v1,v2,...")
    from vaeviz.cli import _get, _short, sweep_configs

    cfgs = sweep_configs(RunConfig(), ["name=a,b"])
    assert [_get(c, "name") for c in cfgs] == ["a", "b"] and _short("name") == "name"


def test_resume_runs_preflight_first(capsys, tmp_path):
    path = tmp_path / "u.npz"
    np.savez(path, x=np.full((10, 4), 0.5, np.float32))
    store = RunStore()
    rid = store.create_run(RunConfig().with_overrides(SMALL + ["data.name=npz", f"data.path={path}"]))
    store.set_status(rid, "failed", "stopped")
    path.unlink()
    code, out, err = _run(capsys, "resume", rid)
    assert code == 2 and out == "" and err.startswith("error: npz file ") and "does not exist" in err
    assert store.get(rid).status == "failed"  # not requeued


# ----------------------------------------------------------------------------- --config files


@pytest.mark.parametrize(
    "content, message",
    [
        (b"5", "error: a config must be an object of key: value pairs, not int 5"),
        (b'"abc"', "error: a config must be an object of key: value pairs, not str 'abc'"),
        (b"[]", "error: a config must be an object of key: value pairs, not list []"),
        (b'{"train": 5}', "error: config section 'train' must be an object of key: value pairs, not int 5"),
        (b'{"train": {"steps": "1e400"}}', "error: invalid value for 'train.steps': '1e400' (expected int"),
        (b'{"train": {"steps": true}}', "error: invalid value for 'train.steps': True (expected int"),
        (b'{"train": {"seed": 1e13}}', "error: invalid value for 'train.seed': 10000000000000 (allowed"),
        (b"\xff\xfe{\x00}", "error: config file {path} is not UTF-8 text"),
        (b"[" * 200_000, "error: config is not valid JSON: it is nested too deeply"),
        (b"9" * 5000, "error: config is not valid JSON: it holds a number of more than 4300 digits"),
        (b" " * (2 << 20), "error: config file {path} is larger than 1048576 bytes"),
    ],
)
def test_malformed_config_files_are_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_bytes(content)
    line = _refused(capsys, "train", "--config", str(path))
    assert line.startswith(message.format(path=path)), line


def test_config_paths_that_are_not_files(capsys, tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    cases = {tmp_path: "it is not a file (it is a directory)",
             tmp_path / "fifo.json": "it is not a file (it is a fifo)",
             tmp_path / "missing.json": "it does not exist",
             "/dev/zero": "it is not a file (it is a character device)"}
    for path, words in cases.items():
        line = _refused(capsys, "train", "--config", str(path))
        assert line.startswith(f"error: cannot read config file {path}: ") and words in line, line


# ----------------------------------------------------------------------------- tampered checkpoints and bad arguments


def _tamper(path, how: str) -> None:
    import torch

    if how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "garbage":
        path.write_bytes(b"garbage, not a checkpoint\n" * 10)
    elif how == "wrong keys":
        torch.save({"model": {"x": torch.zeros(3)}, "objective": {}, "step": 100}, path)
    elif how == "a list":
        torch.save([1, 2, 3], path)
    elif how == "wrong shapes":
        state = torch.load(path, weights_only=True)
        state["model"] = {k: torch.zeros(1) for k in state["model"]}
        torch.save(state, path)
    elif how == "pickled code":
        import pickle

        path.write_bytes(pickle.dumps(os.getcwd))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["truncated", "garbage", "wrong keys", "a list", "wrong shapes", "pickled code"])
def test_eval_of_a_tampered_checkpoint_is_one_error_line(capsys, trained, how):
    _tamper(RunStore().artifact_dir(trained) / "checkpoints" / "step_00000100.pt", how)
    code, out, err = _run(capsys, "eval", trained, "--json")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: checkpoint {trained}/checkpoints/step_00000100.pt is unreadable: "), err


def test_real_program_eval_of_a_tampered_checkpoint_has_no_traceback(trained):
    _tamper(RunStore().artifact_dir(trained) / "checkpoints" / "step_00000100.pt", "truncated")
    res = _vaeviz("eval", trained)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    assert res.stderr.startswith(f"error: checkpoint {trained}/checkpoints/step_00000100.pt is unreadable")


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", "abcdef12"], "error: no run 'abcdef12'"),
        (["cancel", "abcdef12"], "error: no run 'abcdef12'"),
        (["show", ""], "error: no run ''"),
        (["export", "x" * 10_000], "error: no run 'xxxx"),
    ],
)
def test_unknown_runs_are_one_line(capsys, args, words):
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == "" and err.startswith(words) and err.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [["eval", "x", "--step", "-1"], ["eval", "x", "--step", "1e400"], ["eval", "x", "--step", "9" * 5000],
     ["worker", "--poll", "nan"], ["worker", "--poll", "-1"], ["worker", "--poll", "inf"],
     ["worker", "--max-jobs", "0"], ["runs", "--status", "bogus"]],
)
def test_bad_arguments_exit_2_through_argparse(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error: argument" in err and "Traceback" not in err
