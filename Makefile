# flashbeam: `make run` runs the README's main job, `make test` the test suite.
#
# Installs are locked: `requirements.lock` holds the exact versions the suite last passed with,
# and every venv here is installed under it (`make lock` refreshes it). `make test-latest` runs
# the suite on the newest releases instead, in a venv of its own, so drift shows early.
PYTHON ?= python3
VENV := .venv
LATEST_VENV := .venv-latest
LOCK := requirements.lock
TORCH_VERSION := 2.13.0
EXTRAS := test
JOB ?= jobs/extract_invoices.yaml

.PHONY: run test test-latest lint format venv lock clean

# The pinned CPU build of torch first: an unpinned torch pulls GBs of CUDA packages.
define install_torch
	$(1)/bin/python -c "import torch" 2>/dev/null || $(1)/bin/python -m pip install -q torch==$(TORCH_VERSION)
endef

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -c $(LOCK) --upgrade pip
	$(call install_torch,$(VENV))
	$(VENV)/bin/python -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/flashbeam run $(JOB)

# The venv's pytest entry point, never `python -m pytest`: that would put the repository root,
# whose folders are named like PyPI packages (kernels, model, jobs), first on sys.path.
test: venv
	$(VENV)/bin/pytest -q

test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(call install_torch,$(LATEST_VENV))
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[$(EXTRAS)]"
	$(LATEST_VENV)/bin/python -m pip list --format=freeze > $(LATEST_VENV)/versions.txt
	$(LATEST_VENV)/bin/pytest -q -p no:cacheprovider

# Resolve the newest releases that satisfy pyproject.toml in a scratch venv and record them.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	$(call install_torch,.venv-lock)
	.venv-lock/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	{ echo "# Exact versions the test suite passes with; 'make lock' rewrites this file."; \
	  echo "# Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())'), $$(date -u +%Y-%m-%d)"; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v -E '^(flashbeam|wheel)==' | sed -E 's/^(torch==[^+]*)\+.*/\1/'; \
	} > $(LOCK)
	rm -rf .venv-lock

# Style, and the import contracts of pyproject.toml (layers; no circles).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(LATEST_VENV) .venv-lock build *.egg-info
