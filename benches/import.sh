#!/usr/bin/env bash
# benches/import.sh — canopy vs ostree on the same machine, same .debs, same run.
#
# Measures wall time (median of --runs repetitions, fresh directories each time, none
# removed before the end) of:
#   canopy init / import deb / assemble / checkout [--hardlink] / re-import
# against the nearest ostree equivalents:
#   dpkg-deb -x of every package into one dir + ostree init/commit (bare-user),
#   ostree checkout -U -H (hard links) / ostree checkout -C (copies), re-commit.
# Prints a table (and writes it to target/bench-import.txt). Times are reported,
# never asserted. See benches/README.md.
set -euo pipefail

DEFAULT_PACKAGES=(bash coreutils python3.11-minimal perl-base grep sed findutils tar gzip)

usage() {
    cat <<'EOF'
usage: benches/import.sh [options] [PACKAGE...]

Benchmarks canopy against ostree on a real set of Debian packages: the dependency
closure (Depends + Pre-Depends, no Recommends) of PACKAGE... (default:
bash coreutils python3.11-minimal perl-base grep sed findutils tar gzip).

options:
  --debs DIR       .deb cache, reused when present (default: target/bench-debs)
  --runs N         repetitions of every measurement; the median is reported (default: 3)
  --out FILE       also write the report here (default: target/bench-import.txt)
  --no-closure     use exactly PACKAGE..., without their dependencies
  --no-build       do not run `cargo build --release`; use target/release/canopy as is
  --canopy PATH    use this canopy binary (implies --no-build)
  --ostree-mode M  ostree repo mode (default: bare-user)
  --cold           drop the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before
                   every timed step; default is warm: the .debs are read once beforehand
  --keep           keep the scratch directory (target/bench-tmp/...) afterwards
  --tmp DIR        make the scratch directory under DIR instead of target/bench-tmp
                   (e.g. /dev/shm: a tmpfs, to compare the tools' CPU work without the
                   disk and the state of the file system; ~0.5 GB per run)
  -h, --help       this text

Needs root for apt-get (installing ostree/dpkg-dev if missing, downloading .debs);
`apt-get update` is run once if the package lists are missing.
EOF
}

# ---------------------------------------------------------------- arguments
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEBS=$ROOT/target/bench-debs
RUNS=3
OUT=$ROOT/target/bench-import.txt
CLOSURE=1
BUILD=1
CANOPY=$ROOT/target/release/canopy
OSTREE_MODE=bare-user
COLD=0
KEEP=0
SCRATCH=
PACKAGES=()

while (($#)); do
    case $1 in
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-closure) CLOSURE=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --ostree-mode) OSTREE_MODE=${2:?--ostree-mode needs a mode}; shift 2 ;;
        --cold) COLD=1; shift ;;
        --keep) KEEP=1; shift ;;
        --tmp) SCRATCH=${2:?--tmp needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PACKAGES+=("$@"); break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=("${DEFAULT_PACKAGES[@]}")
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$RUNS'"
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY

if ((COLD)); then
    [[ -w /proc/sys/vm/drop_caches ]] || die "--cold needs a writable /proc/sys/vm/drop_caches (run as root, outside a restricted container)"
fi

# ---------------------------------------------------------------- tools, canopy, .debs
ensure_packages ostree:ostree dpkg-deb:dpkg-dev dpkg-architecture:dpkg-dev
require_tools ostree dpkg-deb apt-get apt-cache tar du find awk sort date
build_canopy
fetch_debs

# ---------------------------------------------------------------- scratch space
SCRATCH=${SCRATCH:-$ROOT/target/bench-tmp}
mkdir -p "$SCRATCH"
TMP=$(mktemp -d "$SCRATCH/import.XXXXXX")
cleanup() {
    local rc=$?
    if ((KEEP)); then
        say "kept scratch directory $TMP"
    else
        rm -rf -- "$TMP"
        [[ $SCRATCH != "$ROOT/target/bench-tmp" ]] || rmdir -- "$SCRATCH" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- timing helpers
declare -A VALS=()     # step -> space-separated seconds, one per run
T=0

# timed KEY LOG CMD...: run CMD (stdout+stderr to LOG), add its wall time to VALS[KEY].
timed() {
    local key=$1 log=$2 t0 t1 rc=0
    shift 2
    sync
    if ((COLD)); then echo 3 >/proc/sys/vm/drop_caches; fi
    t0=$(date +%s.%N)
    "$@" >"$log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    if ((rc != 0)); then
        printf 'error: step "%s" failed (exit %d): %s\n' "$key" "$rc" "$*" >&2
        tail -n 30 "$log" | sed 's/^/    /' >&2
        cp -- "$log" "$ROOT/target/bench-import-failed.log" 2>/dev/null &&
            printf '  full log: %s\n' "$ROOT/target/bench-import-failed.log" >&2
        exit 1
    fi
    T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    VALS[$key]="${VALS[$key]:-} $T"
}

record() { VALS[$1]="${VALS[$1]:-} $2"; }   # record KEY SECONDS (derived values)
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }

median() {   # median of the whitespace-separated numbers in $1
    printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 }
        END { if (NR == 0) print "nan";
              else if (NR % 2) printf "%.3f", a[(NR + 1) / 2];
              else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

ratio() {   # ratio A B -> A/B with 2 decimals, or "-" when not applicable
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

unpack_all() {   # dpkg-deb -x every package into one directory, in order
    local dir=$1 f
    mkdir -p "$dir"
    for f in "${DEBFILES[@]}"; do dpkg-deb -x "$f" "$dir" || return 1; done
}

expect_lines() {   # expect_lines LOG PATTERN COUNT WHAT
    local n
    n=$(grep -c -- "$2" "$1" || true)
    ((n == $3)) || die "$4: expected $3 lines matching '$2', got $n (see output below)
$(sed 's/^/    /' "$1")"
}

# ---------------------------------------------------------------- measurements
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "warming the page cache with the .debs (${NPKG} files, ${DEB_BYTES} bytes)"
cat -- "${DEBFILES[@]}" >/dev/null

# canopy_steps / reference_steps: one run's steps of each tool, in the run's directory R
# (store S, repo REPO).
canopy_steps() {
    timed c_init "$R/c-init.log" "$CANOPY" --store "$S" init
    timed c_import "$R/c-import.log" "$CANOPY" --store "$S" import deb "${DEBFILES[@]}"
    expect_lines "$R/c-import.log" '^imported ' "$NPKG" "canopy import deb"
    timed c_assemble "$R/c-assemble.log" "$CANOPY" --store "$S" assemble all "${PKGNAMES[@]}" "${ASSEMBLE_FLAGS[@]}"
    timed c_co_hl "$R/c-co-hl.log" "$CANOPY" --store "$S" checkout all "$R/c-co-hl" --hardlink
    timed c_co_cp "$R/c-co-cp.log" "$CANOPY" --store "$S" checkout all "$R/c-co-cp"
    timed c_reimport "$R/c-reimport.log" "$CANOPY" --store "$S" import deb "${DEBFILES[@]}"
    expect_lines "$R/c-reimport.log" '^skipped ' "$NPKG" "canopy re-import"
}

reference_steps() {
    timed r_unpack "$R/r-unpack.log" unpack_all "$R/unpack"
    timed r_init "$R/r-init.log" ostree --repo="$REPO" init --mode="$OSTREE_MODE"
    timed r_commit "$R/r-commit.log" ostree --repo="$REPO" commit --branch=root --tree=dir="$R/unpack"
    if [[ $OSTREE_MODE == bare-user* ]]; then
        # a bare-user repo hard-links only in user mode (-U), even as root
        timed r_co_hl "$R/r-co-hl.log" ostree --repo="$REPO" checkout -U -H root "$R/r-co-hl"
    else
        timed r_co_hl "$R/r-co-hl.log" ostree --repo="$REPO" checkout -H root "$R/r-co-hl"
    fi
    timed r_co_cp "$R/r-co-cp.log" ostree --repo="$REPO" checkout -C root "$R/r-co-cp"
    timed r_recommit "$R/r-recommit.log" ostree --repo="$REPO" commit --branch=root --tree=dir="$R/unpack"
}

for ((run = 1; run <= RUNS; run++)); do
    say "run $run/$RUNS"
    R=$TMP/run$run
    S=$R/store
    REPO=$R/repo
    mkdir -p "$R"

    # Alternate who goes first, so neither always meets the other's leftovers (dirty
    # pages being written back, a warmer dentry cache).
    if ((run % 2)); then canopy_steps; reference_steps; else reference_steps; canopy_steps; fi

    # --- derived sums, per run
    c_e2e=$(add "$(add "${VALS[c_init]##* }" "${VALS[c_import]##* }")" "${VALS[c_assemble]##* }")
    r_e2e=$(add "$(add "${VALS[r_unpack]##* }" "${VALS[r_init]##* }")" "${VALS[r_commit]##* }")
    record c_e2e "$c_e2e"
    record r_e2e "$r_e2e"
    record r_unpack_commit "$(add "${VALS[r_unpack]##* }" "${VALS[r_commit]##* }")"

    # --- sizes and counts (identical every run; keep the last run's)
    C_OBJ=$S/objects; [[ -d $C_OBJ ]] || C_OBJ=$S
    C_SIZE=$(du -sb "$C_OBJ" | cut -f1)
    C_ALLOC=$(du -s -B1 "$C_OBJ" | cut -f1)
    C_STORE=$(du -sb "$S" | cut -f1)
    C_NOBJ=$(find "$C_OBJ" -type f | wc -l)
    R_SIZE=$(du -sb "$REPO/objects" | cut -f1)
    R_ALLOC=$(du -s -B1 "$REPO/objects" | cut -f1)
    R_STORE=$(du -sb "$REPO" | cut -f1)
    R_NOBJ=$(find "$REPO/objects" -type f | wc -l)
    TREE_BYTES=$(du -sb "$R/unpack" | cut -f1)
    TREE_FILES=$(find "$R/unpack" -type f | wc -l)
    TREE_DIRS=$(find "$R/unpack" -type d | wc -l)
    TREE_LINKS=$(find "$R/unpack" -type l | wc -l)
    C_CO_HL_LINE=$(grep -m1 '^checked out' "$R/c-co-hl.log" || tail -n1 "$R/c-co-hl.log")
    C_CO_CP_LINE=$(grep -m1 '^checked out' "$R/c-co-cp.log" || tail -n1 "$R/c-co-cp.log")
    C_ASM_LINE=$(grep -m1 '^assembled' "$R/c-assemble.log" || tail -n1 "$R/c-assemble.log")

    C_CO_HL_LINE=${C_CO_HL_LINE//$R\//}
    C_CO_CP_LINE=${C_CO_CP_LINE//$R\//}
    # Nothing is removed until every run is over: on ext4 without a journal, a file
    # created soon after many were freed nearby costs far more (the allocator skips
    # inodes freed in the last minutes), so removing a run's ~25,000 files right before
    # the next would slow every tool's writes in runs 2+. Every run starts from the same
    # state instead: fresh directories, no removal by this script in between.
    sync
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
m() { median "${VALS[$1]}"; }

row() {   # row LABEL CANOPY REFERENCE
    printf '%-58s %10s %12s %8s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"
}
srow() {  # srow LABEL CANOPY REFERENCE (sizes)
    printf '%-58s %14s %14s %8s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"
}

report() {
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git -C "$ROOT" diff --quiet HEAD 2>/dev/null; then rev="$rev+dirty"; fi
    echo "canopy import benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if ((BUILD)); then
        rev="$rev (built from the working tree)"
    else
        rev="binary $CANOPY (working tree at $rev)"
    fi
    echo "host: $(uname -srm), $(nproc) cpus; canopy $rev; ostree $(ostree --version | awk -F"'" '/Version/ { print $2; exit }') (repo mode $OSTREE_MODE)"
    echo "packages: $NPKG .debs, $DEB_BYTES bytes (closure of: ${PACKAGES[*]}$( ((CLOSURE)) || echo ', no closure'))"
    echo "unpacked tree: $TREE_BYTES bytes, $TREE_FILES files, $TREE_DIRS dirs, $TREE_LINKS symlinks"
    if ((COLD)); then
        echo "cache: COLD — page cache dropped before every timed step"
    else
        echo "cache: WARM — .debs read once before timing; page cache never dropped (sync before every step)"
    fi
    echo "load average before/after: $LOAD_BEFORE / $LOAD_AFTER (other work on the machine makes times noisy)"
    echo "times: wall seconds, median of $RUNS runs; ratio = canopy / reference (<1: canopy faster)"
    echo "scratch: $SCRATCH ($(stat -f -c %T "$SCRATCH"))"
    echo "state: every run in fresh directories, nothing removed until all runs are over; canopy first in odd runs, the reference first in even ones"
    echo
    printf '%-58s %10s %12s %8s\n' "step (reference)" "canopy s" "reference s" "ratio"
    printf '%s\n' "--------------------------------------------------------------------------------------------"
    row "init (ostree init)" "$(m c_init)" "$(m r_init)"
    row "import deb, all (dpkg-deb -x all)" "$(m c_import)" "$(m r_unpack)"
    row "import deb, all (ostree commit of the unpacked tree)" "$(m c_import)" "$(m r_commit)"
    row "import deb, all (dpkg-deb -x all + ostree commit)" "$(m c_import)" "$(m r_unpack_commit)"
    row "assemble root, $NPKG packages (none: commit made the tree)" "$(m c_assemble)" "-"
    row "init+import+assemble (dpkg-deb -x + ostree init+commit)" "$(m c_e2e)" "$(m r_e2e)"
    row "checkout --hardlink (ostree checkout -H$([[ $OSTREE_MODE == bare-user* ]] && echo ' -U'))" "$(m c_co_hl)" "$(m r_co_hl)"
    row "checkout, copies (ostree checkout -C)" "$(m c_co_cp)" "$(m r_co_cp)"
    row "re-import same .debs (ostree re-commit of same tree)" "$(m c_reimport)" "$(m r_recommit)"
    echo
    printf '%-58s %14s %14s %8s\n' "size" "canopy" "reference" "ratio"
    printf '%s\n' "--------------------------------------------------------------------------------------------------"
    srow "objects dir, apparent bytes (du -sb)" "$C_SIZE" "$R_SIZE"
    srow "objects dir, allocated bytes (du -s -B1)" "$C_ALLOC" "$R_ALLOC"
    srow "whole store / repo, apparent bytes (du -sb)" "$C_STORE" "$R_STORE"
    srow "object files" "$C_NOBJ" "$R_NOBJ"
    echo
    echo "objects dir / unpacked tree bytes: canopy $(ratio "$C_SIZE" "$TREE_BYTES"), ostree $(ratio "$R_SIZE" "$TREE_BYTES");" \
        "objects dir / .deb bytes: canopy $(ratio "$C_SIZE" "$DEB_BYTES"), ostree $(ratio "$R_SIZE" "$DEB_BYTES")"
    echo "canopy said: $C_ASM_LINE"
    echo "canopy said: $C_CO_HL_LINE"
    echo "canopy said: $C_CO_CP_LINE"
    if ((${#ASSEMBLE_FLAGS[@]})); then
        echo "note: $OVERLAPS paths ship in more than one package; assembled with ${ASSEMBLE_FLAGS[*]}"
    fi
    local k
    printf 'every run (s):'
    for k in c_init c_import c_assemble c_co_hl c_co_cp c_reimport r_unpack r_init r_commit r_co_hl r_co_cp r_recommit; do
        printf ' %s=[%s]' "$k" "$(echo ${VALS[$k]} | tr ' ' ,)"
    done
    echo
    echo "notes: dpkg-deb -x runs one package after another, in one process at a time."
    echo "       ostree checkout -C restores ownership from the repo; -U -H (bare-user) checks out as the current user."
    echo "       re-import reference re-hashes the already unpacked tree (no second dpkg-deb -x)."
    local args=()
    ((BUILD)) || args+=(--canopy "$CANOPY")
    ((RUNS != 3)) && args+=(--runs "$RUNS")
    ((COLD)) && args+=(--cold)
    [[ $OSTREE_MODE != bare-user ]] && args+=(--ostree-mode "$OSTREE_MODE")
    ((CLOSURE)) || args+=(--no-closure)
    [[ $SCRATCH != "$ROOT/target/bench-tmp" ]] && args+=(--tmp "$SCRATCH")
    [[ ${PACKAGES[*]} != "${DEFAULT_PACKAGES[*]}" ]] && args+=("${PACKAGES[@]}")
    echo "reproduce: benches/import.sh ${args[*]}"
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
say "report written to $OUT"
