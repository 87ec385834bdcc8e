#!/usr/bin/env bash
# End-to-end load test of `sbmesh serve` on loopback, against a baseline in the same run.
#
# The baseline (examples/baseline.rs) serves FIXED response bytes (the webhook's own answer to
# the typical pod) in the webhook's own server shell (sbmesh::server::serve, default settings),
# so the ratio webhook/baseline is what admission itself costs. Runs alternate A/B/B/A per protocol to spread drift on a
# noisy machine. Reports, ratios first:
#   - throughput, HTTP/2 and HTTP/1.1 (h2load, saturating), and server CPU time per request
#   - p50/p99 latency at a fixed 1,000 req/s (oha, latency-corrected)
#   - single-request latency (median of many) for the typical, 1,500-env, 30-container and
#     ~1 MiB pods over HTTP/2, as the API server sends them
#   - peak RSS of the webhook (VmHWM) through all of the above
#   - process start to ready: exec until GET /readyz on the admin port answers 200
#
# Needs h2load (apt-get install -y nghttp2-client), oha (cargo install oha), jq and curl.
# Loopback only; about 3 minutes with the defaults. Knobs (environment):
#   DURATION=8 ROUNDS=2 RATE_SECONDS=10 REPS=300 STARTS=15 KEEP=1 (keep the work dir)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
RATE_SECONDS="${RATE_SECONDS:-10}"
REPS="${REPS:-300}"
STARTS="${STARTS:-15}"
TENANT_ID=72f988bf-86f1-41af-91ab-2d7cd011db47
CLIENT_ID=6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c
SB_NAMESPACE=payments-prod

die() {
    echo "load.sh: $*" >&2
    exit 2
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is needed: $2"
}
need h2load "apt-get install -y nghttp2-client"
need oha "cargo install oha"
need jq "apt-get install -y jq"
need curl "apt-get install -y curl"

echo "load.sh: building release binaries" >&2
cargo build --release --quiet --bin sbmesh --example baseline
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$TARGET_DIR/release/sbmesh"
BASE="$TARGET_DIR/release/examples/baseline"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${KEEP:-}" ]]; then
        echo "load.sh: logs and raw output kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# A port nothing listens on (refused connection), from a range the kernel does not hand out.
free_port() {
    local p _
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan" } else if (NR % 2) { print v[(NR + 1) / 2] } else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'
}

# Deployment settings: JSON logs. No MALLOC_ARENA_MAX: the binary caps malloc arenas itself.
export SBMESH_LOG_FORMAT=json
unset MALLOC_ARENA_MAX

"$BASE" bodies "$WORK/bodies" >"$WORK/bodies.txt"

serve_args() { # webhook-port admin-port certs-dir
    echo serve --listen "127.0.0.1:$1" --admin-listen "127.0.0.1:$2" --cluster off \
        --tenant-id "$TENANT_ID" --client-id "$CLIENT_ID" --servicebus-namespace "$SB_NAMESPACE" \
        --self-signed-dir "$3"
}

# --- process start to ready --------------------------------------------------------------
echo "load.sh: timing $STARTS starts" >&2
: >"$WORK/starts.txt"
for _ in $(seq "$STARTS"); do
    wp="$(free_port)"
    ap="$(free_port)"
    # shellcheck disable=SC2046 # word splitting of serve_args is intended
    "$BASE" ready-time "127.0.0.1:$ap" -- "$BIN" $(serve_args "$wp" "$ap" "$WORK/certs-start") \
        --drain-grace-seconds 0 >>"$WORK/starts.txt" 2>>"$WORK/starts.log"
done
START_MS="$(median <"$WORK/starts.txt")"
START_MAX="$(sort -g "$WORK/starts.txt" | tail -n 1)"

# --- the two servers ---------------------------------------------------------------------
WH_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
BL_PORT="$(free_port)"
# shellcheck disable=SC2046
"$BIN" $(serve_args "$WH_PORT" "$ADMIN_PORT" "$WORK/certs") 2>"$WORK/webhook.log" &
WH_PID=$!
PIDS+=("$WH_PID")
for _ in $(seq 500); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.02
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || die "the webhook did not get ready (see $WORK/webhook.log; KEEP=1)"
"$BASE" serve --listen "127.0.0.1:$BL_PORT" --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" 2>"$WORK/baseline.log" &
BL_PID=$!
PIDS+=("$BL_PID")
for _ in $(seq 500); do
    curl -fsS --cacert "$WORK/certs/ca.crt" "https://127.0.0.1:$BL_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.02
done

TYPICAL="$WORK/bodies/typical.json"
# Same bytes back from both for the typical pod, or the comparison means nothing.
curl -fsS --cacert "$WORK/certs/ca.crt" --data-binary "@$TYPICAL" -H 'content-type: application/json' \
    "https://127.0.0.1:$WH_PORT/mutate" >"$WORK/webhook.response"
curl -fsS --cacert "$WORK/certs/ca.crt" --data-binary "@$TYPICAL" -H 'content-type: application/json' \
    "https://127.0.0.1:$BL_PORT/mutate" >"$WORK/baseline.response"
cmp -s "$WORK/webhook.response" "$WORK/baseline.response" ||
    die "the baseline's fixed response differs from the webhook's answer to the typical pod"
jq -e '.response.allowed == true and (.response.patch | length) > 0' "$WORK/webhook.response" >/dev/null ||
    die "the typical pod was not patched"

port_of() { if [[ "$1" == webhook ]]; then echo "$WH_PORT"; else echo "$BL_PORT"; fi; }
pid_of() { if [[ "$1" == webhook ]]; then echo "$WH_PID"; else echo "$BL_PID"; fi; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"

# --- throughput --------------------------------------------------------------------------
h2load_run() { # server proto; appends "server proto req/s cpu-us-per-request" to throughput.txt
    local server="$1" proto="$2" out before after flags
    if [[ "$proto" == h2 ]]; then flags=(-c 16 -m 8); else flags=(--h1 -c 32 -m 1); fi
    before="$(cpu_ticks "$(pid_of "$server")")"
    out="$WORK/h2load-$server-$proto-$RANDOM.txt"
    h2load -t 1 "${flags[@]}" -D "$DURATION" --warm-up-time 1 -d "$TYPICAL" \
        -H 'content-type: application/json' "https://127.0.0.1:$(port_of "$server")/mutate" >"$out" 2>&1
    after="$(cpu_ticks "$(pid_of "$server")")"
    local rps finished
    rps="$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")"
    finished="$(sed -n 's/^requests: .* \([0-9]*\) done,.*/\1/p' "$out")"
    grep -q ' 0 failed, 0 errored, 0 timeout' "$out" && grep -q ' 0 4xx, 0 5xx' "$out" && [[ -n "$rps" ]] ||
        die "$server $proto: failed requests (see $out; KEEP=1)"
    # CPU over the whole run (warm-up included) per request counted by h2load: an upper bound.
    echo "$server $proto $rps $(awk -v t="$((after - before))" -v hz="$TICK" -v n="$finished" -v d="$DURATION" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / (n * (d + 1) / d) }')" >>"$WORK/throughput.txt"
}

echo "load.sh: throughput, $ROUNDS A/B rounds × ${DURATION}s per protocol" >&2
for round in $(seq "$ROUNDS"); do
    for proto in h2 h1; do
        if ((round % 2)); then order=(webhook baseline); else order=(baseline webhook); fi
        for server in "${order[@]}"; do
            h2load_run "$server" "$proto"
        done
    done
done
rps_of() { awk -v s="$1" -v p="$2" '$1 == s && $2 == p { print $3 }' "$WORK/throughput.txt" | median; }
cpu_of() { awk -v s="$1" -v p="$2" '$1 == s && $2 == p { print $4 }' "$WORK/throughput.txt" | median; }

# --- latency at a fixed rate -------------------------------------------------------------
oha_run() { # out-file server proto rate seconds body
    local out="$1" server="$2" flags=()
    [[ "$3" == h2 ]] && flags+=(--http2)
    oha --no-tui --output-format json --insecure --latency-correction "${flags[@]}" \
        -c 16 -q "$4" -z "${5}s" -m POST -T application/json -D "$6" \
        "https://127.0.0.1:$(port_of "$server")/mutate" >"$out" 2>"$out.err" || die "oha failed (see $out.err)"
}
ms() { jq -r "$1 * 1000 | . * 1000 | round / 1000" "$2"; }

echo "load.sh: latency at 1,000 req/s, ${RATE_SECONDS}s per run" >&2
for proto in h2 h1; do
    for server in webhook baseline; do
        f="$WORK/oha-rate-$server-$proto.json"
        oha_run "$f" "$server" "$proto" 1000 "$RATE_SECONDS" "$TYPICAL"
        ok="$(jq -r '.summary.successRate' "$f")"
        [[ "$ok" == 1 || "$ok" == 1.0 ]] || die "$server $proto at 1,000 req/s: success rate $ok (see $f)"
        echo "$server $proto $(ms '.latencyPercentiles.p50' "$f") $(ms '.latencyPercentiles.p99' "$f") $(jq -r '.summary.requestsPerSec | round' "$f")" >>"$WORK/rate.txt"
    done
done
rate_of() { awk -v s="$1" -v p="$2" -v c="$3" '$1 == s && $2 == p { print $c }' "$WORK/rate.txt"; }

# --- single requests by pod size ---------------------------------------------------------
echo "load.sh: single-request latency by pod, $REPS requests each over HTTP/2" >&2
for body in typical env1500 containers30 pod1mib; do
    n="$REPS"
    [[ "$body" == pod1mib ]] && n=$((REPS / 3))
    for server in webhook baseline; do
        out="$WORK/oha-$server-$body.json"
        oha --no-tui --output-format json --insecure --http2 -c 1 -n "$n" -m POST -T application/json \
            -D "$WORK/bodies/$body.json" "https://127.0.0.1:$(port_of "$server")/mutate" >"$out" 2>"$out.err"
        echo "$server $body $(ms '.latencyPercentiles.p50' "$out") $(ms '.latencyPercentiles.p99' "$out") $(jq -r '.summary.successRate' "$out")" >>"$WORK/single.txt"
    done
done
single_of() { awk -v s="$1" -v b="$2" -v c="$3" '$1 == s && $2 == b { print $c }' "$WORK/single.txt"; }
size_of() { awk -v b="/$1.json" 'index($1, b) { printf "%.1f KiB", $2 / 1024 }' "$WORK/bodies.txt"; }
for body in env1500 pod1mib; do
    ok="$(single_of webhook "$body" 5)"
    [[ "$ok" == 1 || "$ok" == 1.0 ]] || die "webhook: $body requests failed (success rate $ok)"
done

# --- peak memory -------------------------------------------------------------------------
hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
WH_HWM="$(hwm "$WH_PID")"
BL_HWM="$(hwm "$BL_PID")"

# --- summary -----------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
verdict() { # value op limit
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "met" : "MISSED" }'
}
H2_RATIO="$(ratio "$(rps_of webhook h2)" "$(rps_of baseline h2)")"
H1_RATIO="$(ratio "$(rps_of webhook h1)" "$(rps_of baseline h1)")"
P99_H2="$(ratio "$(rate_of webhook h2 4)" "$(rate_of baseline h2 4)")"
P99_H1="$(ratio "$(rate_of webhook h1 4)" "$(rate_of baseline h1 4)")"
ENV_MS="$(single_of webhook env1500 3)"
MIB_MS="$(single_of webhook pod1mib 3)"

cat <<EOF

sbmesh load test — $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), loopback, client on the same CPUs
webhook: sbmesh serve --cluster off (JSON logs, its own malloc defaults); baseline: fixed $(wc -c <"$WORK/baseline.response")-byte response, same server shell
typical request: $(size_of typical); medians of $ROUNDS A/B rounds × ${DURATION}s (h2load: h2 -c16 -m8, h1 -c32)

| target (issue 7)                         | measured                       | limit    | verdict |
|------------------------------------------|--------------------------------|----------|---------|
| throughput ratio, HTTP/2                 | $H2_RATIO                           | ≥ 0.85   | $(verdict "$H2_RATIO" ">=" 0.85) |
| throughput ratio, HTTP/1.1               | $H1_RATIO                           | ≥ 0.85   | $(verdict "$H1_RATIO" ">=" 0.85) |
| p99 ratio at 1,000 req/s, HTTP/2         | $P99_H2                           | ≤ 1.2    | $(verdict "$P99_H2" "<=" 1.2) |
| p99 ratio at 1,000 req/s, HTTP/1.1       | $P99_H1                           | ≤ 1.2    | $(verdict "$P99_H1" "<=" 1.2) |
| 1,500-env pod, median end to end         | $ENV_MS ms                       | ≤ 5 ms   | $(verdict "$ENV_MS" "<=" 5) |
| ~1 MiB pod, median end to end            | $MIB_MS ms                       | ≤ 25 ms  | $(verdict "$MIB_MS" "<=" 25) |
| webhook peak RSS (VmHWM), whole run      | $WH_HWM MiB                      | ≤ 30 MiB | $(verdict "$WH_HWM" "<=" 30) |
| process start to ready, median of $STARTS     | $START_MS ms (max $START_MAX)       | ≤ 100 ms | $(verdict "$START_MS" "<=" 100) |

throughput (req/s, median)      webhook    baseline   ratio   server CPU µs/request (webhook / baseline)
  HTTP/2                        $(rps_of webhook h2)    $(rps_of baseline h2)    $H2_RATIO    $(cpu_of webhook h2) / $(cpu_of baseline h2)
  HTTP/1.1                      $(rps_of webhook h1)    $(rps_of baseline h1)    $H1_RATIO    $(cpu_of webhook h1) / $(cpu_of baseline h1)

at 1,000 req/s (ms)             webhook p50/p99        baseline p50/p99       achieved req/s (webhook/baseline)
  HTTP/2                        $(rate_of webhook h2 3) / $(rate_of webhook h2 4)          $(rate_of baseline h2 3) / $(rate_of baseline h2 4)          $(rate_of webhook h2 5) / $(rate_of baseline h2 5)
  HTTP/1.1                      $(rate_of webhook h1 3) / $(rate_of webhook h1 4)          $(rate_of baseline h1 3) / $(rate_of baseline h1 4)          $(rate_of webhook h1 5) / $(rate_of baseline h1 5)

single requests over HTTP/2 (ms)   size          webhook p50/p99      baseline p50/p99 (same bytes in, fixed answer out)
  typical                          $(size_of typical)       $(single_of webhook typical 3) / $(single_of webhook typical 4)        $(single_of baseline typical 3) / $(single_of baseline typical 4)
  1,500 env vars                   $(size_of env1500)      $(single_of webhook env1500 3) / $(single_of webhook env1500 4)        $(single_of baseline env1500 3) / $(single_of baseline env1500 4)
  30 containers                    $(size_of containers30)      $(single_of webhook containers30 3) / $(single_of webhook containers30 4)        $(single_of baseline containers30 3) / $(single_of baseline containers30 4)
  ~1 MiB                           $(size_of pod1mib)    $(single_of webhook pod1mib 3) / $(single_of webhook pod1mib 4)        $(single_of baseline pod1mib 3) / $(single_of baseline pod1mib 4)

peak RSS (MiB): webhook $WH_HWM, baseline $BL_HWM
EOF
