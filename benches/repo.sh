#!/usr/bin/env bash
# benches/repo.sh — roots resolved from a Debian repository: canopy vs apt-get download +
# dpkg-deb -x, from the same local repository served by nginx on 127.0.0.1.
#
# Builds a signed repository (pool/, dists/stable, InRelease) from the real .debs of two
# package sets' closures, then measures wall time (median of --runs, fresh directories
# each run) and bytes served:
#   a. from nothing to a runnable root A: canopy init + repo add + assemble --from +
#      checkout --hardlink, vs apt-get update + apt-get download + dpkg-deb -x
#   b. a second root B sharing most packages: canopy assemble --from (downloads only what
#      the store lacks), vs apt-get download + dpkg-deb -x of all of B
#   c. one library of A rebuilt with a higher version: canopy upgrade, vs downloading and
#      unpacking the whole closure again, and vs downloading the one package and
#      unpacking it over a copy of the previous tree
# Prints a table (and writes it to target/bench-repo.txt). Figures are reported, never
# asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

DEFAULT_A=nginx-light,python3,curl,git,openssh-client,bash,coreutils
DEFAULT_B=postgresql,python3,curl,bash,coreutils
DEFAULT_UPGRADE=libssl3

usage() {
    cat <<'EOF'
usage: benches/repo.sh [options]

Benchmarks roots resolved from a Debian repository: `canopy assemble --from`,
`canopy checkout --hardlink` and `canopy upgrade` against `apt-get download` +
`dpkg-deb -x` of the same packages, both fetching from one local signed repository
(the real .debs of both roots' closures) served by nginx on 127.0.0.1.

options:
  --a PKGS         root A, comma-separated
                   (default: nginx-light,python3,curl,git,openssh-client,bash,coreutils)
  --b PKGS         root B, sharing most of A (default: postgresql,python3,curl,bash,coreutils)
  --upgrade PKG    the package of A's closure rebuilt with a higher version for the
                   upgrade step (default: libssl3)
  --debs DIR       .deb cache, reused when present (default: target/bench-repo-debs)
  --runs N         repetitions of every measurement; the median is reported (default: 3)
  --out FILE       also write the report here (default: target/bench-repo.txt)
  --no-build       do not run `cargo build --release`; use the built canopy as is
  --canopy PATH    use this canopy binary (implies --no-build)
  --wait-timeout S how long to wait for nginx to answer (default: 30)
  --step-timeout S bound on each measured command (default: 900)
  --keep           keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help       this text

Needs root: chroot (the roots must run /bin/bash), apt-get with a private state
directory, and installing nginx, gpg, dpkg-dev, apt-utils, xz-utils and curl when
missing. The .debs come once from the machine's own apt sources (`apt-get download`);
every timed step fetches from the local repository only.
EOF
}

# ---------------------------------------------------------------- arguments
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
A_ARG=$DEFAULT_A
B_ARG=$DEFAULT_B
UPGRADE=$DEFAULT_UPGRADE
DEBS=$ROOT/target/bench-repo-debs
RUNS=3
OUT=$ROOT/target/bench-repo.txt
BUILD=1
CANOPY=${CARGO_TARGET_DIR:-$ROOT/target}/release/canopy
WAIT_TIMEOUT=30
STEP_TIMEOUT=900
KEEP=0
CLOSURE=1

while (($#)); do
    case $1 in
        --a) A_ARG=${2:?--a needs packages}; shift 2 ;;
        --b) B_ARG=${2:?--b needs packages}; shift 2 ;;
        --upgrade) UPGRADE=${2:?--upgrade needs a package}; shift 2 ;;
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --wait-timeout) WAIT_TIMEOUT=${2:?--wait-timeout needs seconds}; shift 2 ;;
        --step-timeout) STEP_TIMEOUT=${2:?--step-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for v in RUNS WAIT_TIMEOUT STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} must be a positive integer, got '${!v}'"
done
IFS=, read -r -a A_PKGS <<<"$A_ARG"
IFS=, read -r -a B_PKGS <<<"$B_ARG"
((${#A_PKGS[@]} && ${#B_PKGS[@]})) || die "--a and --b need at least one package each"
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY

[[ $(id -u) -eq 0 ]] || die "needs root (chroot, apt-get into a private state directory)"

# ---------------------------------------------------------------- tools, canopy, .debs
ensure_packages nginx:nginx gpg:gpg dpkg-scanpackages:dpkg-dev apt-ftparchive:apt-utils \
    xz:xz-utils curl:curl
require_tools nginx gpg gpgconf dpkg-deb apt-get apt-cache chroot timeout ss awk sort comm \
    find cp gzip xz sha256sum
build_canopy
CANOPY_VERSION=$("$CANOPY" --version 2>/dev/null || echo "canopy ?")

# The repository: the .debs of both roots' closures as apt-cache lists them (every
# alternative of `a | b` too, so the resolvers have choices), fetched once from the
# machine's apt sources into the cache.
PACKAGES=("${A_PKGS[@]}" "${B_PKGS[@]}")
fetch_debs
printf '%s\n' "${PKGNAMES[@]}" | grep -qx -- "$UPGRADE" ||
    die "--upgrade $UPGRADE is not among the packages of both closures"

# ---------------------------------------------------------------- scratch space, processes
NGINX_PID=
GNUPGHOME=
release() {   # at exit (common.sh's scratch)
    stop_pid "$NGINX_PID"
    if [[ -n $GNUPGHOME ]]; then
        gpgconf --kill gpg-agent 2>/dev/null || true
        rm -rf -- "$GNUPGHOME"
    fi
}
scratch repo
LOGS=$TMP/logs
REPO=$TMP/repo
mkdir -p "$LOGS" "$REPO/pool"
FAILED_LOG=$ROOT/target/bench-repo-failed.log
export TIMEFILE=$LOGS/time
# gpg-agent's socket path must stay short: its home goes under /tmp.
GNUPGHOME=$(mktemp -d /tmp/cbr.XXXXXX)
export GNUPGHOME

# ---------------------------------------------------------------- the repository
say "repository: ${#DEBFILES[@]} .debs, signed by a throwaway key"
for f in "${DEBFILES[@]}"; do
    ln -- "$f" "$REPO/pool/" 2>/dev/null || cp -- "$f" "$REPO/pool/"
done
gpg --batch --passphrase '' --quick-gen-key 'canopy bench repository <bench@canopy.test>' \
    ed25519 sign never >"$LOGS/gpg.log" 2>&1 || fail_step "gpg could not make a key" "$LOGS/gpg.log"
KEYRING=$TMP/repo-key.gpg
gpg --batch --export >"$KEYRING"
[[ -s $KEYRING ]] || die "gpg exported no key"

# publish: Packages (plain, gz, xz), Release and a signed InRelease for pool/'s .debs.
publish() {
    local dist=$REPO/dists/stable bin=$REPO/dists/stable/main/binary-amd64
    mkdir -p "$bin"
    rm -f -- "$dist/Release" "$dist/InRelease" "$bin"/Packages*
    (cd "$REPO" && dpkg-scanpackages --multiversion pool /dev/null) >"$bin/Packages" 2>"$LOGS/scan.log" ||
        fail_step "dpkg-scanpackages failed" "$LOGS/scan.log"
    gzip -9 -k "$bin/Packages"
    xz -9 -k "$bin/Packages"
    (cd "$dist" && apt-ftparchive -o APT::FTPArchive::Release::Suite=stable \
        -o APT::FTPArchive::Release::Codename=stable \
        -o APT::FTPArchive::Release::Architectures=amd64 \
        -o APT::FTPArchive::Release::Components=main release . >"$TMP/Release") ||
        die "apt-ftparchive release failed"
    mv -- "$TMP/Release" "$dist/Release"
    gpg --batch --yes --digest-algo SHA256 --clearsign -o "$dist/InRelease" "$dist/Release" \
        2>"$LOGS/sign.log" || fail_step "gpg --clearsign failed" "$LOGS/sign.log"
}

# The upgrade: UPGRADE rebuilt with version +bench1 and one changed file (its copyright,
# else its first regular file), as a security update would change one library.
UP_OLD=
for i in "${!PKGNAMES[@]}"; do
    [[ ${PKGNAMES[i]} == "$UPGRADE" ]] && UP_OLD=${DEBFILES[i]}
done
[[ -n $UP_OLD ]] || die "no .deb of $UPGRADE among the cached ones"
UP_VERSION_OLD=$(dpkg-deb -f "$UP_OLD" Version)
UP_VERSION=$UP_VERSION_OLD+bench1
UP_TREE=$TMP/rebuild
dpkg-deb -R "$UP_OLD" "$UP_TREE"
sed -i "s/^Version: .*/Version: $UP_VERSION/" "$UP_TREE/DEBIAN/control"
UP_FILE=usr/share/doc/$UPGRADE/copyright
if [[ ! -f $UP_TREE/$UP_FILE || -L $UP_TREE/$UP_FILE ]]; then
    UP_FILE=$(cd "$UP_TREE" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort | head -n 1)
fi
[[ -n $UP_FILE ]] || die "$UPGRADE ships no regular file to change"
UP_MARK="rebuilt by benches/repo.sh"
printf '\n%s\n' "$UP_MARK" >>"$UP_TREE/$UP_FILE"
UP_DEB=$TMP/${UPGRADE}_${UP_VERSION//:/%3a}_$(dpkg-deb -f "$UP_OLD" Architecture).deb
dpkg-deb --build -Zxz "$UP_TREE" "$UP_DEB" >"$LOGS/rebuild.log" 2>&1 ||
    fail_step "dpkg-deb --build of $UPGRADE failed" "$LOGS/rebuild.log"
rm -rf -- "$UP_TREE"

# ---------------------------------------------------------------- nginx
PORT=$(free_port) || die "no free port found on 127.0.0.1"
URL=http://127.0.0.1:$PORT
NG=$TMP/nginx
publish
say "nginx on $URL (root $REPO)"
# The access log is how downloads are counted: status, bytes sent, path.
start_nginx "$NG" "$PORT" "$REPO" /dists/stable/InRelease \
    "log_format bench '\$status \$body_bytes_sent \$uri'; access_log $NG/logs/access.log bench;"

# served_since LINE: "requests bytes debs deb_bytes" of the access log after line LINE.
log_lines() { wc -l <"$NG/logs/access.log"; }
served_since() {
    awk -v from="$1" 'NR > from { n++; b += $2; if ($3 ~ /\.deb$/) { d++; db += $2 } }
        END { printf "%d %d %d %d\n", n, b, d, db }' "$NG/logs/access.log"
}

# served KEY LINE: records what was served since LINE under KEY_{req,bytes,debs,debbytes}.
served() {
    local n b d db
    read -r n b d db < <(served_since "$2")
    record "$1_req" "$n"
    record "$1_bytes" "$b"
    record "$1_debs" "$d"
    record "$1_debbytes" "$db"
}

# timed_served KEY SCRIPT ARG...: `timed` (common.sh), and what nginx served meanwhile.
timed_served() {
    local key=$1 from
    from=$(log_lines)
    sync
    timed "$@"
    served "$key" "$from"
}

# The "resolved N packages, D downloaded (SIZE)" line of a canopy step's log, as "N D".
resolved() {
    sed -n 's/^resolved \([0-9]*\) packages, \([0-9]*\) downloaded .*/\1 \2/p' "$LOGS/$1.log" | head -n 1
}

# A private apt: its own sources.list (the local repository, signed-by the throwaway key),
# lists, cache and an empty dpkg status; none of the machine's apt.conf.d hooks.
apt_setup() {   # apt_setup DIR: writes DIR/apt.conf
    local d=$1
    mkdir -p "$d/parts" "$d/sources.d" "$d/prefs.d" "$d/state/lists/partial" \
        "$d/cache/archives/partial"
    : >"$d/status"
    echo "deb [signed-by=$KEYRING arch=amd64] $URL stable main" >"$d/sources.list"
    cat >"$d/apt.conf" <<EOF
Dir::Etc::Parts "$d/parts";
Dir::Etc::main "$d/none";
Dir::Etc::SourceList "$d/sources.list";
Dir::Etc::SourceParts "$d/sources.d";
Dir::Etc::Preferences "$d/none";
Dir::Etc::PreferencesParts "$d/prefs.d";
Dir::State "$d/state";
Dir::State::status "$d/status";
Dir::Cache "$d/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
}

# Scripts run by `timed` (in a new bash: arguments, not functions).
APT_UPDATE='APT_CONFIG=$1 apt-get -q update'
# APT_FETCH APT DIR HAVE PKG...: the packages `apt-get install PKG...` would unpack on an
# empty system (apt's own resolver, no Recommends) into DIR/names, then `apt-get
# download` into DIR of those not listed in the file HAVE (/dev/null: all of them).
# APT_DOWNLOAD APT DIR PKG...: just the download.
APT_FETCH='mkdir -p "$2" && cd "$2" &&
    APT_CONFIG=$1 apt-get -s install "${@:4}" >resolve.log &&
    awk '"'"'$1 == "Inst" { print $2 }'"'"' resolve.log | sort >names && [[ -s names ]] &&
    mapfile -t get < <(comm -13 "$3" names) &&
    { ((${#get[@]} == 0)) || APT_CONFIG=$1 apt-get -q download "${get[@]}"; }'
APT_DOWNLOAD='mkdir -p "$2" && cd "$2" && APT_CONFIG=$1 apt-get -q download "${@:3}"'
EXTRACT='mkdir -p "$2" && for f in "$1"/*.deb; do dpkg-deb -x "$f" "$2" || exit 1; done'
CANOPY_RUN='"$1" --store "$2" "${@:3}"'

ODD=()   # things that look wrong, for the report
odd() { ODD+=("$*"); printf 'note: %s\n' "$*" >&2; }

# same_set ROOT NAMES: notes it when canopy's commit of ROOT holds other packages than
# the file NAMES (apt's resolution of the same request) lists.
same_set() {
    local mine only_canopy only_apt
    mine=$("$CANOPY" --store "$S" roots log "$1" --json | jq -r '.[0].packages[].name' | sort -u) ||
        die "canopy roots log $1 --json failed"
    only_canopy=$(comm -23 <(echo "$mine") "$2" | tr '\n' ' ')
    only_apt=$(comm -13 <(echo "$mine") "$2" | tr '\n' ' ')
    [[ -z $only_canopy$only_apt ]] ||
        odd "canopy and apt resolved root $1 differently: only canopy: ${only_canopy:-none}; only apt: ${only_apt:-none}"
}

# tree_listing DIR: every path under DIR, sorted, with its type (f, l, d, ...).
tree_listing() { (cd "$1" && find . -printf '%y %p\n' | sort); }

# ---------------------------------------------------------------- measurements
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((run = 1; run <= RUNS; run++)); do
    say "run $run of $RUNS"
    R=$TMP/run
    rm -rf -- "$R" "$REPO/pool/$(basename "$UP_DEB")"
    mkdir -p "$R"
    publish
    S=$R/store
    apt_setup "$R/apt"
    APT=$R/apt/apt.conf
    # Reference 2 of the upgrade: a host that has A's package lists and tree, nothing newer.
    apt_setup "$R/apt2"
    APT2=$R/apt2/apt.conf

    # a. from nothing to a runnable root A
    timed_served a_c_setup '"$1" --store "$2" init && "$1" --store "$2" repo add bench "$3" --suite stable --components main --arch amd64 --keyring "$4"' \
        "$CANOPY" "$S" "$URL" "$KEYRING"
    timed_served a_c_assemble "$CANOPY_RUN" "$CANOPY" "$S" assemble A --from bench "${ASSEMBLE_FLAGS[@]}" "${A_PKGS[@]}"
    read -r n d < <(resolved a_c_assemble) || fail_step "no 'resolved' line from assemble A" "$LOGS/a_c_assemble.log"
    record a_c_resolved "$n"
    record a_c_downloaded "$d"
    timed_served a_c_checkout "$CANOPY_RUN" "$CANOPY" "$S" checkout A "$R/a-canopy" --hardlink
    timed_served a_r_update "$APT_UPDATE" "$APT"
    APT_CONFIG=$APT2 apt-get -q update >"$LOGS/apt2-update.log" 2>&1 ||
        fail_step "apt-get update (second apt state) failed" "$LOGS/apt2-update.log"
    timed_served a_r_download "$APT_FETCH" "$APT" "$R/a-debs" /dev/null "${A_PKGS[@]}"
    timed_served a_r_extract "$EXTRACT" "$R/a-debs" "$R/a-ref"

    if ((run == 1)); then
        for dir in a-canopy a-ref; do
            chroot "$R/$dir" /bin/bash -c true 2>"$LOGS/chroot.log" ||
                fail_step "chroot $dir /bin/bash -c true failed: not a runnable root" "$LOGS/chroot.log"
        done
        N_A=$(wc -l <"$R/a-debs/names")
        same_set A "$R/a-debs/names"
        diff <(tree_listing "$R/a-canopy") <(tree_listing "$R/a-ref") >"$LOGS/tree-a.diff" || true
        TREE_DIFF=$(grep -c '^[<>]' "$LOGS/tree-a.diff" || true)
        ((TREE_DIFF == 0)) ||
            odd "canopy's checkout of A and the dpkg-deb -x tree differ in $TREE_DIFF listing lines (path or type): $(grep '^[<>]' "$LOGS/tree-a.diff" | head -n 5 | tr '\n' ' ')"
        A_TREE_BYTES=$(du -sb "$R/a-ref" | cut -f1)
        A_TREE_FILES=$(find "$R/a-ref" -type f | wc -l)
    fi

    # b. a second root B that shares most of A's packages
    timed_served b_c_assemble "$CANOPY_RUN" "$CANOPY" "$S" assemble B --from bench "${ASSEMBLE_FLAGS[@]}" "${B_PKGS[@]}"
    read -r n d < <(resolved b_c_assemble) || fail_step "no 'resolved' line from assemble B" "$LOGS/b_c_assemble.log"
    record b_c_resolved "$n"
    record b_c_downloaded "$d"
    timed_served b_c_checkout "$CANOPY_RUN" "$CANOPY" "$S" checkout B "$R/b-canopy" --hardlink
    timed_served b_r_download "$APT_FETCH" "$APT" "$R/b-debs" /dev/null "${B_PKGS[@]}"
    timed_served b_r_extract "$EXTRACT" "$R/b-debs" "$R/b-ref"
    # The same host keeping A's .debs: resolves B and downloads only what it lacks.
    timed_served b_r_download_new "$APT_FETCH" "$APT" "$R/b-new-debs" "$R/a-debs/names" "${B_PKGS[@]}"
    if ((run == 1)); then
        chroot "$R/b-canopy" /bin/bash -c true 2>"$LOGS/chroot.log" ||
            fail_step "chroot b-canopy /bin/bash -c true failed: not a runnable root" "$LOGS/chroot.log"
        N_B=$(wc -l <"$R/b-debs/names")
        NEW_IN_B=$(comm -13 "$R/a-debs/names" "$R/b-debs/names" | wc -l)
        same_set B "$R/b-debs/names"
    fi
    rm -rf -- "$R/b-ref" "$R/b-debs" "$R/b-new-debs" "$R/b-canopy"

    # c. upgrade: one library of A republished with a higher version
    ln -- "$UP_DEB" "$REPO/pool/" 2>/dev/null || cp -- "$UP_DEB" "$REPO/pool/"
    publish
    timed_served c_c_upgrade "$CANOPY_RUN" "$CANOPY" "$S" upgrade A
    read -r n d < <(resolved c_c_upgrade) || fail_step "no 'resolved' line from upgrade A" "$LOGS/c_c_upgrade.log"
    record c_c_resolved "$n"
    record c_c_downloaded "$d"
    grep -q "$UPGRADE $UP_VERSION_OLD → $UP_VERSION" "$LOGS/c_c_upgrade.log" ||
        odd "canopy upgrade did not list '$UPGRADE $UP_VERSION_OLD → $UP_VERSION' (run $run)"
    timed_served c_c_checkout "$CANOPY_RUN" "$CANOPY" "$S" checkout A "$R/c-canopy" --hardlink
    # Reference 1: what unpacking per host does, everything again.
    timed_served c_r_update "$APT_UPDATE" "$APT"
    timed_served c_r_download "$APT_FETCH" "$APT" "$R/c-debs" /dev/null "${A_PKGS[@]}"
    timed_served c_r_extract "$EXTRACT" "$R/c-debs" "$R/c-ref"
    # Reference 2: only the changed package, unpacked over a copy of the previous tree.
    timed_served c_r1_update "$APT_UPDATE" "$APT2"
    timed_served c_r1_download "$APT_DOWNLOAD" "$APT2" "$R/c1-debs" "$UPGRADE"
    timed_served c_r1_copy 'cp -a "$1" "$2"' "$R/a-ref" "$R/c1-ref"
    timed_served c_r1_extract "$EXTRACT" "$R/c1-debs" "$R/c1-ref"
    for dir in c-canopy c-ref c1-ref; do
        grep -qF "$UP_MARK" "$R/$dir/$UP_FILE" || odd "$dir/$UP_FILE lacks the rebuilt content (run $run)"
    done
    if ((run == 1)); then
        chroot "$R/c-canopy" /bin/bash -c true 2>"$LOGS/chroot.log" ||
            fail_step "chroot c-canopy /bin/bash -c true failed after the upgrade" "$LOGS/chroot.log"
    fi
    rm -rf -- "$R"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
sum() { awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) { if (ARGV[i] == "-") { print "-"; exit } s += ARGV[i] } printf "%.4f", s }' "$@"; }
mib() {
    awk -v b="$1" 'BEGIN { if (b == "-" || b == "") print "-"
        else if (b < 1048576) printf "%.0f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }'
}

mi() { m "$1" | cut -d. -f1; }   # a median count, as an integer

# served_desc KEYS: what nginx served for the +-joined steps (medians, summed):
# ".debs and their bytes; every byte including metadata, and the requests".
served_desc() {
    local k ks d=0 db=0 b=0 n=0
    IFS=+ read -r -a ks <<<"$1"
    for k in "${ks[@]}"; do
        d=$((d + $(mi "${k}_debs")))
        db=$((db + $(mi "${k}_debbytes")))
        b=$((b + $(mi "${k}_bytes")))
        n=$((n + $(mi "${k}_req")))
    done
    printf '%d .debs %s; all %s, %d req' "$d" "$(mib "$db")" "$(mib "$b")" "$n"
}

# seconds KEYS: the median over runs of the +-joined steps' time, summed per run.
seconds() {
    local k ks i v per runs=()
    IFS=+ read -r -a ks <<<"$1"
    for ((i = 0; i < RUNS; i++)); do
        v=0
        for k in "${ks[@]}"; do
            read -r -a per <<<"${VALS[$k]}"
            v=$(sum "$v" "${per[i]}")
        done
        runs+=("$v")
    done
    median "${runs[*]}"
}

line() {   # line LABEL CANOPY_KEYS REF_KEYS
    local c r
    c=$(seconds "$2")
    r=$(seconds "$3")
    printf '%-46s %9s %9s %7s  %-44s %s\n' "$1" "$(fmt "$c" %.2f)" "$(fmt "$r" %.2f)" "$(ratio "$c" "$r")" \
        "$(served_desc "$2")" "$(served_desc "$3")"
}

report() {
    local rev args=()
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev+dirty"
    echo "roots from a Debian repository: canopy vs apt-get download + dpkg-deb -x — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cpus; $CANOPY_VERSION ($CANOPY, tree at $rev); apt $(dpkg-query -W -f '${Version}' apt 2>/dev/null)"
    echo "repository: ${#DEBFILES[@]} real .debs ($(mib "$DEB_BYTES")), pool/ + signed InRelease, nginx on 127.0.0.1"
    echo "root A: closure of ${A_PKGS[*]}: $N_A packages ($A_TREE_FILES files, $(mib "$A_TREE_BYTES") unpacked)"
    echo "root B: closure of ${B_PKGS[*]}: $N_B packages, $NEW_IN_B not in A"
    echo "upgrade: $UPGRADE $UP_VERSION_OLD -> $UP_VERSION ($(mib "$(stat -c %s "$UP_DEB")"), /$UP_FILE changed)"
    echo "canopy said: A resolved $(mi a_c_resolved), downloaded $(mi a_c_downloaded);" \
        "B resolved $(mi b_c_resolved), downloaded $(mi b_c_downloaded);" \
        "upgrade resolved $(mi c_c_resolved), downloaded $(mi c_c_downloaded)"
    echo "median of $RUNS runs, wall seconds, warm page cache; ratio = canopy / reference"
    echo "downloaded, as nginx served it: .debs and their bytes; all = with the metadata, and requests"
    echo
    printf '%-46s %9s %9s %7s  %-44s %s\n' "step" "canopy s" "ref s" "ratio" "canopy downloaded" "reference downloaded"
    echo "a. root A from nothing"
    line "  canopy init + repo add | apt-get update" a_c_setup a_r_update
    line "  assemble A --from | apt-get download" a_c_assemble a_r_download
    line "  checkout --hardlink | dpkg-deb -x each" a_c_checkout a_r_extract
    line "  init..assemble | update + download" a_c_setup+a_c_assemble a_r_update+a_r_download
    line "  total: runnable directory" a_c_setup+a_c_assemble+a_c_checkout a_r_update+a_r_download+a_r_extract
    echo "b. root B, after A on the same store / host"
    line "  assemble B --from | apt-get download all B" b_c_assemble b_r_download
    line "  checkout --hardlink | dpkg-deb -x each" b_c_checkout b_r_extract
    line "  total" b_c_assemble+b_c_checkout b_r_download+b_r_extract
    line "  total | reusing A's .debs (download new)" b_c_assemble+b_c_checkout b_r_download_new+b_r_extract
    echo "c. upgrade A: $UPGRADE republished"
    line "  upgrade A | update + download all A" c_c_upgrade c_r_update+c_r_download
    line "  checkout --hardlink | dpkg-deb -x each" c_c_checkout c_r_extract
    line "  total | everything again" c_c_upgrade+c_c_checkout c_r_update+c_r_download+c_r_extract
    line "  upgrade A | update + download $UPGRADE" c_c_upgrade c_r1_update+c_r1_download
    line "  total | one .deb over cp -a of the tree" c_c_upgrade+c_c_checkout c_r1_update+c_r1_download+c_r1_copy+c_r1_extract
    echo "  (of which cp -a of A's tree: $(fmt "$(m c_r1_copy)" %.2f) s, dpkg-deb -x of $UPGRADE: $(fmt "$(m c_r1_extract)" %.2f) s)"
    echo
    local k
    printf 'every run (s):'
    for k in $(printf '%s\n' "${!VALS[@]}" | grep -v '_req$\|_bytes$\|_debs$\|_debbytes$\|_resolved$\|_downloaded$' | sort); do
        printf ' %s=[%s]' "$k" "$(echo ${VALS[$k]} | tr ' ' ,)"
    done
    echo
    echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER ($(nproc) cores, shared: expect noise)"
    if ((${#ODD[@]})); then
        echo "notes:"
        printf '  - %s\n' "${ODD[@]}"
    fi
    ((BUILD)) || args+=(--canopy "$CANOPY")
    ((RUNS != 3)) && args+=(--runs "$RUNS")
    [[ $A_ARG != "$DEFAULT_A" ]] && args+=(--a "$A_ARG")
    [[ $B_ARG != "$DEFAULT_B" ]] && args+=(--b "$B_ARG")
    [[ $UPGRADE != "$DEFAULT_UPGRADE" ]] && args+=(--upgrade "$UPGRADE")
    echo "reproduce: benches/repo.sh ${args[*]}"
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
say "report written to $OUT"
