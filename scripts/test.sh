#!/usr/bin/env bash
# Install what the test suite needs on a fresh machine (idempotent), then run it.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need_apt=""
for tool in git git-lfs nginx aria2c; do
    command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if [ -n "$need_apt" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq git git-lfs nginx aria2 >/dev/null
fi

# The suite runs from a virtual environment of its own: what the tests import must come from the
# install steps below, not from whatever the machine had before. CI (CI=true) or
# HUBGET_TEST_FRESH=1 start it from nothing; otherwise it is reused (the installs are idempotent).
VENV=${HUBGET_TEST_VENV:-/tmp/hubget-test-venv}
BASE_PY=${PYTHON:-python3}
if [ -n "${CI:-}" ] || [ -n "${HUBGET_TEST_FRESH:-}" ] || [ ! -x "$VENV/bin/python" ]; then
    "$BASE_PY" -m venv --clear "$VENV"
fi
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
# The CPU build of torch first, so that nothing pulls a CUDA build.
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
# giftless (an independent Git LFS server for interop tests): its wheel declares no dependencies.
$PY -m pip install -q --disable-pip-version-check giftless flask flask-classful flask-marshmallow marshmallow \
    figcan "pyjwt<2.10" python-dateutil python-dotenv pyyaml webargs cachetools

# huggingface_hub 0.26 conflicts with the current one: it gets a venv of its own.
HF026=${HUBGET_TEST_HF026_PYTHON:-/tmp/hubget-hf026/bin/python}
if ! "$HF026" -c "import huggingface_hub" 2>/dev/null; then
    $PY -m venv "$(dirname "$(dirname "$HF026")")"
    "$HF026" -m pip install -q --disable-pip-version-check "huggingface_hub==0.26.5"
fi
export HUBGET_TEST_HF026_PYTHON="$HF026"

export HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
lint=0
ruff check src tests bench || lint=1
ruff format --check src tests bench || lint=1
$PY -m pytest -q tests "$@"
if [ "$lint" != 0 ]; then
    echo "ruff found problems (see above)" >&2
    exit 1
fi
