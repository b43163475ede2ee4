#!/usr/bin/env bash
# benches/installed.sh — installed roots: canopy assembling and configuring a root from
# packages it already has, vs mmdebstrap installing the same packages from the same
# local repository.
#
# Builds a signed repository (pool/, dists/stable, InRelease) from the real .debs of
# bookworm's Essential set plus --packages (default python3, perl, nginx-light, curl),
# imports them into a canopy store once (untimed: "from cached packages"), then times,
# each --runs times (median reported):
#   canopy      assemble --from bench --essential PKGS: resolve, union, configure (the
#               packages' scripts in the sandbox), commit; the time configuring alone
#               and the configuration layer (paths the scripts added, changed, removed,
#               bytes of new content) come from its --json report
#   mmdebstrap  --variant=custom --include=<the same resolved set> from copy:// of the
#               same repository, as it ships (dpkg fsyncs every file), and with
#               --dpkgopt=force-unsafe-io (no fsyncs, as canopy's scratch tree in memory)
# Prints a table (and writes it to target/bench-installed.txt). Figures are reported,
# never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/installed.sh [options]

Benchmarks installed roots: `canopy assemble --from REPO --essential PKGS` (packages
already in the store, configured in canopy's sandbox) against `mmdebstrap
--variant=custom` of the same package set from the same local signed repository.

options:
  --packages PKGS  besides the Essential set, comma-separated
                   (default: python3,perl,nginx-light,curl)
  --debs DIR       .deb cache, reused when present (default: target/bench-installed-debs)
  --runs N         repetitions of every measurement; the median is reported (default: 3)
  --out FILE       also write the report here (default: target/bench-installed.txt)
  --no-build       do not run `cargo build --release`; use the built canopy as is
  --canopy PATH    use this canopy binary (implies --no-build)
  --step-timeout S bound on each measured command (default: 1800)
  --keep           keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help       this text

Needs root (mmdebstrap --mode=root) and installs mmdebstrap, gpg, dpkg-dev, apt-utils
and jq when missing. The .debs come once from the machine's own apt sources
(`apt-get download`); every timed step reads the local repository only.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
PKG_ARG=python3,perl,nginx-light,curl
DEBS=$ROOT/target/bench-installed-debs
RUNS=3
OUT=$ROOT/target/bench-installed.txt
BUILD=1
CANOPY=${CARGO_TARGET_DIR:-$ROOT/target}/release/canopy
STEP_TIMEOUT=1800
KEEP=0
CLOSURE=0

while (($#)); do
    case $1 in
        --packages) PKG_ARG=${2:?--packages needs packages}; shift 2 ;;
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --step-timeout) STEP_TIMEOUT=${2:?--step-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for v in RUNS STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} must be a positive integer, got '${!v}'"
done
IFS=, read -r -a EXTRA <<<"$PKG_ARG"
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY
[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap --mode=root)"

ensure_packages mmdebstrap:mmdebstrap gpg:gpg dpkg-scanpackages:dpkg-dev \
    apt-ftparchive:apt-utils jq:jq
require_tools mmdebstrap gpg gpgconf dpkg-deb apt-get apt-cache timeout awk jq
build_canopy
CANOPY_VERSION=$("$CANOPY" --version 2>/dev/null || echo "canopy ?")

# The package set as apt installs it on an empty system: the Essential set plus EXTRA,
# without Recommends; `fetch_debs` (common.sh) downloads it into DEBS once.
essential() {
    apt-cache dumpavail | awk -v RS= '/\nEssential: yes/ {
        match($0, /^Package: [^\n]*/); print substr($0, 10, RLENGTH - 9) }' | sort -u
}
mapfile -t ESSENTIAL < <(essential)
((${#ESSENTIAL[@]})) || { apt_update_once; mapfile -t ESSENTIAL < <(essential); }
mapfile -t PACKAGES < <(apt-get install -s -o Dir::State::status=/dev/null \
    -o APT::Install-Recommends=false "${ESSENTIAL[@]}" "${EXTRA[@]}" 2>/dev/null |
    awk '$1 == "Inst" { print $2 }' | sort -u)
((${#PACKAGES[@]})) || die "apt-get cannot resolve the Essential set plus ${EXTRA[*]}"
fetch_debs

GNUPGHOME=
release() {   # at exit (common.sh's scratch)
    if [[ -n $GNUPGHOME ]]; then
        gpgconf --kill gpg-agent 2>/dev/null || true
        rm -rf -- "$GNUPGHOME"
    fi
}
scratch installed
LOGS=$TMP/logs
REPO=$TMP/repo
mkdir -p "$LOGS" "$REPO/pool"
FAILED_LOG=$ROOT/target/bench-installed-failed.log
export TIMEFILE=$LOGS/time
GNUPGHOME=$(mktemp -d /tmp/cbi.XXXXXX)
export GNUPGHOME

say "repository: ${#DEBFILES[@]} .debs, signed by a throwaway key"
for f in "${DEBFILES[@]}"; do
    ln -- "$f" "$REPO/pool/" 2>/dev/null || cp -- "$f" "$REPO/pool/"
done
gpg --batch --passphrase '' --quick-gen-key 'canopy bench repository <bench@canopy.test>' \
    ed25519 sign never >"$LOGS/gpg.log" 2>&1 || fail_step "gpg could not make a key" "$LOGS/gpg.log"
KEYRING=$TMP/repo-key.gpg
gpg --batch --export >"$KEYRING"
DIST=$REPO/dists/stable
mkdir -p "$DIST/main/binary-amd64"
(cd "$REPO" && dpkg-scanpackages --multiversion pool /dev/null) >"$DIST/main/binary-amd64/Packages" 2>/dev/null
gzip -9 -k "$DIST/main/binary-amd64/Packages"
(cd "$DIST" && apt-ftparchive -o APT::FTPArchive::Release::Suite=stable \
    -o APT::FTPArchive::Release::Codename=stable \
    -o APT::FTPArchive::Release::Architectures=amd64 \
    -o APT::FTPArchive::Release::Components=main release . >"$TMP/Release")
mv -- "$TMP/Release" "$DIST/Release"
gpg --batch --yes --digest-algo SHA256 --clearsign -o "$DIST/InRelease" "$DIST/Release"

# The store, with every package imported (untimed): what "from cached packages" means.
S=$TMP/store
"$CANOPY" --store "$S" init >/dev/null
"$CANOPY" --store "$S" repo add bench "file://$REPO" --suite stable --components main \
    --arch amd64 --keyring "$KEYRING" >/dev/null
"$CANOPY" --store "$S" assemble warm --from bench --essential --no-configure "${EXTRA[@]}" \
    >"$LOGS/warm.log" 2>&1 || fail_step "importing the packages failed" "$LOGS/warm.log"
mapfile -t NAMES < <("$CANOPY" --store "$S" roots log warm --json | jq -r '.[0].packages[].name')
INCLUDE=$(IFS=,; echo "${NAMES[*]}")
SOURCE="deb [signed-by=$KEYRING] copy://$REPO stable main"

CANOPY_ASSEMBLE='"$1" --store "$2" assemble "$3" --from bench --essential --json "${@:4}" >"$TMPDIR_OUT"'
MMDEBSTRAP='mmdebstrap --mode=root --variant=custom --include="$1" "${@:4}" stable "$2" "$3"'
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((run = 1; run <= RUNS; run++)); do
    say "run $run of $RUNS"
    export TMPDIR_OUT=$LOGS/assemble-$run.json
    timed canopy "$CANOPY_ASSEMBLE" "$CANOPY" "$S" "web$run" "${EXTRA[@]}"
    jq -e '.configure.configured' "$TMPDIR_OUT" >/dev/null ||
        fail_step "the root was not configured" "$TMPDIR_OUT"
    sde=$(jq -r '.configure.source_date_epoch' "$TMPDIR_OUT")
    record layer_added "$(jq -r '.configure.layer.added' "$TMPDIR_OUT")"
    record layer_changed "$(jq -r '.configure.layer.changed' "$TMPDIR_OUT")"
    record layer_removed "$(jq -r '.configure.layer.removed' "$TMPDIR_OUT")"
    record layer_bytes "$(jq -r '.configure.layer.new_bytes' "$TMPDIR_OUT")"
    record scripts "$(jq -r '.configure.scripts' "$TMPDIR_OUT")"
    # Configuring alone: the same assemble without configuring, subtracted.
    timed canopy_unpacked "$CANOPY_ASSEMBLE" "$CANOPY" "$S" "raw$run" --no-configure "${EXTRA[@]}"
    export SOURCE_DATE_EPOCH=$sde
    timed mmdebstrap "$MMDEBSTRAP" "$INCLUDE" "$TMP/mm$run" "$SOURCE"
    rm -rf -- "$TMP/mm$run"
    timed mmdebstrap_unsafe "$MMDEBSTRAP" "$INCLUDE" "$TMP/mmu$run" "$SOURCE" --dpkgopt=force-unsafe-io
    rm -rf -- "$TMP/mmu$run"
    unset SOURCE_DATE_EPOCH
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

c=$(m canopy)
u=$(m canopy_unpacked)
cfg=$(awk -v a="$c" -v b="$u" 'BEGIN { printf "%.4f", a - b }')
mm=$(m mmdebstrap)
mmu=$(m mmdebstrap_unsafe)
{
    echo "installed roots: $CANOPY_VERSION, ${#NAMES[@]} packages (Essential + ${EXTRA[*]}), $RUNS runs, median wall time"
    echo "load average before $LOAD_BEFORE, after $LOAD_AFTER"
    echo
    printf '%-52s %10s %8s %8s\n' "step" "seconds" "vs mm" "vs mm-u"
    printf '%-52s %10s %8s %8s\n' "canopy assemble --from, configured" "$(fmt "$c" %.2f)" "$(ratio "$c" "$mm")" "$(ratio "$c" "$mmu")"
    printf '%-52s %10s %8s %8s\n' "  of which configuring (minus --no-configure)" "$(fmt "$cfg" %.2f)" "$(ratio "$cfg" "$mm")" "$(ratio "$cfg" "$mmu")"
    printf '%-52s %10s\n' "canopy assemble --from --no-configure" "$(fmt "$u" %.2f)"
    printf '%-52s %10s\n' "mmdebstrap --variant=custom (mm)" "$(fmt "$mm" %.2f)"
    printf '%-52s %10s\n' "mmdebstrap --dpkgopt=force-unsafe-io (mm-u)" "$(fmt "$mmu" %.2f)"
    echo
    echo "scripts run: $(fmt "$(m scripts)" %.0f); configuration layer: $(fmt "$(m layer_added)" %.0f) paths added, $(fmt "$(m layer_changed)" %.0f) changed, $(fmt "$(m layer_removed)" %.0f) removed, $(fmt "$(m layer_bytes)" %.0f) bytes of new content"
    echo "per run (s): canopy [${VALS[canopy]} ], --no-configure [${VALS[canopy_unpacked]} ], mmdebstrap [${VALS[mmdebstrap]} ], unsafe-io [${VALS[mmdebstrap_unsafe]} ]"
} | tee "$OUT"
