"""Streamlit entry point: page config, navigation over pages/, and the shared sidebar."""

import streamlit as st

st.set_page_config(page_title="vaeviz", page_icon="🧭", layout="wide")

pages = {
    "vaeviz": [st.Page("pages/home.py", title="Runs", icon="🗂️", default=True)],
}
st.navigation(pages).run()
