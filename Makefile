# The two commands of the README: `make run` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PORT   ?= 8501
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vaeviz-installed

.PHONY: run test setup chromium lint bench clean

# (Re)install when pyproject.toml changes or TORCH differs from what the venv was built with.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,peer]"
	@echo "$(TORCH)" > $(STAMP)

setup: $(STAMP)
	@grep -qxF "$(TORCH)" $(STAMP) || { rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP) TORCH="$(TORCH)"; }

# Debian's chromium for the browser tests (installed when missing and running as root).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing (not root): browser tests will be skipped"; fi; \
	fi

run: setup
	$(BIN)/streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

test: setup chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_limit.py
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_app.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
