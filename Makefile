# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DATABASE_URL_TEST ?= postgres://postgres:postgres@127.0.0.1:5432/spendplane

.PHONY: install run test bench soak lint services

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Serve admin + API with a worker and beat on embedded defaults (SQLite, a
# filesystem broker): nothing else to install or start.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_local
	$(PY) manage.py run_all

services:
	bash .ci/services.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install services lint
	DATABASE_URL=$${DATABASE_URL:-$(DATABASE_URL_TEST)} DJANGO_SETTINGS_MODULE=config.settings.test \
		$(PY) -m pytest

bench: install services
	DATABASE_URL=$${DATABASE_URL:-$(DATABASE_URL_TEST)} DJANGO_SETTINGS_MODULE=config.settings.test \
		$(PY) -m pytest tests/bench -p no:cacheprovider -s -q -o addopts=""

# Chaos soak: real gunicorn, workers SIGKILLed, one PostgreSQL cluster restart,
# then ledger == rollups == counters. It restarts the local cluster, so it runs
# alone (CI runs it after the tests). SOAK_EVENTS=3000 for a short run.
SOAK_EVENTS ?= 20000
export SOAK_EVENTS
soak: install services
	DATABASE_URL=$${DATABASE_URL:-$(DATABASE_URL_TEST)} DJANGO_SETTINGS_MODULE=config.settings.test \
		$(PY) -m pytest tests/soak -m soak -p no:cacheprovider -s -q
