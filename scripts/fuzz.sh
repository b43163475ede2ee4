#!/usr/bin/env bash
# Fuzzes what canopy decodes from untrusted bytes, with cargo-fuzz (libFuzzer):
#
#   bash scripts/fuzz.sh                 # every target, 60 s in all (what CI runs)
#   bash scripts/fuzz.sh 3600 archives   # one target for an hour
#
# Targets (fuzz/fuzz_targets/): objects (tree, commit, package, tree pack decoding),
# archives (tar and .deb import into a store in memory), rpm (.rpm import), images
# (OCI layout and docker save import), nfs_rpc (NFSv3 and MOUNT calls), http_requests
# (request streams to the HTTP server), volume_json (the volume plugin's Create
# requests and state file), loader (ELF headers and ld.so.cache, as library prefetch
# reads them). Installs cargo-fuzz (pinned) under target/ if it is
# missing; builds without a sanitizer, so the stable toolchain does (Rust code is
# memory-safe; the targets look for panics, hangs and runaway allocations). Corpora
# are kept in target/fuzz/corpus (seeded from fuzz/seeds/TARGET where there is one),
# crashes in fuzz/artifacts/TARGET: a crash prints the input's file, which
# `cargo fuzz run --dev -s none TARGET FILE` (from fuzz/'s parent) replays.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }

seconds=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(objects archives rpm images nfs_rpc http_requests volume_json loader)

CARGO_FUZZ_VERSION=0.13.2
tools="$PWD/target/fuzz/tools"
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
    cargo install -q --locked --root "$tools" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
per=$(( seconds / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
status=0
for t in "${targets[@]}"; do
    corpus="target/fuzz/corpus/$t"
    mkdir -p "$corpus"
    # Valid inputs to start from, where the format is too structured to be found by chance.
    if [ -d "fuzz/seeds/$t" ]; then cp -n "fuzz/seeds/$t"/* "$corpus"/; fi
    say "fuzzing $t for $per s"
    # -timeout: an input taking over 10 s is a hang; -rss_limit_mb: one over 2 GiB a
    # runaway allocation. Both are failures.
    "$tools/bin/cargo-fuzz" run --dev --sanitizer none "$t" "$corpus" -- \
        -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
        -print_final_stats=1 || status=$?
done
exit "$status"
