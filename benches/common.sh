# benches/common.sh — what benches/import.sh and benches/mount.sh share: messages,
# installing missing tools, building canopy, and the set of real .debs they measure.
# Sourced, not run. The caller sets ROOT, BUILD, CANOPY, CLOSURE, PACKAGES and DEBS.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_update_once() {
    ((APT_UPDATED)) && return 0
    say "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
}

# ensure_packages COMMAND:PACKAGE...: installs the packages whose command is missing.
ensure_packages() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]} and not root: install them with apt-get install ${missing[*]}"
    say "installing ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
        apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
            || die "could not install ${missing[*]}"
    fi
}

# require_tools COMMAND...: dies naming the first that is not on PATH.
require_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "required tool not found: $t"
    done
}

# Builds target/release/canopy unless --no-build or --canopy; checks CANOPY exists.
build_canopy() {
    if ((BUILD)); then
        command -v cargo >/dev/null || die "cargo not found (or pass --canopy PATH / --no-build)"
        say "cargo build --release (in $ROOT)"
        (cd "$ROOT" && cargo build --release --bin canopy) ||
            die "cargo build --release failed (mid-edit? retry, or pass --canopy PATH)"
    fi
    [[ -x $CANOPY ]] || die "canopy binary not found at $CANOPY"
}

# Package names of the closure of PACKAGES (or PACKAGES itself with CLOSURE=0).
compute_names() {
    if ((CLOSURE == 0)); then
        printf '%s\n' "${PACKAGES[@]}"
        return
    fi
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "${PACKAGES[@]}" |
        grep -v '^ ' |           # dependency lines are indented; keep package headers
        grep -v '<' |            # virtual packages: <name>
        awk -v arch="$(dpkg --print-architecture)" '{
            n = $1
            if (index(n, ":")) {
                split(n, p, ":")
                if (p[2] != arch && p[2] != "all") next
                n = p[1]
            }
            print n
        }' | sort -u
}

# apt-get download --print-uris: 'URL' FILENAME SIZE HASH — exact file names and sizes
# of the candidates, without network. It omits files already present in the current
# directory, so ask from an empty one.
print_uris() {
    mkdir -p "$DEBS/.print-uris"
    (cd "$DEBS/.print-uris" && apt-get download --print-uris "${NAMES[@]}")
}

# Resolves the package set and makes sure its .debs are in DEBS (downloading only what
# is missing or of the wrong size). Sets NAMES, DEBFILES, NPKG, DEB_BYTES, PKGNAMES,
# OVERLAPS and ASSEMBLE_FLAGS (--allow-overwrite when two packages ship the same path: canopy's
# assemble refuses that otherwise, while dpkg-deb -x and ostree keep the last one).
fetch_debs() {
    NAMES=()
    if ! mapfile -t NAMES < <(compute_names 2>/dev/null) || ((${#NAMES[@]} == 0)); then
        apt_update_once
        mapfile -t NAMES < <(compute_names)
    fi
    ((${#NAMES[@]})) || die "empty package set for: ${PACKAGES[*]}"

    mkdir -p "$DEBS"
    local uris
    if ! uris=$(print_uris 2>/dev/null); then
        apt_update_once
        uris=$(print_uris) || die "apt-get cannot find some of: ${NAMES[*]}"
    fi

    DEBFILES=()
    local to_fetch=() _url file size _hash f
    while read -r _url file size _hash; do
        [[ -n ${file:-} ]] || continue
        DEBFILES+=("$DEBS/$file")
        if [[ ! -f $DEBS/$file || $(stat -c %s "$DEBS/$file") != "$size" ]]; then
            to_fetch+=("${file%%_*}")
        fi
    done <<<"$uris"
    ((${#DEBFILES[@]} == ${#NAMES[@]})) ||
        die "apt-get download --print-uris listed ${#DEBFILES[@]} files for ${#NAMES[@]} packages"

    if ((${#to_fetch[@]})); then
        say "downloading ${#to_fetch[@]} of ${#NAMES[@]} .debs into $DEBS"
        (cd "$DEBS" && apt-get -o APT::Sandbox::User=root -q download "${to_fetch[@]}" >&2) ||
            die "apt-get download failed"
    else
        say "reusing ${#DEBFILES[@]} cached .debs in $DEBS"
    fi
    for f in "${DEBFILES[@]}"; do [[ -f $f ]] || die "missing after download: $f"; done

    DEB_BYTES=0
    PKGNAMES=()
    for f in "${DEBFILES[@]}"; do
        DEB_BYTES=$((DEB_BYTES + $(stat -c %s "$f")))
        PKGNAMES+=("$(dpkg-deb -f "$f" Package)")
    done
    NPKG=${#DEBFILES[@]}

    ASSEMBLE_FLAGS=()
    OVERLAPS=$(for f in "${DEBFILES[@]}"; do
            dpkg-deb --fsys-tarfile "$f" | tar -t | { grep -v '/$' || true; } | sed 's#^\./##' | sort -u
        done | sort | uniq -d | wc -l) || die "could not list the contents of the .debs"
    if ((OVERLAPS > 0)); then
        say "$OVERLAPS paths are shipped by more than one package: assembling with --allow-overwrite"
        ASSEMBLE_FLAGS=(--allow-overwrite)
    fi
}
