"""Home: the runs in the store, newest first."""

import pandas as pd
import streamlit as st

from vaeviz.runs import RunStore

st.title("vaeviz")
st.caption("Reconstruction vs regularisation, live: train VAE-family models and watch the trade-off.")

runs = RunStore().list_runs()
if not runs:
    st.info("No runs yet. Start one with `vaeviz train --preset vae-digits` or from the Train page.")
else:
    table = pd.DataFrame([r.to_dict() for r in runs])
    st.dataframe(table[["id", "name", "status", "objective", "dataset"]], hide_index=True, use_container_width=True)
