"""Information plane: distortion against rate, one trajectory per run, iso-ELBO guides, a sweep frontier;
deterministic encoders (RAE, AE: no rate) on distortion against the code norm ½‖z‖²."""

import pandas as pd
import streamlit as st

from vaeviz import app_state, plots
from vaeviz.objectives import REGISTRY
from views import common

st.title("Information plane")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "Every model sits at a point (R, D): the rate R is how many nats the code carries about x, the distortion D "
    "how many nats it costs to rebuild x from the code. The negative ELBO is their sum, so the dashed lines of "
    "slope −1 are models with equal ELBO. A β-VAE minimises D + βR: a large β slides the model up and left "
    "(little information, blurry reconstructions), a small β down and right. Launch the same network with "
    "several β (or objectives) and the final points trace the frontier of what this network can achieve; "
    "scrub the step to watch each trajectory move during training.",
    r"-\mathrm{ELBO} = D + R,\qquad R=\mathbb{E}_x\,\mathrm{KL}\big(q(z|x)\,\|\,p(z)\big),\qquad "
    r"D=\mathbb{E}_x\,\mathbb{E}_{q}\big[-\log p(x|z)\big]",
)

runs = {r.id: r for r in common.store().list_runs()}
same = [i for i, r in runs.items() if r.dataset == rec.dataset]
sweep = [i for i in same if i != rec.id and runs[i].config.model == rec.config.model][:5]  # same network: a sweep
picked = st.multiselect("Runs", same, default=[rec.id, *sweep], key=f"ip_runs_{rec.id}",
                        format_func=lambda i: f"{runs[i].name} ({runs[i].objective})",
                        help="Runs on the same dataset; their final points form the frontier.")
split = st.radio("Points", ["eval", "train"], horizontal=True, key="ip_split",
                 help="eval: held-out split at every evaluation; train: every logged training batch (noisy).")


def code_metrics(run_id: str, split: str):
    """z_norm and distortion of `split`; the train split's for a run that logged no held-out z_norm (older runs)."""
    df = common.metrics(run_id, split=split, names=["z_norm", "distortion"])
    return df if "z_norm" in set(df.name) else common.metrics(run_id, split="train", names=["z_norm", "distortion"])


chosen = picked or [rec.id]
coded = [i for i in chosen if REGISTRY[runs[i].objective].logs("z_norm")]  # deterministic encoders: ½‖z‖², no R
ranked = [i for i in chosen if i not in coded]
frames = {runs[i].name: common.metrics(i, split=split, names=["rate", "distortion"]) for i in ranked}
frames = {name: df for name, df in frames.items() if not df.empty}
codes = {runs[i].name: code_metrics(i, split) for i in coded}
codes = {name: df for name, df in codes.items() if not df.empty}
if not frames and not codes:
    st.info("No evaluation yet: the first point appears once the run has started.")
    st.stop()

steps = sorted(set().union(*(df.step for df in [*frames.values(), *codes.values()])))
step = common.step_scrubber(steps, "info_plane", "Replay up to step")
final = []
if frames:
    upto = {name: df[df.step <= step] for name, df in frames.items()}
    same_scale = len({app_state.distortion_kind(runs[i].config) for i in ranked}) == 1
    st.plotly_chart(plots.information_plane(upto, split=split, frontier=same_scale), key="info_plane_chart")
    if not same_scale:
        st.caption("These runs measure D with different decoders, so no frontier is drawn: compare them on the "
                   "σ-independent NLL (Compare page).")
    for name, df in upto.items():
        last = plots.wide(df, split).dropna().tail(1)
        if len(last):
            r, d = float(last.rate.iloc[0]), float(last.distortion.iloc[0])
            final.append({"run": name, "step": int(last.index[0]), "rate R": r, "distortion D": d, "−ELBO": r + d})
if codes:
    st.subheader("Deterministic encoders: distortion against ½‖z‖²")
    common.teach(
        "A deterministic encoder (RAE, plain autoencoder) maps x to one code z = E(x), not to a distribution, so it "
        "has no rate and no ELBO: the information plane has no place for it. RAE replaces the rate by a penalty on "
        "the size of the code, ½‖z‖², so its runs are drawn here on distortion against that code norm; there are "
        "no iso-ELBO lines, and the two axes are not both nats.",
        r"\mathcal L_{\mathrm{RAE}} = \|x-g(z)\|^2 + \beta\,\tfrac12\|z\|^2 + \lambda\,\mathcal L_{\mathrm{REG}},"
        r"\qquad z=E(x)",
    )
    upto = {name: df[df.step <= step] for name, df in codes.items()}
    st.plotly_chart(plots.code_plane(upto, split=split), key="code_plane_chart")
    for name, df in upto.items():
        w = plots.wide(df, split if split in set(df.split) else "train")
        last = w.reindex(columns=["z_norm", "distortion"]).dropna().tail(1)
        if len(last):
            final.append({"run": name, "step": int(last.index[0]), "½‖z‖²": float(last.z_norm.iloc[0]),
                          "distortion D": float(last.distortion.iloc[0])})
st.dataframe(pd.DataFrame(final), hide_index=True)
