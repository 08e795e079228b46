# The two commands of the README: `make run` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PORT   ?= 8501
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vaeviz-installed

.PHONY: run test test-fast setup chromium lint bench clean

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

# The app listens on this machine only; `make run ADDRESS=0.0.0.0` serves the network (no login: see README).
# User .npz uploads are capped at VAEVIZ_UPLOAD_MAX_MB, by the app and by Streamlit's own upload limit.
ADDRESS ?= 127.0.0.1
VAEVIZ_UPLOAD_MAX_MB ?= 200
run: setup
	VAEVIZ_UPLOAD_MAX_MB=$(VAEVIZ_UPLOAD_MAX_MB) $(BIN)/streamlit run app.py --server.address $(ADDRESS) \
	  --server.port $(PORT) --server.maxUploadSize $(VAEVIZ_UPLOAD_MAX_MB) --browser.gatherUsageStats false

test: setup chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The inner loop: everything but the browser and slow end-to-end checks.
test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not browser and not slow"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_limit.py
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_app.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
