#!/usr/bin/env bash
# Installs the Python packages the tests use into a virtualenv under the cache
# folder, and prints the interpreter's path. Idempotent; PyPI is needed only
# the first time (and when a version below changes).
#   pyarrow              reads canaryd's Arrow export with a reader that is not ours
#   kubernetes-validate  checks deploy/kubernetes against the Kubernetes schemas
set -euo pipefail
PYARROW_VERSION=26.0.1
KUBERNETES_VALIDATE_VERSION=1.37.0
venv="${CANARYD_CACHE:-$HOME/.cache/canaryd}/venv"
if ! "$venv/bin/python" -c "
import sys, importlib.metadata as m
sys.exit(m.version('pyarrow') != '$PYARROW_VERSION' or m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
	python3 -m venv "$venv" >&2
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
		"pyarrow==$PYARROW_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
fi
echo "$venv/bin/python"
