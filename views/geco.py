"""GECO dynamics: the Lagrange multiplier λ and the constraint's moving average C_ma against step, in the units
of the run's constraint kind (Rezende & Viola 2018, Table 1: RE, FRE or CLA), and whether λ hit a clamp."""

import streamlit as st

from vaeviz import app_state, plots
from vaeviz.objectives import REGISTRY
from views import common

st.title("GECO dynamics")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "GECO turns the trade-off around: instead of weighting distortion against rate it asks for the smallest rate "
    "whose reconstructions meet a constraint C ≤ 0 with tolerance κ: a reconstruction error per pixel (RE), a "
    "distance in a classifier's features (FRE) or the classifier's confidence in the true label (CLA). The "
    "multiplier λ is the price of the constraint: it grows exponentially while the moving average C_ma is "
    "positive (constraint violated) and decays once it holds, so λ first rises, then settles where the "
    "reconstruction is just good enough. Try a stricter κ and watch λ climb higher and the run move right in the "
    "information plane.",
    r"\min\ R + \lambda\,\hat C,\quad C_{ma}\leftarrow\alpha C_{ma}+(1-\alpha)\bar C,\quad "
    r"\lambda\leftarrow\mathrm{clamp}(\lambda\,e^{\nu C_{ma}},\lambda_{min},\lambda_{max})",
)

PLOTTED = ("lambda", "c_ma")  # the terms this page needs a run to log
if not REGISTRY[rec.objective].logs(*PLOTTED):
    st.info(f"This run's objective (`{rec.objective}`) has no multiplier λ: pick {app_state.runs_that_log(*PLOTTED)} "
            "in the sidebar.")
    st.stop()
params = rec.config.objective.params
kind = REGISTRY[rec.objective].constraint_kind(params)  # the constraint's formula, units and lesson
st.latex(kind.formula)
st.caption(common.plain(f"Constraint: {kind.name}, C in {kind.units}. {kind.lesson}"))
df = common.metrics(rec.id, split="train", names=["lambda", "c_ma", "c_batch", "kappa2", "mse"])
if "lambda" not in set(df.name):
    st.info("No metrics yet.")
    st.stop()
common.bound_notice(rec, ("lambda",), "λ reached its clamp")  # over the whole run, as `vaeviz show` says
step = common.step_scrubber(sorted(set(common.store().snapshot_steps(rec.id)) | {int(df.step.max())}), "geco",
                            "Replay up to step")
df = df[df.step <= max(step, int(df.step.min()))]  # step 0 (before training): the first batch
w = plots.wide(df)
first = plots.first_constraint_step(w)
c1, c2, c3 = st.columns(3)
c1.metric(f"λ at step {w.index[-1]}", f"{w['lambda'].iloc[-1]:.3g}")
c2.metric(f"C_ma at step {w.index[-1]}", f"{w.c_ma.iloc[-1]:.2e}", help=f"in {kind.units}")
c3.metric("constraint first met", f"step {first}" if first is not None else "not yet")
left, right = st.columns([3, 2])
left.plotly_chart(plots.geco_constraint_dynamics(df, kind.name, kind.units, kind.bounds_mse), key="geco_chart")
path = common.metrics(rec.id, names=["rate", "distortion"])
path = path[path.step <= step]
right.plotly_chart(plots.information_plane({rec.name: path}, title="Its path in the information plane"),
                   key="geco_plane")
st.subheader("Reconstructions")
common.reconstruction_panel(rec, step, "geco_recon")
