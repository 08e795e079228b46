"""Train: pick data, network, objective and knobs (or a preset), launch into the queue, watch it train.

The form's values live in the session (kept across pages) and, where they differ from the defaults, in the link
(`?objective.name=beta_vae&objective.sigma=0.05`), so a reload or a shared link opens the same form.
"""

import streamlit as st
import torch

from vaeviz import app_state, plots, worker
from vaeviz.app_state import Knob
from vaeviz.config import DEFAULT_OBJECTIVE, DataConfig, ModelConfig, TrainConfig
from vaeviz.data import DataError, data_dir, describe_datasets
from vaeviz.objectives import REGISTRY
from vaeviz.preflight import preflight
from vaeviz.presets import PRESETS, preset_config
from views import common

TOY_SETS = ("gaussian_mixture", "lines", "circles", "moons", "pinwheel")
TOY_ONLY = ("size", "k", "layout", "noise")
DATA_MAIN = ("name", "n", "per_class")
DATA_NOT_TYPED = ("path",)  # a user .npz is uploaded or picked from the data folder (npz_file), never a typed path
MODEL_MAIN = ("arch", "latent_dim", "hidden")
TRAIN_MAIN = ("steps", "batch_size", "lr", "seed", "device", "eval_every")
state = st.session_state
values: dict = {}  # dotted config key -> value of the widgets drawn in this run


def initial_form() -> dict:
    """The form of a new session: the link's values (`app_state.form_params`), else the defaults."""
    params = st.query_params.to_dict()
    form, refused = app_state.form_from_params(params)
    if refused:
        text = "Not a valid setting, left at its default: " + ", ".join(refused)
        st.toast(common.plain(text), icon=":material/info:")
    if params.get("preset") in PRESETS:
        state["preset"] = params["preset"]
    return form


if "train_form" not in state:
    state["train_form"] = initial_form()
form = state["train_form"]  # widget values, kept across pages


def widget(k: Knob, scope: str = "", on_change=None):
    """One config field as a widget whose bounds and choices are those of the config's validation.

    Objective knobs are scoped by objective (`geco:objective.kappa`): each objective's knobs are widgets of their
    own (bounds differ), and a switch writes the new objective's values explicitly (`objective_changed`).
    """
    wid = f"{scope}:{k.key}" if scope else k.key
    key = "cfg:" + wid
    if key not in state:
        value = form.get(wid, k.default)
        state[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    label, help = k.key.split(".", 1)[1], k.help or None
    if k.kind == "select":
        st.selectbox(label, k.choices, key=key, help=help, on_change=on_change)
    elif k.kind == "bool":
        st.checkbox(label, key=key, help=help)
    elif k.kind == "int":
        lo, hi = (None if b is None else int(b) for b in (k.lo, k.hi))
        st.number_input(label, min_value=lo, max_value=hi, step=1, key=key, help=help)
    elif k.kind == "float":
        lo, hi = (None if b is None else float(b) for b in (k.lo, k.hi))
        st.number_input(label, min_value=lo, max_value=hi, format="%g", key=key, help=help)
    else:
        st.text_input(label, key=key, help=help)
    form[wid] = state[key]
    values[k.key] = state[key]
    return state[key]


@common.guarded
def apply_preset() -> None:
    name = state["preset"]
    state.pop("switch_note", None)
    if name in PRESETS:
        for wid, value in app_state.form_of(preset_config(name)).items():
            form[wid] = value
            state.pop("cfg:" + wid, None)


@common.guarded
def objective_changed() -> None:
    """Carry the knobs that mean the same thing over to the new objective; say which changed or went."""
    old, new = form["objective.name"], state["cfg:objective.name"]
    if old == new or new not in REGISTRY:
        return
    lines = app_state.switch_objective(form, old, new)
    state["switch_note"] = (new, lines)
    for k in app_state.objective_knobs(new):
        state.pop(f"cfg:{new}:{k.key}", None)


def section(cls, prefix, names=None, skip=()):
    return [k for k in app_state.knobs(cls, prefix, skip) if names is None or k.key.split(".")[1] in names]


def config_form() -> dict:
    """Every widget of the form; returns the widget values by dotted key."""
    st.selectbox("Preset", ["(none)", *PRESETS], key="preset", on_change=apply_preset, persist_state="session",
                 help="Load the settings of a seed paper's experiment; edit them before launching.")
    if state.get("preset") in PRESETS:
        st.caption(PRESETS[state["preset"]].description)
    datasets = dict(describe_datasets())
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Data**")
        for k in section(DataConfig, "data", DATA_MAIN):
            if k.key == "data.name":
                k.kind, k.choices = "select", list(datasets)
            widget(k)
            if k.key == "data.name" and form["data.name"] == "npz":
                npz_file()
        st.caption(datasets.get(form["data.name"], ""))
        st.markdown("**Network**")
        for k in section(ModelConfig, "model", MODEL_MAIN):
            widget(k)
    with c2:
        st.markdown("**Objective**")
        objective = widget(Knob("objective.name", "select", DEFAULT_OBJECTIVE, list(REGISTRY)),
                           on_change=objective_changed)
        switch_note(objective)
        for k in app_state.objective_knobs(objective):
            widget(k, scope=objective)
    st.markdown("**Training**")
    cols = st.columns(3)
    for i, k in enumerate(section(TrainConfig, "train", TRAIN_MAIN)):
        with cols[i % 3]:
            widget(k)
    st.caption("Device: auto picks " + ("CUDA" if torch.cuda.is_available() else "the CPU (no CUDA here)") + ".")
    with st.expander("More settings"):
        skip = DATA_MAIN + DATA_NOT_TYPED + (() if form["data.name"] in TOY_SETS else TOY_ONLY)
        extra = section(DataConfig, "data", skip=skip)
        extra += section(ModelConfig, "model", skip=MODEL_MAIN) + section(TrainConfig, "train", skip=TRAIN_MAIN)
        cols = st.columns(4)
        for i, k in enumerate(extra):
            with cols[i % 4]:
                widget(k)
    return dict(values)


def switch_note(objective: str) -> None:
    """After an objective switch: the knobs kept and those changed or dropped."""
    new, lines = state.get("switch_note", (None, []))
    if new == objective and lines:
        st.info(common.plain(" ".join(lines)), icon=":material/swap_horiz:")


def keep_in_url(values: dict) -> None:
    """The form's values that differ from the defaults, in the link: a reload or a shared link opens this form."""
    want = app_state.form_params(values, state.get("preset"))
    for key in [k for k in st.query_params if app_state.is_form_param(k) and k not in want]:
        del st.query_params[key]
    for key, text in want.items():
        if st.query_params.get(key) != text:
            st.query_params[key] = text


def npz_file() -> None:
    """data.path of a user .npz: an uploaded file, or one of the .npz files of the data folder ($VAEVIZ_DATA_DIR)."""
    folder = app_state.npz_files(data_dir())
    source = "upload"
    if folder:
        source = st.radio("file", ["upload", "data folder"], horizontal=True, key="npz_source", persist_state="session")
    if source == "data folder":
        name = st.selectbox("data folder file", folder, key="npz_folder_file", persist_state="session")
        path = str(data_dir() / name)
        values["data.path"], state["npz_names"] = path, {path: name}
        return
    limit = app_state.upload_limit_mb()
    upload = st.file_uploader(f"npz file: x (N, H, W) or (N, D), optional labels y; up to {limit} MB", type="npz",
                              key="npz_upload", max_upload_size=limit)
    if upload is not None and upload.file_id != state.get("npz", {}).get("id"):
        state["npz"] = receive(upload, limit)
    got = state.get("npz")
    if got and got["error"]:
        st.error(common.plain(got["error"]), icon=":material/error:")
    elif got:
        st.caption(f"Using {common.plain(got['name'])}: {got['n']:,} examples.")
        values["data.path"], state["npz_names"] = got["path"], {got["path"]: got["name"]}


def receive(upload, limit_mb: int) -> dict:
    """Store an upload under $VAEVIZ_HOME/uploads (named by its content) and validate it with the data loader;
    an invalid file is removed again."""
    got = {"id": upload.file_id, "name": upload.name, "path": None, "n": 0, "error": None}
    if upload.size > limit_mb * 2**20:
        got["error"] = f"{upload.name} is {upload.size / 2**20:,.0f} MB; the limit is {limit_mb} MB."
        return got
    path = app_state.save_upload(upload.getvalue(), common.store().home)
    try:
        got["n"], got["path"] = app_state.check_npz(path, upload.name), str(path)
    except DataError as exc:
        path.unlink(missing_ok=True)
        got["error"] = str(exc)
    return got


def launch(values: dict) -> None:
    """Validate (the config, then the pre-flight checks of device, data and network), enqueue, start a worker;
    refuse with the message of the check that failed."""
    if values.get("data.name") == "npz" and not values.get("data.path"):
        st.error("Upload a .npz file (or pick one from the data folder) first.", icon=":material/error:")
        return
    try:
        cfg = app_state.build_config(values, state.get("run_name") or preset_name(values["objective.name"]))
        preflight(cfg)  # device, data, network and its size: what would fail once training started fails here
    except Exception as exc:  # noqa: BLE001 - ConfigError, DataError or anything else the checks refuse
        common.show_error(exc, state.get("npz_names"))
        return
    s = common.store()
    run_id = s.create_run(cfg, cfg.name)
    worker.ensure_worker(s)
    st.toast(f"Queued run {run_id}")
    common.select_run(run_id)


def preset_name(objective: str) -> str | None:
    """A run launched from a preset is named after it (`micro-mnist-2d`, `micro-mnist-2d-2` when taken)."""
    preset = state.get("preset")
    if preset not in PRESETS:
        return None
    return app_state.preset_run_name(preset, objective, [r.name for r in common.store().list_runs()])


def active_runs() -> tuple:
    """(id, status) of every queued or running run: when it changes, the whole page reruns."""
    s = common.store()
    return tuple((r.id, r.status) for status in app_state.ACTIVE for r in s.list_runs(status))


def run_view(rec) -> None:
    """Progress, live curves and error of one run: rate and distortion, then the charts its objective declares."""
    p = app_state.progress(rec)
    st.progress(p.fraction, text=f"**{common.plain(rec.name)}** ({rec.status}) · {p.text}")
    common.run_error(rec)
    df = common.live_metrics(rec.id)
    if df.empty:
        st.caption("Waiting for the first metrics…")
        return
    objective = REGISTRY[rec.objective]
    names = ["rate", "distortion"] + (["loss"] if objective.chart_loss else [])
    st.plotly_chart(plots.metric_lines(df, names, title=", ".join(names)), key="live_chart")
    for i, chart in enumerate(objective.charts):
        names = list(chart.terms)
        st.plotly_chart(plots.metric_lines(df, names, log_y=chart.log_y, title=", ".join(names)), key=f"live_state{i}")
    if objective.chart_caption:
        st.caption(objective.chart_caption)


def queue(runs: tuple) -> None:
    st.subheader("Queue")
    if not runs:
        st.caption("Nothing queued or running.")
        return
    recs = [common.store().get(run_id) for run_id, _ in runs]
    st.dataframe([{"name": r.name, "status": r.status, "progress": app_state.progress(r).text, "id": r.id}
                  for r in recs], hide_index=True)


def right_panel() -> None:
    """The selected run and the queue, polled by a fragment only while some run is queued or running."""
    at_render = active_runs()
    run_id = state.get("run")
    if run_id:
        st.subheader("Run")
        active = common.is_active(common.store().get(run_id))
        if active and st.button("Cancel", icon=":material/stop_circle:", key="cancel"):
            status = common.store().request_cancel(run_id)
            st.toast(f"Run {run_id}: {'cancelled' if status == 'cancelled' else 'cancel requested'}")
        if not active and st.button("Explore", icon=":material/travel_explore:", key="explore"):
            st.switch_page("views/info_plane.py")

    @st.fragment(run_every=common.POLL_SECONDS if at_render else None)
    @common.guarded
    def live():
        runs = active_runs()
        if runs != at_render:
            st.rerun()  # a run started, finished or was queued: redraw the page (sidebar, buttons, polling)
        if run_id:
            run_view(common.store().get(run_id))
        queue(runs)

    live()


st.title("Train")
left, right = st.columns([5, 4], gap="large")
with left:
    values = config_form()
    keep_in_url(values)
    st.text_input("Run name (optional)", key="run_name", persist_state="session")
    if st.button("Launch", type="primary", icon=":material/rocket_launch:", key="launch"):
        launch(values)
with right:
    right_panel()

