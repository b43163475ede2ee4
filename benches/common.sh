# benches/common.sh — what the benchmark scripts share: messages, installing missing
# tools, building canopy, the set of real .debs they measure, free ports, nginx, stopping
# processes, the scratch directory and its removal at exit, and timing and reporting.
# Sourced, not run. The caller sets ROOT, BUILD, CANOPY, CLOSURE, PACKAGES and DEBS;
# for the timing helpers also LOGS, STEP_TIMEOUT, WAIT_TIMEOUT, FAILED_LOG, and exports
# TIMEFILE (usually $LOGS/time); for scratch, KEEP and a `release` function; for
# start_nginx, WAIT_TIMEOUT.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_update_once() {
    ((APT_UPDATED)) && return 0
    say "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
}

# ensure_packages COMMAND:PACKAGE...: installs the packages whose command is missing
# (:PACKAGE for a package with no command: installs it unless dpkg has it installed).
ensure_packages() {
    local pair missing=()
    for pair in "$@"; do
        if [[ -z ${pair%%:*} ]]; then
            [[ $(dpkg-query -W -f '${Status}' "${pair#*:}" 2>/dev/null) == *" installed" ]] ||
                missing+=("${pair#*:}")
        else
            command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
        fi
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

# free_port [PORT...]: a TCP port on 127.0.0.1 that nothing listens on, other than those
# named; fails after 200 tries.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 40000))
        [[ " $* " == *" $p "* ]] && continue
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}

# stop_pid PID: TERM, wait up to 5 s, then KILL (nothing when PID is empty).
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_nginx DIR PORT ROOT PATH [DIRECTIVES]: nginx in the foreground (its pid in
# NGINX_PID), config, logs and temporary files under DIR, serving the directory ROOT on
# 127.0.0.1:PORT, with DIRECTIVES added to its http block; waits up to WAIT_TIMEOUT
# seconds until PATH answers. NGINX_WORKERS sets worker_processes (default auto: one per
# online CPU, whatever CPUs nginx is later pinned to).
start_nginx() {
    local dir=$1 port=$2 root=$3 path=$4 directives=${5:-}
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
user root;
worker_processes ${NGINX_WORKERS:-auto};
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    sendfile on;
    $directives
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $root;
    }
}
EOF
    nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" >"$dir/logs/nginx.out" 2>&1 &
    NGINX_PID=$!
    wait_answering "http://127.0.0.1:$port$path" "$NGINX_PID" nginx "$dir/logs/error.log"
}

# wait_answering URL PID WHAT LOG: waits up to WAIT_TIMEOUT seconds until URL answers;
# fails the step, showing LOG, if process PID (WHAT) exits first or the time runs out.
wait_answering() {
    local url=$1 pid=$2 what=$3 log=$4 deadline
    deadline=$(($(date +%s) + WAIT_TIMEOUT))
    until curl -sf -o /dev/null "$url"; do
        kill -0 "$pid" 2>/dev/null || fail_step "$what exited" "$log"
        (($(date +%s) < deadline)) || fail_step "$what not answering after ${WAIT_TIMEOUT}s" "$log"
        sleep 0.05
    done
}

# start_serve_pinned STORE PORT CPUS: `canopy serve` of STORE on 127.0.0.1:PORT, pinned
# to CPUS (taskset -c), its pid in SERVER_PID and its output in LOGS/serve.{out,err};
# waits up to WAIT_TIMEOUT seconds until it answers.
start_serve_pinned() {
    local store=$1 port=$2 cpus=$3
    taskset -c "$cpus" "$CANOPY" --store "$store" serve --listen "127.0.0.1:$port" \
        >"$LOGS/serve.out" 2>"$LOGS/serve.err" &
    SERVER_PID=$!
    wait_answering "http://127.0.0.1:$port/v1/roots" "$SERVER_PID" "canopy serve" "$LOGS/serve.err"
}

# pin_nginx CPUS: pins nginx (NGINX_PID) and its workers to CPUS.
pin_nginx() {
    local p
    taskset -a -p -c "$1" "$NGINX_PID" >/dev/null
    for p in $(children "$NGINX_PID"); do taskset -a -p -c "$1" "$p" >/dev/null; done
}

# scratch NAME: makes TMP (target/bench-tmp/NAME.XXXXXX) and arranges that at exit, also
# after a failed command (whose line is printed), Ctrl-C or TERM, the caller's `release`
# function stops what the script started, then TMP is removed: unless KEEP=1, or
# `release` failed (something it could not free, such as a mount, is still under TMP).
scratch() {
    mkdir -p "$ROOT/target/bench-tmp"
    TMP=$(mktemp -d "$ROOT/target/bench-tmp/$1.XXXXXX")
    trap on_exit EXIT
    set -E
    trap 'printf "error: line %s: \"%s\" failed (status %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

on_exit() {
    local rc=$? freed=1
    trap - EXIT INT TERM
    release || freed=0
    if ((KEEP)); then
        say "kept scratch directory $TMP"
    elif ((!freed)); then
        say "something under $TMP could not be released; not removing it"
    else
        rm -rf --one-file-system -- "$TMP"
        rmdir -- "$ROOT/target/bench-tmp" 2>/dev/null || true
    fi
    exit "$rc"
}

# ---------------------------------------------------------------- timing and reporting
# children PID: the direct children of PID (nginx's workers), from
# /proc/PID/task/*/children rather than pgrep: pgrep reads every process's stat, and
# one process stuck on a hung mount elsewhere on the machine would hang the bench.
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# cpu_ticks PID...: user+system clock ticks (all threads) of these processes and their
# direct children. Divide by CLK_TCK for seconds.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local p t=0 f kids=()
    for p in "$@"; do
        # shellcheck disable=SC2207
        kids+=($(children "$p"))
    done
    for p in "$@" "${kids[@]}"; do
        f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
        # shellcheck disable=SC2086
        set -- $f
        t=$((t + ${12} + ${13}))   # utime, stime: fields 14 and 15 of stat
    done
    echo "$t"
}

declare -A VALS=()     # key -> space-separated values, one per run
record() { VALS[$1]="${VALS[$1]:-} $2"; }

now() { date +%s.%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

fail_step() {   # fail_step WHAT LOG
    printf 'error: %s\n' "$1" >&2
    [[ -f $2 ]] && tail -n 30 "$2" | sed 's/^/    /' >&2
    cp -- "$2" "$FAILED_LOG" 2>/dev/null &&
        printf '  full log: %s\n' "$FAILED_LOG" >&2
    exit 1
}

# timed KEY SCRIPT ARG...: run `bash -c SCRIPT _ ARG...` under a timeout, stdout+stderr
# to $LOGS/KEY.log; add its wall time to VALS[KEY] and leave it in $T. The clock is read
# inside that bash ($EPOCHREALTIME), so starting bash and timeout is not counted.
T=0
timed() {
    local key=$1 script=$2 rc=0 t0 t1
    shift 2
    rm -f -- "$LOGS/time"
    timeout -k 10 "$STEP_TIMEOUT" bash -c 't0=$EPOCHREALTIME; { '"$script"'
}; rc=$?; printf "%s %s\n" "$t0" "$EPOCHREALTIME" >"$TIMEFILE"; exit $rc' _ "$@" \
        >"$LOGS/$key.log" 2>&1 || rc=$?
    ((rc == 0)) || fail_step "step \"$key\" failed (exit $rc): $script $*" "$LOGS/$key.log"
    read -r t0 t1 <"$LOGS/time" || fail_step "step \"$key\" left no time" "$LOGS/$key.log"
    T=$(elapsed "$t0" "$t1")
    record "$key" "$T"
}

# wait_line FILE PATTERN PID WHAT: wait until FILE's first line matches PATTERN, while PID
# lives, at most WAIT_TIMEOUT seconds. Polls every 5 ms with builtins only.
LINE=
wait_line() {
    local file=$1 pat=$2 pid=$3 what=$4 deadline
    deadline=$(($(date +%s) + WAIT_TIMEOUT))
    while :; do
        LINE=
        [[ -s $file ]] && IFS= read -r LINE <"$file" || true
        [[ $LINE =~ $pat ]] && return 0
        kill -0 "$pid" 2>/dev/null || fail_step "$what exited before it was ready" "${file%.out}.err"
        (($(date +%s) < deadline)) || fail_step "$what not ready after ${WAIT_TIMEOUT}s" "${file%.out}.err"
        sleep 0.005
    done
}

median() {   # median of the whitespace-separated numbers in $1
    printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 }
        END { if (NR == 0) print "-";
              else if (NR % 2) printf "%.4f", a[(NR + 1) / 2];
              else printf "%.4f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
m() { median "${VALS[$1]:-}"; }

ratio() {   # ratio A B -> A/B with 2 decimals (3 significant digits below 0.1), or "-"
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"
        else if (a / b < 0.1) printf "%.3g", a / b
        else printf "%.2f", a / b }'
}
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "-" || v == "") print "-"; else printf f, v }'; }
