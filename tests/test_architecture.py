"""The architecture's promises: torch-free leaves, no import cycles, objectives described by their own classes
(no name switches outside `vaeviz/objectives/`), and a new objective added the documented way trains and shows
on every page."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch
from test_app import PAGES, app, make_run, page, problems

from vaeviz.config import ModelConfig, RunConfig
from vaeviz.knobs import knob
from vaeviz.nets import build_model
from vaeviz.objective_params import PARAMS, Params
from vaeviz.objectives import REGISTRY, STANDARD_TERMS, Chart, Losses, Objective, build_objective
from vaeviz.runs import RunStore

REPO = Path(__file__).resolve().parents[1]
LEAVES = ("vaeviz.config", "vaeviz.control", "vaeviz.knobs", "vaeviz.objective_params")
APP_CODE = ["app.py", "views", "vaeviz"]  # where no code may switch on an objective's name ...
NAMES_AS_DATA = ["vaeviz/objectives", "vaeviz/objective_params.py", "vaeviz/presets.py"]  # ... but here


# -- imports -----------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((REPO / "vaeviz").rglob("*.py"))}


def imported(tree: ast.AST, in_functions: bool) -> list[str]:
    """The modules a file imports at module level (or only inside functions), as dotted names; `from a import b`
    gives `a.b` when that is a module. Imports under `if TYPE_CHECKING:` are skipped."""
    out: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inside == in_functions and isinstance(child, ast.Import):
                out.extend(a.name for a in child.names)
            elif inside == in_functions and isinstance(child, ast.ImportFrom) and child.module and not child.level:
                out.extend(f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in MODULES else child.module
                           for a in child.names)
            visit(child, inside)

    visit(tree, False)
    return out


def import_graph(in_functions: bool = False) -> dict[str, set[str]]:
    """vaeviz module -> the vaeviz modules importing it runs: the imported module and every package above it
    that is not above the importer (those are already initialised)."""
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for target in imported(ast.parse(path.read_text(encoding="utf-8")), in_functions):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and not (name == dep or name.startswith(dep + ".")):
                    edges.add(dep)
        graph[name] = edges
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds an import cycle)."""
    reach = {node: reachable(graph, node) for node in graph}
    groups = {frozenset(m for m in reach[node] if node in reach[m]) for node in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_import_inside_a_function_dodges_a_cycle():
    """A late import (inside a function) must not be one that would close a cycle at module level."""
    top, late = import_graph(), import_graph(in_functions=True)
    dodges = [(a, b) for a, targets in late.items() for b in sorted(targets) if a in reachable(top, b)]
    assert dodges == []


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_leaves_are_torch_free():
    """The run config, the knobs and the run-control exceptions import, and a config of every objective is built
    and validated, without torch (in a fresh interpreter)."""
    code = (f"import sys; import {', '.join(LEAVES)}; from vaeviz.config import RunConfig; "
            "from vaeviz.objective_params import PARAMS; "
            "[RunConfig().with_overrides({'objective.name': name}) for name in PARAMS]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


# -- objective metadata ------------------------------------------------------------------------


def name_switches(path: Path, names: set[str]) -> list[str]:
    """`x == "geco"`, `x in ("geco", ...)` and `{"geco": ...}` in a file: code that switches on an objective name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            operands += [e for o in operands if isinstance(o, (ast.Tuple, ast.List, ast.Set)) for e in o.elts]
        elif isinstance(node, ast.Dict):
            operands = [k for k in node.keys if k is not None]
        else:
            continue
        if any(isinstance(o, ast.Constant) and o.value in names for o in operands):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_name_switches_outside_the_objectives():
    files = [p for root in APP_CODE for p in ([REPO / root] if root.endswith(".py") else (REPO / root).rglob("*.py"))
             if not any(p.is_relative_to(REPO / skip) for skip in NAMES_AS_DATA)]
    assert len(files) > 20
    assert [hit for p in files for hit in name_switches(p, set(REGISTRY))] == []


def test_registries_agree():
    assert list(REGISTRY) == list(PARAMS)
    assert all(REGISTRY[name].Params is PARAMS[name] for name in REGISTRY)


VARIANTS = [{}, {"objective.variance": "per_dim"}, {"objective.variance": "network", "objective.warmup_steps": 0},
            {"objective.variant": "gp"}, {"objective.decoder": "gaussian"}]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_metadata_declares_what_the_objective_logs(name):
    """Every logged term is a standard term or a declared state term; charts and checks only name those."""
    cls = REGISTRY[name]
    declared = {*STANDARD_TERMS, *cls.state_terms}
    assert {t for chart in cls.charts for t in chart.terms} <= declared
    assert set(cls.hidden_knobs) <= {f.name for f in fields(cls.Params)}
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    for overrides in VARIANTS:
        known = {f"objective.{f.name}" for f in fields(cls.Params)}
        if not set(overrides) <= known:
            continue
        cfg = RunConfig().with_overrides({"objective.name": name, **overrides})
        objective = build_objective(cfg.objective, 16)
        model = build_model(ModelConfig(latent_dim=2, hidden=[8]), (16,), objective.net_spec())
        logged = set(objective(model, x, step=1).terms)
        assert set(STANDARD_TERMS) <= logged <= declared, (name, overrides)
        assert isinstance(cls.distortion_kind(cfg.objective.params), str)


# -- a new objective, added the way ARCHITECTURE.md says -----------------------------------------


@dataclass
class L1Params(Params):
    scale: float = knob(0.2, lo=0.0, hi=10.0, lo_open=True, help="scale b of the Laplace decoder")


class L1VAE(Objective):
    """A VAE with a Laplace decoder: D = Σ_k |x_k − g_k(z)|/b + d·log 2b, R = KL(q(z|x) ‖ N(0, I))."""

    Params = L1Params
    state_terms = ("mae",)  # mean absolute error per dimension
    charts = (Chart(("mae",)),)

    def nll(self, p):
        b = self.params.scale
        return (p.x - p.x_mean).abs().sum(-1) / b + p.x.shape[-1] * math.log(2 * b)

    def loss(self, p, step, model=None):
        distortion, rate = self.nll(p).mean(), p.q.kl().mean()
        loss = distortion + rate
        terms = {"loss": loss, "rate": rate, "distortion": distortion, "mse": p.mse(),
                 "mae": (p.x - p.x_mean).abs().mean()}
        return Losses(loss, {k: v.detach() for k, v in terms.items()})


@pytest.fixture
def l1_vae(monkeypatch) -> str:
    """L1VAE registered as `l1_vae`: its knobs in PARAMS, its class in REGISTRY."""
    monkeypatch.setitem(PARAMS, "l1_vae", L1Params)
    monkeypatch.setitem(REGISTRY, "l1_vae", L1VAE)
    return "l1_vae"


def test_a_new_objective_trains_and_shows_on_every_page(l1_vae, monkeypatch, tmp_path):
    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: None)
    store = RunStore(tmp_path / "l1")
    short = {"train.steps": 20, "train.eval_every": 10, "train.checkpoint_every": 10}
    other = make_run(store, {**short, "objective.name": "vae"})
    run_id = make_run(store, {**short, "objective.name": l1_vae, "objective.scale": 0.5})
    rec = store.get(run_id)
    assert (rec.status, rec.objective, rec.config.objective.scale) == ("done", l1_vae, 0.5)
    at = app(store, monkeypatch, run=run_id)
    failures, table = {}, ""
    for name in PAGES:
        page(at, name)
        if name == "compare":
            at.multiselect(key="cmp_pick").set_value([run_id, other]).run()
            table = at.button(key="cmp_eval").click().run().get("plotly_chart")[-1].proto.spec
        if problems(at):
            failures[name] = problems(at)
    assert not failures
    assert '"l1_vae"' in table and '"iwae"' in table  # Compare's metrics table: its held-out ELBO, IWAE from its nll
    page(at, "train")
    assert [c for c in at.get("plotly_chart") if '"text":"mae"' in c.proto.spec]  # its state series, charted live
    at.selectbox(key="cfg:objective.name").set_value(l1_vae).run()
    assert at.number_input(key=f"cfg:{l1_vae}:objective.scale").value == 0.2  # its knob, on the Train form
