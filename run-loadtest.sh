#!/usr/bin/env bash
# run-loadtest.sh: drop-in replacement for the original Go load generator's script.
#
# Shell does only what must be shell: find Python >= 3.11, create .venv next to this script
# and install sse-tui into it (on first use, and again whenever pyproject.toml is newer
# than the last install), then exec `sse-tui cluster "$@"`. Everything else (the original's
# options -m -r -s -c -t -d --duration -h, --port-forward, --install-only, endpoint
# auto-detection with kubectl, `./run-loadtest.sh sandbox|merge ...`, `[--port-forward]
# fleet NAME`) lives in
# sse_tui/cluster/, where it is tested; `./run-loadtest.sh --help` lists it all.
#
# Environment overrides (tests and unusual setups):
#   SSE_TUI_BIN           run this executable instead of .venv/bin/sse-tui (no bootstrap)
#   SSE_TUI_VENV          virtualenv to create and use (default: .venv next to this script)
#   PYTHON                interpreter that creates it (default: python3; needs >= 3.11)
#   KUBECTL               kubectl executable (default: kubectl)
#   KUBECTL_TIMEOUT       seconds the cluster gets to answer each lookup (default: 5)
#   PORT_FORWARD_TIMEOUT  seconds the port-forwards get to answer (default: 20)
#   STOP_GRACE            seconds sse-tui gets to write its summary after Ctrl-C/SIGTERM
#                         before it is killed, with --port-forward (default: 15)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -t 2 ]]; then
    GREEN=$'\033[0;32m' RED=$'\033[0;31m' NC=$'\033[0m'
else
    GREEN='' RED='' NC=''
fi

# Everything this script says goes to stderr: stdout belongs to sse-tui (`--json -`).
log_info() { printf '%s[INFO]%s %s\n' "$GREEN" "$NC" "$*" >&2; }
die() { printf '%s[ERROR]%s %s\n' "$RED" "$NC" "$*" >&2; exit 1; }

venv_is_current() {
    local venv=$1 stamp
    [[ -x "$venv/bin/sse-tui" ]] || return 1
    # Our stamp, or the one `make test` leaves after installing the same package with extras.
    for stamp in "$venv/.installed-run-loadtest" "$venv/.installed-test"; do
        if [[ -f "$stamp" && ! "$SCRIPT_DIR/pyproject.toml" -nt "$stamp" ]]; then
            return 0
        fi
    done
    return 1
}

# Sets SSE_TUI to the sse-tui to run, installing it first when needed.
ensure_installed() {
    if [[ -n "${SSE_TUI_BIN:-}" ]]; then
        SSE_TUI="$SSE_TUI_BIN"
        return
    fi
    local venv="${SSE_TUI_VENV:-$SCRIPT_DIR/.venv}"
    SSE_TUI="$venv/bin/sse-tui"
    venv_is_current "$venv" && return

    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 \
        || die "$python not found: install Python 3.11 or newer, or set PYTHON=/path/to/python3.11"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "sse-tui needs Python >= 3.11 but $python is $("$python" -V 2>&1); set PYTHON=python3.11"
    if [[ ! -x "$venv/bin/python" ]]; then
        log_info "Creating virtualenv $venv ..."
        "$python" -m venv "$venv" \
            || die "could not create $venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    log_info "Installing sse-tui into $venv (first run, or pyproject.toml changed) ..."
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$SCRIPT_DIR" >&2 \
        || die "installing sse-tui into $venv failed (pip output above); delete $venv to start over"
    [[ -x "$SSE_TUI" ]] || die "installed, but $SSE_TUI is missing; delete $venv and run again"
    touch "$venv/.installed-run-loadtest"
}

SSE_TUI=""
ensure_installed
# How we were called and where we live: for sse-tui cluster's messages, its usage text,
# --install-only, and kubeconfigs/origin.yaml next to this script.
export RUN_LOADTEST_PROG="$0" RUN_LOADTEST_DIR="$SCRIPT_DIR" RUN_LOADTEST_SSE_TUI="$SSE_TUI"
exec "$SSE_TUI" cluster "$@"
