#!/usr/bin/env bash
# Installs the Python packages the tests use into a virtualenv under the cache
# folder, and prints the interpreter's path. Idempotent; PyPI is needed only
# the first time (and when a version below changes).
#   pyarrow              reads canaryd's Arrow export with a reader that is not ours
#   kubernetes-validate  checks deploy/kubernetes against the Kubernetes schemas
#   confluent-kafka      the Kafka client of python/canaryd_router (manylinux wheels, librdkafka inside)
#   pytest               runs python/canaryd_router's tests (router/python_test.go calls it)
set -euo pipefail
PYARROW_VERSION=26.0.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CONFLUENT_KAFKA_VERSION=2.16.1
PYTEST_VERSION=9.2.0
venv="${CANARYD_CACHE:-$HOME/.cache/canaryd}/venv"
if ! "$venv/bin/python" -c "
import sys, importlib.metadata as m
sys.exit(m.version('pyarrow') != '$PYARROW_VERSION' or m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION'
	or m.version('confluent-kafka') != '$CONFLUENT_KAFKA_VERSION' or m.version('pytest') != '$PYTEST_VERSION')" 2>/dev/null; then
	python3 -m venv "$venv" >&2
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
		"pyarrow==$PYARROW_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
		"confluent-kafka==$CONFLUENT_KAFKA_VERSION" "pytest==$PYTEST_VERSION" >&2
fi
echo "$venv/bin/python"
