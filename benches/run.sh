#!/usr/bin/env bash
# benches/run.sh — `canopy run` and `canopy import oci` against their peers, same run.
#
# On a root built from real .debs (bash + coreutils and their closure), measures with
# hyperfine:
#   1. start-up: `canopy run ROOT -- /bin/true` (root from the store: FUSE view; and a
#      checkout directory) vs `bwrap` over that checkout vs `docker run --rm` of the same
#      root as an image on a private dockerd;
#   2. import: `canopy import oci` of a 10-layer image (one layer per slice of the
#      packages, built with umoci) into an empty store vs `umoci unpack` of it.
# Prints a table (and writes it to target/bench-run.txt). Figures are reported, never
# asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/run.sh [options] [PACKAGE...]

Benchmarks `canopy run` against bwrap and `docker run --rm`, and `canopy import oci`
against `umoci unpack`, on the dependency closure of PACKAGE... (default: bash coreutils).

options:
  --debs DIR       .deb cache, reused when present (default: target/bench-debs)
  --runs N         hyperfine runs per command (default: 30; imports: N/5, at least 3)
  --out FILE       also write the report here (default: target/bench-run.txt)
  --no-docker      skip the docker comparison
  --no-build       do not run `cargo build --release`; use target/release/canopy as is
  --canopy PATH    use this canopy binary (implies --no-build)
  --keep           keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help       this text

Needs root (FUSE, namespaces, dockerd), and apt-get to install hyperfine, bubblewrap,
umoci and docker.io when missing. dockerd runs privately under the scratch directory
(no iptables, no bridge) and is stopped at the end.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEBS=$ROOT/target/bench-debs
RUNS=30
OUT=$ROOT/target/bench-run.txt
CLOSURE=1
BUILD=1
CANOPY=$ROOT/target/release/canopy
DOCKER=1
KEEP=0
PACKAGES=()
while (($#)); do
    case $1 in
        --debs) DEBS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-docker) DOCKER=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=$2; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=(bash coreutils)
[[ $(id -u) -eq 0 ]] || die "needs root (FUSE, namespaces, dockerd)"

ensure_packages hyperfine:hyperfine bwrap:bubblewrap umoci:umoci
((DOCKER)) && ensure_packages dockerd:docker.io
build_canopy
fetch_debs

DOCKERD_PID=
release() {
    stop_pid "$DOCKERD_PID"
}
scratch run
export CANOPY_STORE=$TMP/store
say "scratch $TMP; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- the root
"$CANOPY" -q init >/dev/null
"$CANOPY" -q import deb "${DEBFILES[@]}" >/dev/null
"$CANOPY" -q assemble web "${ASSEMBLE_FLAGS[@]}" "${PKGNAMES[@]}" >/dev/null
"$CANOPY" -q checkout web "$TMP/checkout" >/dev/null

hf() {   # hf NAME RUNS COMMAND... : hyperfine, the mean in seconds in RESULT[NAME]
    local name=$1 runs=$2
    shift 2
    hyperfine -N --warmup 3 --runs "$runs" --export-json "$TMP/$name.json" "$@" >&2
    RESULT[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' "$TMP/$name.json")
}
declare -A RESULT=()

say "start-up: canopy run (store), canopy run (checkout), bwrap"
hf canopy_store "$RUNS" "$CANOPY run web -- /bin/true"
hf canopy_dir "$RUNS" "$CANOPY run $TMP/checkout -- /bin/true"
hf bwrap "$RUNS" "bwrap --unshare-user --unshare-pid --unshare-ipc --unshare-uts --ro-bind $TMP/checkout / --proc /proc --dev /dev --tmpfs /tmp --tmpfs /run /bin/true"

if ((DOCKER)); then
    say "start-up: docker run --rm (private dockerd)"
    dd=$TMP/docker
    mkdir -p "$dd"
    dockerd --data-root "$dd/data" --exec-root "$dd/exec" --pidfile "$dd/docker.pid" \
        -H "unix://$dd/docker.sock" --iptables=false --ip6tables=false --bridge=none \
        >"$dd/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST=unix://$dd/docker.sock DOCKER_CONFIG=$dd/client
    for ((i = 0; i < 600; i++)); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
    docker version >/dev/null 2>&1 || fail_step "dockerd did not start" "$dd/dockerd.log"
    tar -C "$TMP/checkout" --numeric-owner -cf - . | docker import - canopy-bench/web:1 >/dev/null
    hf docker "$(((RUNS + 2) / 3))" "docker run --rm --network none canopy-bench/web:1 /bin/true"
fi

# ---------------------------------------------------------------- import of a 10-layer image
say "import: a 10-layer image (umoci), canopy import oci vs umoci unpack"
layout=$TMP/layout
umoci init --layout "$layout"
umoci new --image "$layout:web"
n=${#DEBFILES[@]}
for ((l = 0; l < 10; l++)); do
    slice=$TMP/slice$l
    mkdir -p "$slice"
    for ((i = l; i < n; i += 10)); do dpkg-deb -x "${DEBFILES[$i]}" "$slice"; done
    umoci insert --image "$layout:web" "$slice" / >/dev/null
done
image_bytes=$(du -sb "$layout" | cut -f1)
iruns=$((RUNS / 5 < 3 ? 3 : RUNS / 5))
hf import "$iruns" --prepare "bash -c 'rm -rf $TMP/istore && $CANOPY --store $TMP/istore -q init'" \
    "$CANOPY --store $TMP/istore -q import oci $layout --name web"
hf umoci "$iruns" --prepare "rm -rf $TMP/bundle" "umoci unpack --image $layout:web $TMP/bundle"

# ---------------------------------------------------------------- report
ms() { awk -v v="$1" 'BEGIN { printf "%.1f ms", v * 1000 }'; }
{
    echo "canopy run / import benchmark — $(date -u +%FT%TZ), ${#DEBFILES[@]} packages ($(du -sh "$TMP/checkout" | cut -f1) root), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    printf '%-44s %12s %10s\n' "start-up (mean of hyperfine runs)" "time" "ratio"
    printf '%-44s %12s %10s\n' "bwrap over a checkout" "$(ms "${RESULT[bwrap]}")" "1.00"
    printf '%-44s %12s %10s\n' "canopy run ROOT (store, FUSE view)" "$(ms "${RESULT[canopy_store]}")" "$(ratio "${RESULT[canopy_store]}" "${RESULT[bwrap]}")× bwrap"
    printf '%-44s %12s %10s\n' "canopy run DIR (the checkout)" "$(ms "${RESULT[canopy_dir]}")" "$(ratio "${RESULT[canopy_dir]}" "${RESULT[bwrap]}")× bwrap"
    if [[ -n ${RESULT[docker]:-} ]]; then
        printf '%-44s %12s %10s\n' "docker run --rm (same root as an image)" "$(ms "${RESULT[docker]}")" "1.00"
        printf '%-44s %12s %10s\n' "canopy run ROOT vs docker" "" "$(ratio "${RESULT[canopy_store]}" "${RESULT[docker]}")× docker"
    fi
    echo
    printf '%-44s %12s %10s\n' "10-layer image ($((image_bytes / 1048576)) MiB layout)" "time" "ratio"
    printf '%-44s %12s %10s\n' "umoci unpack" "$(ms "${RESULT[umoci]}")" "1.00"
    printf '%-44s %12s %10s\n' "canopy import oci (empty store)" "$(ms "${RESULT[import]}")" "$(ratio "${RESULT[import]}" "${RESULT[umoci]}")× umoci"
} | tee "$OUT"
