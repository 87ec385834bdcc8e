#!/usr/bin/env bash
# Runs each fuzz target for a short while (SMOKE_SECONDS, default 20) from its seeds and the
# local corpus. cargo-fuzz needs nightly compiler flags: on a stable toolchain they are
# enabled with RUSTC_BOOTSTRAP=1. When cargo-fuzz is missing or the build does not work, this
# says "skipped: <reason>" and exits 0; a crash found exits 1 with the input in artifacts/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${SMOKE_SECONDS:-20}"
targets=(admission_review annotations proxy_config)

skip() {
    echo "fuzz smoke: skipped: $*"
    exit 0
}

command -v cargo >/dev/null 2>&1 || skip "cargo is not installed"
cargo fuzz --version >/dev/null 2>&1 || skip "cargo-fuzz is not installed (cargo install cargo-fuzz)"

# Address sanitizer when the toolchain can build it; the core is safe Rust, so without it
# libFuzzer still finds panics, hangs and runaway memory.
sanitizer="${FUZZ_SANITIZER:-none}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer "$sanitizer" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    skip "cargo fuzz build failed with RUSTC_BOOTSTRAP=1 (see the lines above)"
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin="target/$triple/release"
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    extra=()
    [[ "$t" == annotations ]] && extra+=(-max_len=8192)
    [[ "$t" == admission_review ]] && extra+=(-max_len=16384)
    if "$bin/$t" "corpus/$t" "seeds/$t" -dict=sbmesh.dict -max_total_time="$seconds" \
        -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "${extra[@]}" >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)"
        echo "fuzz smoke: $t: ok, $runs runs in ${seconds}s, $cov"
    else
        failed=1
        echo "fuzz smoke: $t: FAILED; the input is in fuzz/artifacts/$t/" >&2
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" >&2 || tail -n 30 "$log" >&2
    fi
done
exit "$failed"
