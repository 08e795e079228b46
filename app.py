"""Streamlit entry point: page config, navigation over views/, and the shared sidebar (run picker, queue badge)."""

import streamlit as st
import torch

from vaeviz.lessons import LESSONS
from views import common, lesson

torch.set_num_threads(1)  # the app shares the cores with its training worker; its analyses are small

st.set_page_config(page_title="vaeviz", page_icon="🧭", layout="wide")
st.set_option("client.showErrorDetails", "type")  # safety net: an error that escapes shows no traceback

PAGES = {
    "Train": [st.Page("views/train.py", title="Train", icon=":material/rocket_launch:", default=True)],
    "Explore": [
        st.Page("views/info_plane.py", title="Information plane", icon=":material/scatter_plot:"),
        st.Page("views/tiling.py", title="Posterior tiling", icon=":material/bubble_chart:"),
        st.Page("views/holes.py", title="Holes", icon=":material/blur_on:"),
        st.Page("views/sigma.py", title="σ² evolution", icon=":material/show_chart:", url_path="sigma"),
        st.Page("views/geco.py", title="GECO dynamics", icon=":material/balance:"),
        st.Page("views/traversals.py", title="Latent traversals", icon=":material/tune:"),
    ],
    "Compare": [st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
                st.Page("views/beta.py", title="β sweep", icon=":material/stacked_line_chart:", url_path="beta")],
    "Lessons": [st.Page(lesson.page(name), title=item.title.split(":")[0], icon=":material/school:",
                        url_path=f"lesson-{name}") for name, item in LESSONS.items()],
    "Runs": [st.Page("views/runs.py", title="Runs", icon=":material/folder_open:")],
}

page = st.navigation(PAGES, expanded=True)  # every lesson listed, none behind "View more"
badge = None
try:
    badge = common.sidebar()
    page.run()
except Exception as exc:  # noqa: BLE001 - no traceback ever reaches a page
    common.show_error(exc)
finally:  # also after st.stop(): the badge counts what the page just launched
    if badge is not None:
        common.queue_badge(badge)
