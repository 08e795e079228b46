"""Batched comparisons: a run trained inside a batch follows the same run trained alone."""

import numpy as np
import pytest

from vaeviz.config import ConfigError, RunConfig
from vaeviz.control import Diverged
from vaeviz.member import MemorySink
from vaeviz.stacking import check_batchable
from vaeviz.train import Trainer, train, train_batched

BASE = ["data.name=digits", "model.hidden=64,64", "train.batch_size=32", "train.eval_every=1000",
        "train.checkpoint_every=1000"]


def _cfgs(steps, *variants):
    return [RunConfig().with_overrides(BASE + [f"train.steps={steps}", *v]) for v in variants]


VARIANTS = (["train.seed=0"], ["train.seed=1"], ["objective.name=beta_vae", "objective.beta=4"],
            ["objective.name=beta_vae", "objective.schedule=linear", "objective.warmup_steps=50"],
            ["objective.name=sigma_vae", "objective.variance=global_learned"],
            ["objective.name=geco", "objective.kappa=0.2"], ["objective.name=beta_tcvae"])


def test_first_20_steps_match_solo_runs_within_1e_4():
    _assert_batch_matches_solo(_cfgs(20, *VARIANTS))


def test_grouped_runs_keep_their_own_beta_and_sigma():
    cfgs = _cfgs(20, ["objective.decoder=gaussian", "objective.sigma=0.1"],
                 ["objective.decoder=gaussian", "objective.sigma=0.3", "train.seed=1"],
                 ["objective.name=beta_vae", "objective.beta=2"],
                 ["objective.name=beta_vae", "objective.beta=8", "objective.schedule=linear",
                  "objective.warmup_steps=10"], ["objective.name=beta_tcvae"])
    assert Trainer(cfgs, [MemorySink() for _ in cfgs])._groups() == [[0, 1], [2, 3], [4]]
    _assert_batch_matches_solo(cfgs)


def _spoil_after_step_0(member) -> None:
    """NaN training inputs from step 1 on. The step-0 evaluation reads the training split too (σ* and NLL* are
    calibrated on it), so the data are spoiled right after it: the run diverges in training, at step 1."""
    evaluate = member.evaluate

    def evaluate_then_spoil(t):
        evaluate(t)
        member.x[:] = float("nan")

    member.evaluate = evaluate_then_spoil


def test_a_diverging_member_of_a_group_ends_alone():
    cfgs = _cfgs(100, ["train.seed=0"], ["train.seed=1"], ["train.seed=2"])
    sinks = [MemorySink() for _ in cfgs]
    trainer = Trainer(cfgs, sinks)
    _spoil_after_step_0(trainer.members[1])
    results = trainer.run()
    assert isinstance(results[1], Diverged) and results[1].step == 1
    for k in (0, 2):
        solo = MemorySink()
        train(cfgs[k], solo)
        np.testing.assert_allclose(sinks[k].series("loss")[1], solo.series("loss")[1], rtol=1e-4, atol=1e-6)


def _assert_batch_matches_solo(cfgs):
    solo = [MemorySink() for _ in cfgs]
    for cfg, sink in zip(cfgs, solo):
        train(cfg, sink)
    together = [MemorySink() for _ in cfgs]
    results = train_batched(cfgs, together)
    assert all(r.steps == 20 for r in results)
    for a, b in zip(solo, together):
        names = {n for _, split, n, _ in a.rows if split == "train"}
        assert names >= {"loss", "rate", "distortion", "mse"}
        for name in names:
            sa, va = a.series(name)
            sb, vb = b.series(name)
            assert sa.tolist() == sb.tolist() == list(range(1, 21))
            np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-6)
        assert sorted(b.snapshots) == [0, 20]
        np.testing.assert_allclose(b.snapshots[20]["mu"], a.snapshots[20]["mu"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_final_eval_metrics_equal_solo_runs_in_float64_after_2000_steps(tmp_path):
    """A batch and its runs alone, 2,000 steps in float64, agree to 1e-9 relative: the stacked and the
    solo step differ only in summation order (~1e-16 a step), measured ≤ 1e-14 apart at the end. In
    float32 the same comparison drifts by as much as seed-to-seed noise and proves nothing."""
    cfgs = _cfgs(2000, ["train.seed=0"], ["objective.name=beta_vae", "objective.beta=2"], ["train.seed=1"])
    cfgs = [cfg.with_overrides(["train.dtype=float64"]) for cfg in cfgs]
    together = [MemorySink() for _ in cfgs]  # the two VAE runs share one group loss
    train_batched(cfgs, together, workdirs=[tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    for cfg, sink in zip(cfgs, together):
        solo = MemorySink()
        train(cfg, solo)
        for name in ("elbo", "rate", "distortion", "nll_sigma_free"):
            a, b = solo.series(name, "eval")[1][-1], sink.series(name, "eval")[1][-1]
            np.testing.assert_allclose(b, a, rtol=1e-9, err_msg=name)
    assert (tmp_path / "a" / "checkpoint.pt").exists() and (tmp_path / "b" / "checkpoint.pt").exists()


def test_a_diverging_member_ends_alone():
    cfgs = _cfgs(300, ["train.seed=0"], ["train.seed=1"])
    cfgs[1] = cfgs[1].with_overrides(["objective.name=beta_vae", "objective.beta=1"])
    sinks = [MemorySink() for _ in cfgs]
    # make member 1 diverge by poisoning its data after the step-0 evaluation: NaN inputs from step 1
    trainer = Trainer(cfgs, sinks)
    _spoil_after_step_0(trainer.members[1])
    results = trainer.run()
    assert isinstance(results[1], Diverged) and results[1].step == 1
    assert results[0].steps == 300 and sinks[0].series("loss")[0].tolist() == list(range(1, 301))


def test_incompatible_runs_are_refused():
    a, b = _cfgs(10, ["train.seed=0"], ["model.latent_dim=3"])
    with pytest.raises(ConfigError, match="model"):
        check_batchable([a, b])


def test_worker_trains_a_queued_batch_as_one_and_stores_each_run():
    from vaeviz.runs import RunStore
    from vaeviz.worker import work

    store = RunStore()
    cfgs = _cfgs(30, ["train.seed=0"], ["objective.name=beta_vae", "objective.beta=3"], ["train.seed=2"])
    ids = store.create_batch(cfgs)
    solo_id = store.create_run(cfgs[0])  # a separate run, claimed on its own after the batch
    claimed = []
    assert work(store, exit_when_idle=True, log=claimed.append) == 4
    assert sum("started" in line for line in claimed) == 4
    for run_id, cfg in zip(ids, cfgs):
        rec = store.get(run_id)
        assert rec.status == "done" and rec.batch is not None and rec.step == 30
        expect = MemorySink()
        train(cfg, expect)
        got = store.metrics(run_id, split="train", names=["loss"])
        np.testing.assert_allclose(got["value"].to_numpy(), expect.series("loss")[1], rtol=1e-4)
        assert store.snapshot_steps(run_id) == [0, 30]
    assert store.get(solo_id).batch is None and store.get(solo_id).status == "done"


NETS = [["model.covariance=full"], ["model.arch=conv", "model.hidden=8,16"],
        ["objective.name=sigma_vae", "objective.variance=network", "objective.warmup_steps=5"]]


@pytest.mark.parametrize("net", NETS)
def test_full_covariance_conv_and_variance_head_batches_match_solo(net):
    cfgs = [c.with_overrides(net) for c in _cfgs(12, ["train.seed=0"], ["train.seed=3"])]
    solo = [MemorySink() for _ in cfgs]
    for cfg, sink in zip(cfgs, solo):
        train(cfg, sink)
    together = [MemorySink() for _ in cfgs]
    train_batched(cfgs, together)
    for a, b in zip(solo, together):
        np.testing.assert_allclose(b.series("loss")[1], a.series("loss")[1], rtol=1e-4, atol=1e-5)
