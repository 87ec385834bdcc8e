#!/usr/bin/env bash
# Makes the Python virtual environment tests/chart.rs renders charts/sbmesh with (Helm v4's
# engine from helm-python-sdk, the Kubernetes schemas from kubernetes-validate), with exactly
# the versions pinned in requirements.txt. Idempotent and quick once done: it does nothing while
# VENV holds a copy of the requirements it was installed from. Safe to run concurrently (the
# tests run in parallel processes): one installs under a lock, the others wait for it.
#
#   tests/chart/setup-venv.sh VENV        (.ci/run: "${CARGO_TARGET_DIR:-target}/helm-venv")
#
# Exit status 0: ready. Anything else: not ready, the reason on stderr (the tests then report
# themselves skipped, or fail under CI). A failure is remembered for two minutes (VENV.failed),
# so that the test processes of one run without network do not each wait for pip again.
set -euo pipefail

venv=${1:?usage: $0 VENV}
here=$(cd "$(dirname "$0")" && pwd)
requirements=$here/requirements.txt
stamp=$venv/sbmesh-requirements.txt
failed=$venv.failed

ready() { [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; }
ready && exit 0

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
ready && exit 0
if [ -n "$(find "$failed" -mmin -2 2>/dev/null)" ]; then
  cat "$failed" >&2
  exit 3
fi

install() {
  if ! command -v python3 >/dev/null; then
    echo "python3 is not installed"
    return 2
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "python3 is $(python3 --version 2>&1); helm-python-sdk needs 3.10 or newer"
    return 2
  fi
  # (set -e does not hold in a function run as a condition: each step says so itself.)
  rm -f "$stamp" || return
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv" || return
    python3 -m venv "$venv" || return
  fi
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --retries 2 --timeout 30 -r "$requirements" || return
  cp "$requirements" "$stamp"
}

if log=$(install 2>&1); then
  rm -f "$failed"
  [ -z "$log" ] || printf '%s\n' "$log" >&2
else
  status=$?
  printf '%s\n' "$log" >"$failed"
  printf '%s\n' "$log" >&2
  exit "$status"
fi
