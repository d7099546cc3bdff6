# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
# This Makefile's folder: `make -C elsewhere -f …/Makefile .env` still finds manage.py.
HERE := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))

.PHONY: run test install lint typecheck audit pytest proof-kills bench bench-rules bench-drain bench-compare bench-scale clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changed.
$(STAMP): requirements/base.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

install: $(STAMP)

# Local settings for `make run` and manage.py: DEBUG on, mock CRMs on, a random secret key and random secrets for
# the mock CRMs (never their well-known defaults; each mock lists its own: manage.py mock_env). Written once; edit it
# freely. It is git-ignored and never read by the tests.
.env:
	@$(PYTHON) -c 'import secrets; print("\n".join([ \
		"# Local development settings (git-ignored). See docs/deploy.md for every variable.", "DEBUG=1", \
		f"SECRET_KEY={secrets.token_urlsafe(50)}"]))' > .env.new
	@DEBUG=1 $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) $(HERE)manage.py mock_env >> .env.new
	@mv .env.new .env
	@echo "wrote .env (DEBUG=1, a new SECRET_KEY and new mock CRM secrets)"

# Web server on :$(PORT) and a django-q2 cluster in the foreground; Ctrl-C stops both.
run: install .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	@echo "API token:  $(BIN)/python manage.py create_api_token me --staff"
	@echo "Open http://localhost:$(PORT)/docs (log in as a staff user: $(BIN)/python manage.py createsuperuser)"
	PORT=$(PORT) $(BIN)/python -m recordsync.devrun

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/cfn-lint deploy/aws/*.yaml

typecheck: install
	DEBUG=1 $(BIN)/mypy

# Known vulnerabilities in the installed packages; says SKIPPED when no vulnerability database is reachable.
audit: install
	$(BIN)/python .ci/audit.py

pytest: install
	$(BIN)/pytest

test: lint typecheck audit pytest

# Every kind of process killed twice during a drain, and (on PostgreSQL) the database restarted: the same proofs
# make test runs, alone and with their reports printed. With DATABASE_URL and REDIS_URL for the services.
proof-kills: install
	$(BIN)/pytest -s -p no:logging tests/sync/test_kill_matrix.py

bench: install
	$(BIN)/python bench/ingest.py

bench-rules: install
	$(BIN)/python bench/rules.py

bench-drain: install
	$(BIN)/python bench/drain.py

# Flat cost at a million records, workers, the rate limit, lanes, memory, retention and the baselines (about 25 minutes; issue 18).
bench-scale: install
	$(BIN)/pip install --quiet -r requirements/bench.txt
	$(BIN)/python bench/scale.py $(ARGS)

bench-compare: install
	bash bench/before_after.sh $(REV)

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
