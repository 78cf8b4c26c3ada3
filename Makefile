# Concord's two commands: `make run` (serve at http://127.0.0.1:8000) and `make test`.
# Both create .venv and install the project from pyproject.toml on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The tests run against the real PostgreSQL and Redis on loopback unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/concord
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint install browser services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser tests, from Debian's packages (no browser downloads).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

# PgBouncer for the transaction-pooling test (tests/test_pooler.py) and bench/soak.py
# --pgbouncer, from Debian's packages; the tests start their own instance.
services:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }

run: $(STAMP)
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py seeddemo
	DEBUG=1 $(BIN)/python manage.py runserver 127.0.0.1:8000

# The whole suite, then the assignment, pipeline and quality tests again with PostgreSQL's
# fast path off (CONCORD_FASTPATH=0): both write paths run in CI (on SQLite the second run
# repeats the ORM path).
test: $(STAMP) browser services
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	CONCORD_FASTPATH=0 DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
		REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python -m pytest -p no:cacheprovider -q tests/assignments tests/pipeline tests/quality $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
