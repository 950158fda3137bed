# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: demo test test-containers test-cluster check pytest stack down clean schemas bench

## Start Kafka + Postgres, the projector and query API, and run the demo service against them.
demo: stack
	deploy/local/services.sh start
	state=$${AUDIT_STACK_DIR:-$${TMPDIR:-/tmp}/audit-trail-stack}; source $$state/env && source $$state/demo.env && \
	  AUDIT_DEMO_TOKEN=$$(cat $$state/demo-token) $(VENV)/audit-producer demo --api http://127.0.0.1:$${AUDIT_QUERY_PORT:-8080}

## Lint, type-check and run the whole test suite (the suite starts the stack itself if needed).
test: check pytest

check: .venv/.ok
	deploy/local/tools.sh helm --background
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

pytest: .venv/.ok
	$(VENV)/pytest

## The container suite: a loopback-only Docker engine, our images, the end-to-end tests on testcontainers-started
## Kafka and Postgres, and the compose smoke test (deploy/containers/suite.sh; about 10 minutes on a fresh machine).
test-containers: .venv/.ok
	deploy/containers/suite.sh

## The fault tests on a three-broker KRaft cluster (stack.sh up cluster) and PostgreSQL under pg_auto_failover
## (stack.sh up ha): leader killed and frozen, controller killed, a projector killed mid-stream, two brokers down, the
## primary killed and frozen; each bounded, about five minutes in all.
test-cluster: .venv/.ok
	AUDIT_TEST_CLUSTER=1 $(VENV)/pytest -p no:cacheprovider -rfEP tests/cluster  # -rP: each fault test prints its figures; -rfE: and what failed

stack: .venv/.ok
	deploy/local/stack.sh up

.venv/.ok: pyproject.toml schemas/pyproject.toml services/producer/pyproject.toml services/audit_projector/pyproject.toml services/query_api/pyproject.toml deploy/local/python-env.sh
	deploy/local/python-env.sh
	touch $@

## Stop the services and the stack (data kept); `make clean` also deletes the data.
down:
	-deploy/local/services.sh stop
	deploy/local/stack.sh down

clean: down
	deploy/local/stack.sh clean

## Regenerate the committed JSON Schema files from the pydantic contracts.
schemas: .venv/.ok
	$(VENV)/audit-schemas export

## Projector throughput against a raw COPY of the same rows (prints the ratio).
bench: stack
	$(VENV)/python -m bench.projector_vs_copy
