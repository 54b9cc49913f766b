# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The django.tasks comparison runs on Python 3.12 and Django 6.x (django-tasks-celery supports nothing older).
PYTHON312 ?= env PYENV_VERSION=3.12.1 python
VENV312 ?= .venv-py312
STAMP := $(VENV)/.installed

.PHONY: help venv run migrate test test-deps test-fast test-faults test-hosts test-browser screenshots reliability bench bench-deps bench-throughput bench-api bench-scale bench-schedules bench-instructions bench-django-tasks bench-django-tasks-run lint format messages clean

help:
	@echo "make run     - install, migrate, create the demo login, start web + worker + beat (Ctrl-C stops all;"
	@echo "               WEB_PORT=8001 for another port)"
	@echo "make test    - install what the tests need (chromium), then the whole test suite (real PostgreSQL"
	@echo "               and Redis when they answer)"
	@echo "make test-faults - only the fault-injection suite (tests/faults)"
	@echo "make test-hosts - only the hosts suite (tests/hosts: web and workers on hosts of their own, network"
	@echo "               namespaces; partitions, a killed host, clocks 30 s off; root)"
	@echo "make test-browser - only the dashboard's browser tests (tests/browser, Debian's chromium)"
	@echo "make screenshots - run the browser tests and save the dashboard screenshots into docs/img"
	@echo "make reliability - run the fault, hosts and broker-failover suites and write docs/reliability.md"
	@echo "make bench   - all the benchmarks below, then docs/performance.md (about 50 minutes)"
	@echo "make bench-throughput - raw Celery, tracked, django-celery-results side by side (seed and Celery delivery)"
	@echo "make bench-api - the API (submit, detail, list) under load: gunicorn + wrk"
	@echo "make bench-scale - list latency at 100k, 1M and 10M rows (about 5 GB in PostgreSQL)"
	@echo "make bench-schedules - a scheduler tick with nothing due and with 1,000 due, at 1k, 10k and 100k schedules"
	@echo "make bench-instructions - instructions per submit, publish and worker run (valgrind's callgrind)"
	@echo "make bench-django-tasks - Django's tasks API: this backend, django-tasks-db, django-tasks-celery side by"
	@echo "               side (Python 3.12, Django 6.x, in $(VENV312); PYTHON312=... names the interpreter)"
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

# scripts/run migrates, creates the demo login, prints the URLs (port WEB_PORT, default 8000) and runs the
# Procfile under honcho; Ctrl-C stops every process and ends with status 0. `exec`: no shell in between, which
# would die of the Ctrl-C itself (and make report "Interrupt").
run: venv
	exec env PATH="$(abspath $(BIN)):$$PATH" scripts/run

# The broker failovers (tests/brokers) run in a pytest process of their own: they switch this process's Celery app to
# brokers they start and stop, and in one long session with everything else a pool of the session's was found closed.
# (Status 5, nothing collected, is fine: `-m "not once"` deselects them all.)
test: venv test-deps
	$(BIN)/python -m pytest --ignore=tests/brokers
	$(BIN)/python -m pytest tests/brokers; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

# What the tests need besides the virtualenv: Debian's chromium for the dashboard's browser tests (Playwright's
# own browser download is not used), Debian's prometheus (with promtool) for the metrics tests, and Debian's nginx,
# supervisor, systemd (systemd-analyze) and openssl for the deployment recipes' tests (tests/deploy: they start
# their own nginx and supervisord, so the services Debian starts on install can be disabled: systemctl disable
# --now nginx supervisor), and Debian's redis-server and redis-sentinel for the Sentinel failover test (tests/brokers:
# it starts its own on free ports), each installed here when missing, as root or with sudo.
test-deps:
	@command -v "$${LTT_CHROMIUM:-chromium}" >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; }
	@{ command -v "$${LTT_PROMETHEUS:-prometheus}" && command -v "$${LTT_PROMTOOL:-promtool}"; } >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus \
		|| { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }; }
	@{ command -v "$${LTT_NGINX:-/usr/sbin/nginx}" && command -v "$${LTT_SUPERVISORD:-supervisord}" \
		&& command -v "$${LTT_SYSTEMD_ANALYZE:-systemd-analyze}" && command -v "$${LTT_OPENSSL:-openssl}"; } >/dev/null 2>&1 \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx supervisor systemd openssl \
		|| { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx supervisor systemd openssl; }; }
	@{ command -v "$${LTT_REDIS_SERVER:-redis-server}" && command -v "$${LTT_REDIS_SENTINEL:-redis-sentinel}"; } >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel \
		|| { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel; }; }

test-browser: venv test-deps
	$(BIN)/python -m pytest tests/browser

screenshots: venv test-deps
	LTT_DASHBOARD_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/browser

test-faults: venv
	LTT_FAULTS_CONTROL_SERVICES=1 $(BIN)/python -m pytest tests/faults

# The hosts suite: each host a network namespace (ip netns, veth links), so it runs as root; part of `make test`.
test-hosts: venv
	$(BIN)/python -m pytest tests/hosts

reliability: venv test-deps
	mkdir -p var
	LTT_FAULTS_CONTROL_SERVICES=1 LTT_RELIABILITY_RESULTS=var/reliability.json $(BIN)/python -m pytest \
		tests/faults tests/hosts tests/brokers
	$(BIN)/python scripts/reliability_report.py var/reliability.json docs/reliability.md

# The API benchmark's load generator is wrk (Debian's package), installed here when missing.
bench-deps: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y wrk || { $$SUDO apt-get update && $$SUDO apt-get install -y wrk; }; }

bench: bench-deps
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.run --delivery celery-defaults --no-memory
	$(BIN)/python -m bench.run --layout servers-apart --no-memory
	$(BIN)/python -m bench.run --layout servers-apart --delivery celery-defaults --no-memory
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.scale --sizes 100000 1000000 10000000
	$(BIN)/python -m bench.schedules --sizes 1000 10000 100000
	$(MAKE) bench-django-tasks-run
	$(MAKE) bench-instructions

bench-throughput: bench-deps
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.run --delivery celery-defaults --no-memory
	$(BIN)/python -m bench.run --layout servers-apart --no-memory
	$(BIN)/python -m bench.run --layout servers-apart --delivery celery-defaults --no-memory
	$(BIN)/python -m bench.report

bench-api: bench-deps
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.report

bench-schedules: bench-deps
	$(BIN)/python -m bench.schedules --sizes 1000 10000 100000
	$(BIN)/python -m bench.report

bench-scale: bench-deps
	$(BIN)/python -m bench.scale --sizes 100000 1000000 10000000
	$(BIN)/python -m bench.report

# Django's tasks API through this project's backend, django-tasks-db and django-tasks-celery, in the same run
# (bench/django_tasks.py), in a Python 3.12 virtualenv of its own: the report is then written from the usual one.
bench-django-tasks-run:
	$(MAKE) bench-deps VENV=$(VENV312) PYTHON="$(PYTHON312)"
	$(VENV312)/bin/python -m bench.django_tasks

bench-django-tasks: bench-deps bench-django-tasks-run
	$(BIN)/python -m bench.report

# Instructions per operation under valgrind's callgrind (Debian's valgrind, installed here when missing).
bench-instructions: bench-deps
	@command -v valgrind >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y valgrind || { $$SUDO apt-get update && $$SUDO apt-get install -y valgrind; }; }
	$(BIN)/python -m bench.instructions
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
	cd long_time_task && ../$(BIN)/django-admin makemessages -l zh_Hans --no-obsolete --ignore 'dashboard/*' && ../$(BIN)/django-admin compilemessages --ignore 'dashboard/*'
	cd long_time_task/dashboard && ../../$(BIN)/django-admin makemessages -l zh_Hans --no-location && ../../$(BIN)/django-admin compilemessages

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
