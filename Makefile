# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv run migrate test test-fast test-faults reliability bench lint format messages clean

help:
	@echo "make run     - install, migrate, create the demo login, start web + worker + beat (Ctrl-C stops all)"
	@echo "make test    - the whole test suite (real PostgreSQL and Redis when they answer)"
	@echo "make test-faults - only the fault-injection suite (tests/faults)"
	@echo "make reliability - run the fault suite and write docs/reliability.md"
	@echo "make bench   - the throughput benchmark (raw Celery, tracked, django-celery-results) -> docs/performance.md"
	@echo "make lint    - ruff check, ruff format --check, mypy"
	@echo "make messages - recompile the translations"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

migrate: venv
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py setup_demo

run: migrate
	@echo ""
	@echo "  Web:    http://127.0.0.1:8000/admin/   (log in with the demo login above)"
	@echo "  API:    http://127.0.0.1:8000/api/tasks/"
	@echo "  Token:  $(BIN)/python manage.py create_api_token demo   (the token is the last line)"
	@echo "  Broker: $${CELERY_BROKER_URL:-embedded (SQLite file in var/)}   Database: $${DATABASE_URL:-embedded (var/db.sqlite3)}"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start

test: venv
	$(BIN)/python -m pytest

test-faults: venv
	LTT_FAULTS_CONTROL_SERVICES=1 $(BIN)/python -m pytest tests/faults

reliability: venv
	mkdir -p var
	LTT_FAULTS_CONTROL_SERVICES=1 LTT_RELIABILITY_RESULTS=var/reliability.json $(BIN)/python -m pytest tests/faults
	$(BIN)/python scripts/reliability_report.py var/reliability.json docs/reliability.md

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.report

test-fast: venv
	$(BIN)/python -m pytest -m "not services" --ignore=tests/test_e2e_embedded.py --ignore=tests/faults

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy long_time_task demo tests scripts

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

messages: venv
	cd long_time_task && ../$(BIN)/django-admin makemessages -l zh_Hans --no-obsolete && ../$(BIN)/django-admin compilemessages

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
