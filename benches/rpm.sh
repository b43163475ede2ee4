#!/usr/bin/env bash
# benches/rpm.sh — RPM import and rpm-md resolution against their references, same run.
#
# From the .debs of a closure (default: bash coreutils), builds one RPM per package with
# rpmbuild (the .deb's files, its Depends as Requires, its Provides), then measures with
# hyperfine (medians):
#   1. import: `canopy import rpm` of the set into an empty store vs `rpm2cpio | cpio
#      -idm` of each into one tree + `ostree commit` of that tree (a bare-user repo);
#   2. resolution: `canopy upgrade ROOT --dry-run` (reads the index, resolves the root's
#      request, compares; downloads nothing) on an rpm-md repository of 60,000 packages
#      (createrepo_c of the set, grown by benches/rpm-index.py) vs the same on a flat
#      Debian repository holding bookworm's whole Packages index with the set's .debs;
#      and both again on indexes of the set alone (what does not depend on the index).
# Prints a table (and writes it to target/bench-rpm.txt). Figures are reported, never
# asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/rpm.sh [options] [PACKAGE...]

Benchmarks `canopy import rpm` against `rpm2cpio | cpio -idm` + `ostree commit`, and
the rpm-md resolver on a 60,000-package index against the Debian resolver on bookworm's
index, on RPMs rebuilt from the dependency closure of PACKAGE... (default: bash coreutils).

options:
  --debs DIR        .deb cache, reused when present (default: target/bench-debs)
  --runs N          hyperfine runs per command (default: 5)
  --index-size N    packages in the generated rpm-md index (default: 60000)
  --out FILE        also write the report here (default: target/bench-rpm.txt)
  --no-build        do not run `cargo build --release`; use target/release/canopy as is
  --canopy PATH     use this canopy binary (implies --no-build)
  --keep            keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help        this text

Needs root (the RPMs keep root-owned files; ostree and cpio restore owners) and apt-get
to install hyperfine, rpm, rpm2cpio, createrepo-c, ostree, cpio, lz4 and dpkg-dev when
missing. The Debian index is the machine's own apt list of bookworm main (apt-get update
when there is none); nothing else uses the network.

examples:
  benches/rpm.sh --canopy target/release/canopy
  benches/rpm.sh --runs 9 --index-size 120000 bash coreutils python3
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEBS=$ROOT/target/bench-debs
RUNS=5
INDEX=60000
OUT=$ROOT/target/bench-rpm.txt
CLOSURE=1
BUILD=1
CANOPY=$ROOT/target/release/canopy
KEEP=0
FAILED_LOG=$ROOT/target/bench-rpm-failed.log
PACKAGES=()
while (($#)); do
    case $1 in
        --debs) DEBS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --index-size) INDEX=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=$(realpath "$2"); BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=(bash coreutils)
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number, not $RUNS"
[[ $INDEX =~ ^[1-9][0-9]*$ ]] || die "--index-size wants a positive number, not $INDEX"
[[ $(id -u) -eq 0 ]] || die "needs root (root-owned files in the RPMs, cpio and ostree restore owners)"

ensure_packages hyperfine:hyperfine rpmbuild:rpm rpm2cpio:rpm2cpio createrepo_c:createrepo-c \
    ostree:ostree cpio:cpio lz4:lz4 dpkg-scanpackages:dpkg-dev python3:python3
build_canopy
fetch_debs

release() { :; }
scratch rpm
export CANOPY_STORE=$TMP/store
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "scratch $TMP; load: $LOAD_BEFORE"

# ---------------------------------------------------------------- the RPMs
# One spec per .deb: its files as %files (directories as %dir), Debian's version split
# into epoch, version and release (rpm allows no '-' in either), its Depends and
# Pre-Depends (first alternative, names only, kept when the set has or provides it) as
# Requires, its Provides.
say "building ${#DEBFILES[@]} RPMs with rpmbuild"
top=$TMP/rpmtop
mkdir -p "$top" "$TMP/rpms"
declare -A HAVE=()
for f in "${DEBFILES[@]}"; do
    HAVE[$(dpkg-deb -f "$f" Package)]=1
    for p in $(dpkg-deb -f "$f" Provides | tr ',' '\n' | sed 's/(.*//; s/:.*//'); do HAVE[$p]=1; done
done
names_of() {   # Depends-like field → the names the set has, one a line
    tr ',' '\n' <<<"$1" | sed 's/|.*//; s/(.*//; s/:.*//; s/[[:space:]]//g' |
        while read -r n; do [[ -n $n && -n ${HAVE[$n]:-} ]] && echo "$n"; done | sort -u
}
for f in "${DEBFILES[@]}"; do
    name=$(dpkg-deb -f "$f" Package)
    full=$(dpkg-deb -f "$f" Version)
    epoch=
    [[ $full == *:* ]] && epoch=${full%%:*} && full=${full#*:}
    version=${full%-*}
    rel=1
    [[ $full == *-* ]] && rel=${full##*-}
    version=${version//-/_}
    arch=$(dpkg-deb -f "$f" Architecture)
    [[ $arch == all ]] && arch=noarch || arch=x86_64
    tree=$TMP/trees/$name
    mkdir -p "$tree"
    dpkg-deb -x "$f" "$tree"
    {
        echo "Name: $name"
        echo "Version: $version"
        echo "Release: $rel"
        [[ -n $epoch ]] && echo "Epoch: $epoch"
        echo "Summary: $name rebuilt from its .deb for canopy's RPM benchmark"
        echo "License: see /usr/share/doc/$name/copyright"
        echo "BuildArch: $arch"
        echo "AutoReqProv: no"
        names_of "$(dpkg-deb -f "$f" Depends), $(dpkg-deb -f "$f" Pre-Depends)" |
            grep -vx -- "$name" | sed 's/^/Requires: /' || true
        for p in $(dpkg-deb -f "$f" Provides | tr ',' '\n' | sed 's/(.*//; s/:.*//'); do
            echo "Provides: $p"
        done
        echo '%global __os_install_post %{nil}'
        echo '%global debug_package %{nil}'
        echo '%description'
        echo "The files of $(basename "$f")."
        echo '%install'
        echo "cp -a $tree/. %{buildroot}/"
        echo '%files'
        echo '%defattr(-,root,root,-)'
        # rpm reads %files as globs with macros: '%' doubled, a glob character as a class.
        (cd "$tree" && find . -mindepth 1 \( -type d -printf '%%dir "%P"\n' \) -o -printf '"%P"\n') |
            sed 's/%/%%/g; s/^%%dir/%dir/; s/"\(.*\)"/"\/\1"/; s/[][*?]/[&]/g'
    } >"$TMP/$name.spec"
    rpmbuild -bb --quiet --define "_topdir $top" --define '_binary_payload w3.zstdio' \
        --define '_build_id_links none' --target "$arch" "$TMP/$name.spec" \
        >"$TMP/$name.rpmbuild.log" 2>&1 || fail_step "rpmbuild of $name failed" "$TMP/$name.rpmbuild.log"
done
find "$top/RPMS" -name '*.rpm' -exec mv -t "$TMP/rpms" {} +
mapfile -t RPMS < <(find "$TMP/rpms" -name '*.rpm' | sort)
((${#RPMS[@]} == ${#DEBFILES[@]})) || die "rpmbuild made ${#RPMS[@]} RPMs for ${#DEBFILES[@]} .debs"
rm -rf "$TMP/trees" "$top"
RPM_BYTES=$(cat "${RPMS[@]}" | wc -c)

# The median, not the mean: on a shared machine one run in five can take twice as long.
hf() {   # hf NAME RUNS HYPERFINE-ARGS... : the median in seconds in RESULT[NAME], runs in RUNS_OF[NAME]
    local name=$1 runs=$2
    shift 2
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$TMP/$name.json" "$@" >&2
    RESULT[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$TMP/$name.json")
    RUNS_OF[$name]=$(python3 -c 'import json,sys; print(" ".join("%.3f" % t for t in json.load(open(sys.argv[1]))["results"][0]["times"]))' "$TMP/$name.json")
}
declare -A RESULT=() RUNS_OF=()

# ---------------------------------------------------------------- 1. import
say "import: canopy import rpm vs rpm2cpio | cpio -idm + ostree commit (${#RPMS[@]} RPMs)"
printf '%s\n' "${RPMS[@]}" >"$TMP/rpms.list"
cat >"$TMP/reference-import.sh" <<EOF
set -euo pipefail
mkdir "$TMP/tree"
while read -r r; do
    (cd "$TMP/tree" && rpm2cpio "\$r" | cpio -idm --quiet)
done <"$TMP/rpms.list"
ostree --repo="$TMP/ostree" commit --branch=rpm --tree=dir="$TMP/tree" >/dev/null
EOF
hf import "$RUNS" --prepare "bash -c 'rm -rf $TMP/istore && $CANOPY --store $TMP/istore -q init'" \
    "$CANOPY --store $TMP/istore -q import rpm ${RPMS[*]}"
hf reference "$RUNS" --prepare "bash -c 'rm -rf $TMP/tree $TMP/ostree && ostree --repo=$TMP/ostree init --mode=bare-user'" \
    "bash $TMP/reference-import.sh"
imported=$("$CANOPY" --store "$TMP/istore" packages list | grep -c . || true)
TREE_BYTES=$(du -sb "$TMP/tree" | cut -f1)
rm -rf "$TMP/istore" "$TMP/tree" "$TMP/ostree"

# ---------------------------------------------------------------- 2. resolution
say "rpm-md index: createrepo_c of the set, grown to $INDEX packages"
mkdir -p "$TMP/rpmrepo"
cp "${RPMS[@]}" "$TMP/rpmrepo/"
createrepo_c -q "$TMP/rpmrepo" >&2
cp -al "$TMP/rpmrepo" "$TMP/rpmsmall"   # the set alone, for the fixed costs
rm "$TMP/rpmsmall/repodata/repomd.xml" && cp "$TMP/rpmrepo/repodata/repomd.xml" "$TMP/rpmsmall/repodata/"
RPM_INDEX=$(python3 "$ROOT/benches/rpm-index.py" "$TMP/rpmrepo" "$INDEX")
say "$RPM_INDEX"

say "Debian index: bookworm main's Packages with the set's .debs in place of theirs"
list=$(find /var/lib/apt/lists -maxdepth 1 -name '*_dists_bookworm_main_binary-amd64_Packages*' | head -1)
if [[ -z $list ]]; then
    apt_update_once
    list=$(find /var/lib/apt/lists -maxdepth 1 -name '*_dists_bookworm_main_binary-amd64_Packages*' | head -1)
fi
[[ -n $list ]] || die "no apt list of bookworm main in /var/lib/apt/lists (is bookworm in the apt sources?)"
case $list in
    *.lz4) unpack=(lz4 -dc) ;; *.xz) unpack=(xz -dc) ;; *.gz) unpack=(gzip -dc) ;; *) unpack=(cat) ;;
esac
mkdir -p "$TMP/debrepo/pool"
ln -s "${DEBFILES[@]}" "$TMP/debrepo/pool/" 2>/dev/null || cp "${DEBFILES[@]}" "$TMP/debrepo/pool/"
(cd "$TMP/debrepo" && dpkg-scanpackages -m pool 2>/dev/null) >"$TMP/ours"
"${unpack[@]}" "$list" | awk -v names="${PKGNAMES[*]}" '
    BEGIN { RS = ""; ORS = "\n\n"; n = split(names, a, " "); for (i = 1; i <= n; i++) ours[a[i]] = 1 }
    { split($0, l, "\n"); sub(/^Package: /, "", l[1]); if (!(l[1] in ours)) print }' |
    cat - "$TMP/ours" >"$TMP/debrepo/Packages"
DEB_INDEX=$(grep -c '^Package: ' "$TMP/debrepo/Packages")
DEB_BYTES_INDEX=$(stat -c %s "$TMP/debrepo/Packages")
RPM_BYTES_INDEX=$(gzip -dc "$TMP/rpmrepo/$(sed -n 's/.*<location href="\([^"]*primary.xml.gz\)".*/\1/p' "$TMP/rpmrepo/repodata/repomd.xml")" | wc -c)
mkdir -p "$TMP/debsmall"
ln -s ../debrepo/pool "$TMP/debsmall/pool"
cp "$TMP/ours" "$TMP/debsmall/Packages"
say "Debian index: $DEB_INDEX packages ($(basename "$list"))"

"$CANOPY" -q init >/dev/null
setup=$TMP/setup.log
for r in rpm:rpmrepo rpmsmall:rpmsmall deb:debrepo debsmall:debsmall; do
    kind=(--kind deb)
    [[ $r == rpm* ]] && kind=(--kind rpm-md)
    "$CANOPY" -q repo add "${r%%:*}" "file://$TMP/${r#*:}/" "${kind[@]}" --no-verify-signature \
        >>"$setup" 2>&1 || fail_step "repo add ${r%%:*} failed" "$setup"
    "$CANOPY" -q assemble "${r%%:*}" --from "${r%%:*}" "${PACKAGES[@]}" --no-configure \
        >>"$setup" 2>&1 || fail_step "assemble --from ${r%%:*} failed" "$setup"
done
resolved() { "$CANOPY" -q upgrade "$1" --dry-run --json 2>>"$setup" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["packages"]))'; }
rpm_resolved=$(resolved rpm)
deb_resolved=$(resolved deb)
say "resolution: upgrade --dry-run on both ($rpm_resolved and $deb_resolved packages resolved)"
hf resolve_rpm "$RUNS" "$CANOPY -q upgrade rpm --dry-run"
hf resolve_deb "$RUNS" "$CANOPY -q upgrade deb --dry-run"
say "resolution on indexes of the set alone (fixed costs)"
hf resolve_rpm_small "$RUNS" "$CANOPY -q upgrade rpmsmall --dry-run"
hf resolve_deb_small "$RUNS" "$CANOPY -q upgrade debsmall --dry-run"

# ---------------------------------------------------------------- report
s() { awk -v v="$1" 'BEGIN { printf "%.3f s", v }'; }
{
    echo "canopy RPM benchmark — $(date -u +%FT%TZ), $("$CANOPY" --version 2>/dev/null || echo canopy)"
    echo "load before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; medians of $RUNS hyperfine runs"
    echo
    echo "import: ${#RPMS[@]} RPMs (rebuilt from the .debs of ${PACKAGES[*]}), $((RPM_BYTES / 1024)) KiB of RPMs, $((TREE_BYTES / 1024)) KiB unpacked; $imported packages listed after the import"
    printf '%-58s %10s %10s\n' "" "time" "ratio"
    printf '%-58s %10s %10s\n' "rpm2cpio | cpio -idm each + ostree commit (bare-user)" "$(s "${RESULT[reference]}")" "1.00"
    printf '%-58s %10s %10s\n' "canopy import rpm (empty store)" "$(s "${RESULT[import]}")" "$(ratio "${RESULT[import]}" "${RESULT[reference]}")"
    echo
    echo "resolution: request ${PACKAGES[*]}; upgrade --dry-run reads the index and resolves the request"
    echo "  rpm-md: $RPM_INDEX ($((RPM_BYTES_INDEX / 1048576)) MiB unpacked); $rpm_resolved packages resolved"
    echo "  Debian: $DEB_INDEX packages, bookworm main + the set ($((DEB_BYTES_INDEX / 1048576)) MiB); $deb_resolved packages resolved"
    printf '%-58s %10s %10s\n' "" "time" "ratio"
    printf '%-58s %10s %10s\n' "Debian resolver, bookworm-sized Packages" "$(s "${RESULT[resolve_deb]}")" "1.00"
    printf '%-58s %10s %10s\n' "rpm-md resolver, $INDEX-package primary" "$(s "${RESULT[resolve_rpm]}")" "$(ratio "${RESULT[resolve_rpm]}" "${RESULT[resolve_deb]}")"
    printf '%-58s %10s %10s\n' "Debian resolver, index of the set alone" "$(s "${RESULT[resolve_deb_small]}")" "1.00"
    printf '%-58s %10s %10s\n' "rpm-md resolver, index of the set alone" "$(s "${RESULT[resolve_rpm_small]}")" "$(ratio "${RESULT[resolve_rpm_small]}" "${RESULT[resolve_deb_small]}")"
    echo
    echo "every run (s):"
    for k in reference import resolve_deb resolve_rpm resolve_deb_small resolve_rpm_small; do printf '  %-18s %s\n' "$k" "${RUNS_OF[$k]}"; done
    echo
    echo "ratio: canopy / reference for the import, rpm-md / Debian for resolution (below 1: faster)."
    echo "reproduce: benches/rpm.sh --canopy $CANOPY --runs $RUNS --index-size $INDEX ${PACKAGES[*]}"
} | tee "$OUT"
