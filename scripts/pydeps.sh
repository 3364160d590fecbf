#!/usr/bin/env bash
# Installs the Python packages the tests use (pyarrow, to read canaryd's Arrow
# export with a reader that is not ours) into a virtualenv under the cache
# folder, and prints the interpreter's path. Idempotent; PyPI is needed only
# the first time.
set -euo pipefail
PYARROW_VERSION=26.0.1
venv="${CANARYD_CACHE:-$HOME/.cache/canaryd}/venv"
if ! "$venv/bin/python" -c "import pyarrow, sys; sys.exit(pyarrow.__version__ != '$PYARROW_VERSION')" 2>/dev/null; then
	python3 -m venv "$venv" >&2
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pyarrow==$PYARROW_VERSION" >&2
fi
echo "$venv/bin/python"
