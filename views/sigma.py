"""σ² evolution: a learned or closed-form decoder variance against step, β = 2σ², the per-pixel σ² map, whether σ
reached its floor σ_min, and held-out reconstructions at the chosen step."""

import streamlit as st

from vaeviz import app_state, plots
from vaeviz.objectives import REGISTRY
from views import common

st.title("σ² evolution")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "A Gaussian decoder with variance σ² weighs the squared error by 1/(2σ²), so it is a β-VAE with β = 2σ² in "
    "disguise: choosing σ is choosing the balance between reconstruction and rate. The σ-VAE learns σ instead of "
    "guessing it; with one shared σ its optimum is the batch MSE (σ*², eq. 6), so σ² falls as reconstructions "
    "improve and the effective β falls with it. Compare the curve with the batch MSE, then try the per-pixel "
    "variance modes and look at the map: pixels the model cannot predict keep a large σ².",
    r"-\log p(x|z)=\tfrac d2\log 2\pi + d\log\sigma + \frac{\|x-g(z)\|^2}{2\sigma^2},\qquad "
    r"\sigma^{*2}=\frac{1}{Bd}\sum_i\|x_i-g(z_i)\|^2,\qquad \beta_{\mathrm{eq}}=2\sigma^2",
)

df = common.metrics(rec.id, split="train", names=["sigma2", "sigma2_min", "sigma2_max", "mse"])
if df.empty:
    st.info("No metrics yet.")
    st.stop()
if not REGISTRY[rec.objective].logs("sigma2"):
    st.info(f"This run ({rec.objective}) has no learned decoder variance; the curve shows the batch MSE, which is "
            f"the closed-form σ*² a σ-VAE would use. Pick {app_state.runs_that_log('sigma2')} for the full view.")
common.bound_notice(rec, ("sigma2", "sigma2_min"), "σ² reached its floor")
step = common.step_scrubber(common.store().snapshot_steps(rec.id), "sigma", "Step of the per-pixel map")
snap = common.snapshot(rec.id, step) if step is not None else {}
fig = plots.sigma_evolution(df, snap.get("sigma2"), common.data_shape(rec), step)
st.plotly_chart(fig, key="sigma_chart")
if "sigma2_per_image" in snap:  # σ-VAE's per-image closed form: one σ*ᵢ per image of the batch
    sigma_min = getattr(rec.config.objective.params, "sigma_min", None)  # the hard floor of σ*ᵢ
    st.plotly_chart(plots.sigma_spread(snap["sigma2_per_image"], step, sigma_min), key="sigma_spread_chart")
    st.caption("Solved per image, σ*ᵢ² = ‖xᵢ − g(zᵢ)‖²/d is each image's own reconstruction error: an image the "
               "model reconstructs badly gets a large σᵢ and so a small weight 1/(2σᵢ²) on its error, so the hard "
               "images no longer dominate the gradient the way they do under one shared σ* (the dashed line). "
               "Held-out metrics still score every image at the one σ* of the training split.")
st.subheader("Reconstructions")
common.reconstruction_panel(rec, step, "sigma_recon")
