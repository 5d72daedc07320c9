#!/usr/bin/env bash
# run-loadtest.sh: drop-in replacement for the original Go load generator's script.
#
# Same options and defaults as the original (-m -r -s -c -t -d --duration -h); every other
# argument goes to sse-tui unchanged (--demo, --no-tui, --json PATH, --config FILE,
# --run-id ID, ...), and `./run-loadtest.sh sandbox ...` runs `sse-tui sandbox ...` (the
# same for any other subcommand, e.g. merge).
#
# On first use, and whenever pyproject.toml is newer than the last install, it creates
# .venv next to this script and installs sse-tui into it (the original built its binary
# when needed the same way), then runs .venv/bin/sse-tui.
#
# Endpoints: when -r/-s are not given (and neither --demo nor --config is), the LoadBalancer
# addresses of svc/redis (redis-system) and svc/sse-adapter (sse-system) are read with
# kubectl, using kubeconfigs/origin.yaml when it exists, else $KUBECONFIG or
# ~/.kube/config. Without an answer it falls back to localhost:6379 / http://localhost:8080
# and says how to port-forward. --port-forward does the port-forwarding itself.
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
PROG="$0"

KUBECTL="${KUBECTL:-kubectl}"
KUBECTL_TIMEOUT="${KUBECTL_TIMEOUT:-5}"
PORT_FORWARD_TIMEOUT="${PORT_FORWARD_TIMEOUT:-20}"
STOP_GRACE="${STOP_GRACE:-15}"

if [[ -t 2 ]]; then
    GREEN=$'\033[0;32m' YELLOW=$'\033[1;33m' RED=$'\033[0;31m' NC=$'\033[0m'
else
    GREEN='' YELLOW='' RED='' NC=''
fi

# Everything this script says goes to stderr: stdout belongs to sse-tui (`--json -`).
log_info() { printf '%s[INFO]%s %s\n' "$GREEN" "$NC" "$*" >&2; }
log_warn() { printf '%s[WARN]%s %s\n' "$YELLOW" "$NC" "$*" >&2; }
log_error() { printf '%s[ERROR]%s %s\n' "$RED" "$NC" "$*" >&2; }
die() { log_error "$*"; exit 1; }

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS] [SSE-TUI OPTIONS]
       $PROG sandbox|merge ...     (sse-tui's subcommands, passed through untouched)

Distributed SSE Load Generator (sse-tui)

Options:
  -m, --mode MODE           Mode: producer, consumer, or both (default: both)
  -r, --redis ADDR          Redis address (default: auto-detect from cluster)
  -s, --sse URL             SSE adapter URL (default: auto-detect from cluster)
  -c, --conversations N     Number of concurrent conversations (default: 5)
  -t, --tokens N            Tokens per conversation (default: 50)
  -d, --delay MS            Delay between tokens in ms (default: 50)
  --duration DURATION       Test duration, e.g., 30s, 5m (default: 30s)
  --port-forward            Port-forward svc/redis and svc/sse-adapter on free local
                            ports for the run, and stop the forwards afterwards
  --install-only            Create .venv and install sse-tui, then exit
  -h, --help                Show this help

Any other option is passed to sse-tui unchanged, for example:
  --demo                    Run against an embedded local sandbox (no cluster needed)
  --no-tui                  Headless output even on a terminal
  --json PATH|-             Write the final summary as JSON (- for stdout)
  --config FILE.toml        Load settings from a profile (see config/); no auto-detection,
                            but --port-forward and -r/-s override the file's addresses
  --run-id ID               Conversation ids loadtest-ID-N (pair producer and consumer)
The Go-style spellings (-mode, -redis, -sse, -conversations, -tokens, -token-delay,
-duration) and -flag=value work too. All sse-tui options: .venv/bin/sse-tui --help

Examples:
  # Try it without a cluster
  $PROG --demo

  # Run full end-to-end test against cluster
  $PROG

  # Producer only (publish to Redis)
  $PROG -m producer -r localhost:6379

  # Consumer only (connect to SSE)
  $PROG -m consumer -s http://localhost:8080

  # High load test
  $PROG -c 50 -t 100 --duration 5m

  # Local development: let the script port-forward the cluster's services
  $PROG --port-forward

  # Local development (port-forwarded services)
  $PROG -r localhost:6379 -s http://localhost:8080
EOF
}

usage_error() {
    printf '%s: %s\n\n' "$PROG" "$*" >&2
    usage >&2
    exit 2
}

# ---------------------------------------------------------------------------------------
# Bootstrap: .venv with sse-tui installed, refreshed when pyproject.toml changes.

SSE_TUI=""

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

# ---------------------------------------------------------------------------------------
# Options

MODE="" REDIS_ADDR="" SSE_URL="" CONVERSATIONS="" TOKENS="" TOKEN_DELAY="" DURATION=""
PORT_FORWARD=0 INSTALL_ONLY=0 DEMO=0 HAS_CONFIG=0 CONFIG_FILE=""
PASSTHROUGH=()

# A subcommand (`sandbox`, `merge`, ...) is sse-tui's business alone: hand it over untouched.
if [[ -n "${1:-}" && "${1:0:1}" != "-" ]]; then
    ensure_installed
    exec "$SSE_TUI" "$@"
fi

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_millis() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
is_go_duration() { [[ "$1" =~ ^([0-9]+(\.[0-9]*)?(ns|us|ms|s|m|h))+$ || "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }

VALUE="" NSHIFT=0
# take_value NAME HAS_INLINE INLINE_VALUE NEXT_ARG_COUNT [NEXT_ARG]: sets VALUE and NSHIFT.
take_value() {
    local name=$1 has_inline=$2 inline=$3 remaining=$4
    if [[ "$has_inline" == 1 ]]; then
        VALUE=$inline NSHIFT=1
    elif (( remaining >= 2 )); then
        VALUE=$5 NSHIFT=2
    else
        usage_error "option $name needs a value"
    fi
    [[ -n "$VALUE" ]] || usage_error "option $name needs a non-empty value"
}

while [[ $# -gt 0 ]]; do
    arg=$1
    name=$arg has_inline=0 inline=""
    if [[ "$arg" == -?*=* ]]; then
        name=${arg%%=*} inline=${arg#*=} has_inline=1
    fi
    case $name in
        -m|--mode|-mode)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"
            case $VALUE in
                producer|consumer|both) MODE=$VALUE ;;
                *) usage_error "invalid mode '$VALUE': use producer, consumer or both" ;;
            esac ;;
        -r|--redis|-redis)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"; REDIS_ADDR=$VALUE ;;
        -s|--sse|-sse)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"; SSE_URL=$VALUE ;;
        -c|--conversations|-conversations)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"
            is_count "$VALUE" || usage_error "invalid number of conversations '$VALUE'"
            CONVERSATIONS=$VALUE ;;
        -t|--tokens|-tokens)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"
            is_count "$VALUE" || usage_error "invalid number of tokens '$VALUE'"
            TOKENS=$VALUE ;;
        -d|--delay|-token-delay|--token-delay)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"
            is_millis "$VALUE" || usage_error "invalid delay '$VALUE': milliseconds, e.g. 50"
            TOKEN_DELAY=$VALUE ;;
        --duration|-duration)
            take_value "$name" "$has_inline" "$inline" "$#" "${2:-}"
            is_go_duration "$VALUE" || usage_error "invalid duration '$VALUE': e.g. 30s, 5m, 1h30m"
            DURATION=$VALUE ;;
        -h|--help|-help)
            usage; exit 0 ;;
        --port-forward)
            [[ "$has_inline" == 0 ]] || usage_error "--port-forward takes no value"
            PORT_FORWARD=1; NSHIFT=1 ;;
        --install-only)
            INSTALL_ONLY=1; NSHIFT=1 ;;
        --)
            shift; PASSTHROUGH+=("$@"); NSHIFT=0; break ;;
        *)
            # Not ours: sse-tui gets it unchanged, and judges it.
            case $name in
                --demo|-demo) DEMO=1 ;;
                --config|-config)
                    HAS_CONFIG=1
                    if [[ "$has_inline" == 1 ]]; then CONFIG_FILE=$inline; else CONFIG_FILE=${2:-}; fi ;;
            esac
            PASSTHROUGH+=("$arg"); NSHIFT=1 ;;
    esac
    shift "$NSHIFT"
done

if (( PORT_FORWARD && DEMO )); then
    usage_error "--port-forward and --demo exclude each other: --demo runs a local sandbox"
fi

# The mode a --config file sets, when -m does not: it decides which endpoints are needed.
config_mode() {
    local python=python3 venv_python="${SSE_TUI_VENV:-$SCRIPT_DIR/.venv}/bin/python"
    if [[ -x "$venv_python" ]]; then
        python=$venv_python
    fi
    "$python" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("mode", ""))' "$1" 2>/dev/null || true
}

# The endpoints the mode needs (a consumer given a Redis address also follows Redis).
EFFECTIVE_MODE=$MODE
if [[ -z "$EFFECTIVE_MODE" && -n "$CONFIG_FILE" && -f "$CONFIG_FILE" ]]; then
    EFFECTIVE_MODE=$(config_mode "$CONFIG_FILE")
fi
NEED_REDIS=1 NEED_SSE=1
case ${EFFECTIVE_MODE:-both} in
    producer) NEED_SSE=0 ;;
    consumer) NEED_REDIS=0 ;;
esac

# ---------------------------------------------------------------------------------------
# Endpoint detection (like the original: LoadBalancer addresses of the two services)

CLUSTER_UNREACHABLE=0

use_kubeconfig() {
    local candidate
    for candidate in "$PWD/kubeconfigs/origin.yaml" "$SCRIPT_DIR/kubeconfigs/origin.yaml"; do
        if [[ -f "$candidate" ]]; then
            export KUBECONFIG="$candidate"
            log_info "Using kubeconfig: $candidate"
            return 0
        fi
    done
    if [[ -n "${KUBECONFIG:-}" ]]; then
        log_info "Using kubeconfig: \$KUBECONFIG ($KUBECONFIG)"
        return 0
    fi
    if [[ -f "${HOME:-/nonexistent}/.kube/config" ]]; then
        log_info "Using kubeconfig: ~/.kube/config (current context)"
        return 0
    fi
    return 1
}

# run_kubectl ARGS...: kubectl bounded in time even when credential plugins hang.
run_kubectl() {
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=2 "$((KUBECTL_TIMEOUT + 3))" \
            "$KUBECTL" --request-timeout="${KUBECTL_TIMEOUT}s" "$@"
    else
        "$KUBECTL" --request-timeout="${KUBECTL_TIMEOUT}s" "$@"
    fi
}

# lb_address NAMESPACE SERVICE: sets LB_ADDR to the LoadBalancer IP (or hostname), or "".
LB_ADDR=""
lb_address() {
    local ns=$1 svc=$2 out err status=0 reason
    LB_ADDR=""
    (( ! CLUSTER_UNREACHABLE )) || return 0
    err=$(mktemp)
    out=$(run_kubectl get svc "$svc" -n "$ns" \
        -o jsonpath='{.status.loadBalancer.ingress[0].ip} {.status.loadBalancer.ingress[0].hostname}' \
        2>"$err") || status=$?
    reason=$(grep -v '^[[:space:]]*$' "$err" | head -n 1 || true)
    if (( status != 0 )); then
        if (( status == 124 || status == 137 )) \
            || grep -qiE 'unable to connect|timeout|timed out|connection refused|no such host|dial tcp' "$err"; then
            # One unanswered lookup is enough: do not make the operator wait for the next.
            CLUSTER_UNREACHABLE=1
            log_warn "The cluster did not answer within ${KUBECTL_TIMEOUT}s${reason:+ ($reason)}"
        else
            log_warn "kubectl could not read svc/$svc in $ns${reason:+: $reason}"
        fi
    fi
    rm -f "$err"
    (( status == 0 )) || return 0
    # First word: the IP when there is one, else the hostname (some cloud load balancers).
    read -r LB_ADDR _ <<<"$out" || true
}

hint_port_forward() {
    log_warn "$1 LoadBalancer address not available; using $2. Port-forward it:"
    printf '  %s\n' "$3" >&2
    printf '  (or let this script do it: %s --port-forward)\n' "$PROG" >&2
}

detect_endpoints() {
    local have_config=0
    if ! command -v "$KUBECTL" >/dev/null 2>&1; then
        log_warn "kubectl not found ($KUBECTL): cannot auto-detect cluster addresses."
    elif use_kubeconfig; then
        have_config=1
    else
        log_warn "No kubeconfig found (kubeconfigs/origin.yaml, \$KUBECONFIG, ~/.kube/config)."
    fi

    if (( NEED_REDIS )) && [[ -z "$REDIS_ADDR" ]]; then
        local ip=""
        if (( have_config )); then
            log_info "Detecting Redis address from cluster..."
            lb_address redis-system redis
            ip=$LB_ADDR
        fi
        if [[ -n "$ip" ]]; then
            REDIS_ADDR="${ip}:6379"
            log_info "Found Redis at $REDIS_ADDR"
        else
            REDIS_ADDR="localhost:6379"
            hint_port_forward "Redis" "$REDIS_ADDR" \
                "kubectl port-forward -n redis-system svc/redis 6379:6379"
        fi
    fi
    if (( NEED_SSE )) && [[ -z "$SSE_URL" ]]; then
        local ip=""
        if (( have_config )); then
            log_info "Detecting SSE adapter address from cluster..."
            lb_address sse-system sse-adapter
            ip=$LB_ADDR
        fi
        if [[ -n "$ip" ]]; then
            SSE_URL="http://${ip}:80"
            log_info "Found SSE adapter at $SSE_URL"
        else
            SSE_URL="http://localhost:8080"
            hint_port_forward "SSE adapter" "$SSE_URL" \
                "kubectl port-forward -n sse-system svc/sse-adapter 8080:80"
        fi
    fi
}

# ---------------------------------------------------------------------------------------
# --port-forward: children that must never outlive this script.

PF_PIDS=()
PF_DIR=""
CHILD_PID=""
STOP_SIGNAL=""
USE_SETSID=0
command -v setsid >/dev/null 2>&1 && USE_SETSID=1

free_port() {
    python3 - <<'EOF'
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF
}

# probe_redis PORT: true when something answering like Redis listens there.
probe_redis() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'PING\r\n' >&3
        reply=""
        IFS= read -r -t 2 reply <&3 || true
        [[ "$reply" == [+-]* ]]
    ) 2>/dev/null
}

# probe_http PORT: true when an HTTP server answers there (any status).
probe_http() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        reply=""
        IFS= read -r -t 2 reply <&3 || true
        [[ "$reply" == HTTP/* ]]
    ) 2>/dev/null
}

# start_port_forward NAMESPACE SERVICE REMOTE_PORT PROBE: sets PF_PORT.
PF_PORT=""
start_port_forward() {
    local ns=$1 svc=$2 remote=$3 probe=$4 port pid logfile
    port=$(free_port) || die "could not find a free local port"
    logfile="$PF_DIR/$svc.log"
    log_info "Port-forwarding $ns/svc/$svc:$remote to 127.0.0.1:$port ..."
    # Its own session: a Ctrl-C on the terminal must not cut the tunnel while sse-tui is
    # still draining in-flight tokens; this script stops it in its EXIT trap instead.
    if (( USE_SETSID )); then
        setsid "$KUBECTL" port-forward --address 127.0.0.1 -n "$ns" "svc/$svc" "$port:$remote" \
            </dev/null >"$logfile" 2>&1 &
    else
        "$KUBECTL" port-forward --address 127.0.0.1 -n "$ns" "svc/$svc" "$port:$remote" \
            </dev/null >"$logfile" 2>&1 &
    fi
    pid=$!
    PF_PIDS+=("$pid")

    local deadline=$((SECONDS + PORT_FORWARD_TIMEOUT))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_error "kubectl port-forward for $ns/svc/$svc exited:"
            sed 's/^/  /' "$logfile" >&2 || true
            exit 1
        fi
        if "$probe" "$port"; then
            break
        fi
        if (( SECONDS >= deadline )); then
            log_error "$ns/svc/$svc did not answer on 127.0.0.1:$port within ${PORT_FORWARD_TIMEOUT}s."
            sed 's/^/  /' "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log_info "127.0.0.1:$port answers for $ns/svc/$svc"
    PF_PORT=$port
}

stop_pids() {
    local pid waited=0
    for pid in "$@"; do
        if (( USE_SETSID )); then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && (( waited < 30 )); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -KILL "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    if (( ${#PF_PIDS[@]} )); then
        stop_pids "${PF_PIDS[@]}"
        log_info "Stopped the port-forwards."
    fi
    [[ -z "$PF_DIR" ]] || rm -rf "$PF_DIR"
    exit "$status"
}

# True when sse-tui catches SIGINT itself and we sit on a terminal: a Ctrl-C there reached
# it too, so forwarding one more stop signal would only make it stop twice.
child_got_terminal_sigint() {
    [[ -t 0 && -r "/proc/$CHILD_PID/status" ]] || return 1
    local caught
    caught=$(awk '/^SigCgt:/ {print $2}' "/proc/$CHILD_PID/status" 2>/dev/null) || return 1
    [[ -n "$caught" ]] && (( (16#$caught >> 1) & 1 ))
}

on_signal() {
    local sig=$1 code=$2
    if [[ -z "$CHILD_PID" ]]; then
        exit "$code"   # still setting up: the EXIT trap stops what was started
    fi
    [[ -z "$STOP_SIGNAL" ]] || return 0
    STOP_SIGNAL=$sig
    if [[ "$sig" == INT ]] && child_got_terminal_sigint; then
        return 0
    fi
    kill -TERM "$CHILD_PID" 2>/dev/null || true
}

# run_with_port_forward ARGS...: sse-tui as a child, tunnels up before and down after.
run_with_port_forward() {
    command -v "$KUBECTL" >/dev/null 2>&1 \
        || die "--port-forward needs kubectl, and '$KUBECTL' is not on PATH (install kubectl, or set KUBECTL=/path/to/kubectl)"
    trap cleanup EXIT
    trap 'on_signal INT 130' INT
    trap 'on_signal TERM 143' TERM
    use_kubeconfig || log_warn "No kubeconfig found; kubectl uses its defaults."
    PF_DIR=$(mktemp -d "${TMPDIR:-/tmp}/run-loadtest.XXXXXX")

    local extra=()
    if (( NEED_REDIS )) && [[ -z "$REDIS_ADDR" ]]; then
        start_port_forward redis-system redis 6379 probe_redis
        REDIS_ADDR="127.0.0.1:$PF_PORT"
        extra+=(--redis "$REDIS_ADDR")
    fi
    if (( NEED_SSE )) && [[ -z "$SSE_URL" ]]; then
        start_port_forward sse-system sse-adapter 80 probe_http
        SSE_URL="http://127.0.0.1:$PF_PORT"
        extra+=(--sse "$SSE_URL")
    fi
    (( ${#PF_PIDS[@]} )) || log_warn "--port-forward: -r/-s given for everything this mode needs; nothing to forward."

    # A background job reads /dev/null unless told otherwise; sse-tui needs the terminal.
    { exec 3<&0; } 2>/dev/null || exec 3</dev/null   # (/dev/null when stdin is closed)
    "$SSE_TUI" "$@" ${extra[@]+"${extra[@]}"} <&3 3<&- &
    CHILD_PID=$!
    exec 3<&-

    local status=0
    wait "$CHILD_PID" || status=$?
    if [[ -n "$STOP_SIGNAL" ]]; then
        # wait returned for the signal; give sse-tui time to print and save its summary.
        local deadline=$((SECONDS + STOP_GRACE))
        while kill -0 "$CHILD_PID" 2>/dev/null && (( SECONDS < deadline )); do
            sleep 0.1
        done
        if kill -0 "$CHILD_PID" 2>/dev/null; then
            log_warn "sse-tui did not stop within ${STOP_GRACE}s after SIG$STOP_SIGNAL; killing it."
            kill -KILL "$CHILD_PID" 2>/dev/null || true
        fi
        status=0
        wait "$CHILD_PID" || status=$?
    fi
    CHILD_PID=""
    exit "$status"
}

# ---------------------------------------------------------------------------------------
# Main

ensure_installed
if (( INSTALL_ONLY )); then
    log_info "sse-tui is installed: $SSE_TUI"
    exit 0
fi

ARGS=()
[[ -z "$MODE" ]] || ARGS+=(--mode "$MODE")
[[ -z "$CONVERSATIONS" ]] || ARGS+=(--conversations "$CONVERSATIONS")
[[ -z "$TOKENS" ]] || ARGS+=(--tokens "$TOKENS")
[[ -z "$TOKEN_DELAY" ]] || ARGS+=(--delay "$TOKEN_DELAY")
[[ -z "$DURATION" ]] || ARGS+=(--duration "$DURATION")

if (( PORT_FORWARD )); then
    [[ -z "$REDIS_ADDR" ]] || ARGS+=(--redis "$REDIS_ADDR")
    [[ -z "$SSE_URL" ]] || ARGS+=(--sse "$SSE_URL")
    run_with_port_forward ${ARGS[@]+"${ARGS[@]}"} ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
fi

if (( ! DEMO && ! HAS_CONFIG )); then
    detect_endpoints
fi
[[ -z "$REDIS_ADDR" ]] || ARGS+=(--redis "$REDIS_ADDR")
[[ -z "$SSE_URL" ]] || ARGS+=(--sse "$SSE_URL")

if (( ! DEMO && ! HAS_CONFIG )); then
    log_info "Starting load test: mode=${MODE:-both} redis=${REDIS_ADDR:--} sse=${SSE_URL:--}" \
        "conversations=${CONVERSATIONS:-5} tokens=${TOKENS:-50} delay=${TOKEN_DELAY:-50}ms" \
        "duration=${DURATION:-30s}"
fi
exec "$SSE_TUI" ${ARGS[@]+"${ARGS[@]}"} ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
