#!/usr/bin/env bash
# Berth registry benchmark: Berth vs. the CNCF distribution registry (2.8), or any
# registry already running on a loopback address. See bench/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-python3}"
REGBENCH="$HERE/regbench.py"

BERTH_BIN="$ROOT/target/release/berth"
BERTH_ARGS=()
REF_BIN="/usr/bin/docker-registry"
WANT_BERTH=""
WANT_REF=""
URL=""
URL_PID=""
URL_LABEL="registry"
QUICK=0
URL_USER=""
# Berth started by this script: its root password (BERTH_INITIAL_ROOT_PASSWORD), the
# projects that own the benchmark's repositories, and the repository names used.
BERTH_PASSWORD="${BERTH_BENCH_PASSWORD:-bench-root-password}"
REPO_PREFIX="bench/p"            # PREFIX/single, /chunked, /small, /tags, /pull, /concurrent
CATALOG_PREFIX="bench/catalog"   # PREFIX/r00000 ... for the _catalog test
PUBLIC_PROJECT="bench/public"    # PROJECT/small: anonymous manifest GETs
WORK_PARENT="${TMPDIR:-/tmp}"
OUT_DIR=""
KEEP=0
# Berth's metadata backends, each benched in turn (labels berth-sqlite, berth-postgres).
# PostgreSQL: a fresh database on PG_URL's server per run, dropped afterwards.
BACKENDS="sqlite,postgres"
PG_URL="${BERTH_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

usage() {
  cat <<'EOF'
Usage:
  bench/run.sh [--berth BIN] [--reference]   start Berth and the reference registry,
                                             bench both, print a side-by-side table
                                             (default when no target is named)
  bench/run.sh --reference-only              bench only the reference registry
  bench/run.sh --berth-only [--berth BIN]    bench only Berth
  bench/run.sh --url http://127.0.0.1:PORT [--pid PID] [--label NAME] [--user U]
                                             bench one already-running registry
Options:
  --berth BIN        Berth binary (default: <repo>/target/release/berth)
  --berth-arg ARG    extra argument for `berth serve` (repeatable)
  --backends LIST    Berth's metadata backends to bench, in turn: sqlite, postgres or
                     sqlite,postgres (default: sqlite,postgres)
  --pg-url URL       PostgreSQL server for the postgres backend; a fresh database is
                     created there (psql) for the run and dropped after
                     (default: postgres://postgres@127.0.0.1:5432/postgres,
                     or $BERTH_BENCH_PG_URL)
  --registry-bin BIN reference registry binary (default: /usr/bin/docker-registry)
  --quick            smoke run: 32/64 MiB blobs, 500 tags, 100 repos, 3 s wrk,
                     skopeo pull of 5 x 4 MiB layers, 10 concurrent 4 MiB pushers
  --workdir DIR      parent dir for the temporary blobs and data dirs (default: $TMPDIR or /tmp);
                     the registries' data dirs live there too, so it is the disk measured
  --out DIR          where to write results (default: a new temp dir; kept and printed)
  --keep             keep the work dir (blobs, registry data) instead of deleting it
  --user USER        with --url: user for the registry's token service (the password or
                     access token comes from the environment variable REGBENCH_PASSWORD);
                     the repositories used are bench/p/{single,chunked,small,tags,pull,concurrent} and
                     bench/catalog/rNNNNN, so on Berth create the projects bench/p and
                     bench/catalog first
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --berth) BERTH_BIN="$2"; WANT_BERTH=1; shift 2 ;;
    --berth-arg) BERTH_ARGS+=("$2"); shift 2 ;;
    --backends) BACKENDS="$2"; shift 2 ;;
    --pg-url) PG_URL="$2"; shift 2 ;;
    --reference) WANT_REF=1; shift ;;
    --reference-only) WANT_REF=1; WANT_BERTH=0; shift ;;
    --berth-only) WANT_BERTH=1; WANT_REF=0; shift ;;
    --registry-bin) REF_BIN="$2"; shift 2 ;;
    --url) URL="$2"; shift 2 ;;
    --pid) URL_PID="$2"; shift 2 ;;
    --label) URL_LABEL="$2"; shift 2 ;;
    --user) URL_USER="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --workdir) WORK_PARENT="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

# Default: both. Naming only one of --berth/--reference still runs both unless an
# *-only flag says otherwise (so `--berth BIN --quick` compares against the reference).
if [[ -z "$URL" ]]; then
  [[ -z "$WANT_BERTH" ]] && WANT_BERTH=1
  [[ -z "$WANT_REF" ]] && WANT_REF=1
  if [[ "$WANT_BERTH" != 1 && "$WANT_REF" != 1 ]]; then
    echo "run.sh: nothing to bench" >&2; exit 2
  fi
else
  WANT_BERTH=0; WANT_REF=0
  if [[ ! "$URL" =~ ^http://(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost):[0-9]+/?$ ]]; then
    echo "run.sh: --url must be http://127.x.x.x:PORT (loopback only), got: $URL" >&2
    exit 2
  fi
  URL="${URL%/}"
  if [[ -n "$URL_PID" && ! -r "/proc/$URL_PID/status" ]]; then
    echo "run.sh: --pid $URL_PID: no such process readable in /proc" >&2; exit 2
  fi
fi

# ---------------------------------------------------------------- tool checks
missing=0
need() {  # need CMD DEBIAN_PACKAGE
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "run.sh: '$1' not found; install it with: apt-get install $2" >&2
    missing=1
  fi
}
need curl curl
need wrk wrk
need openssl openssl
need dd coreutils
need sha256sum coreutils
need skopeo skopeo
need "$PY" python3
IFS=',' read -r -a BACKEND_LIST <<<"$BACKENDS"
WANT_PG=0
if [[ "$WANT_BERTH" == 1 ]]; then
  for b in "${BACKEND_LIST[@]}"; do
    case "$b" in
      sqlite) ;;
      postgres) WANT_PG=1 ;;
      *) echo "run.sh: --backends: unknown backend '$b' (sqlite, postgres)" >&2; exit 2 ;;
    esac
  done
  if [[ "$WANT_PG" == 1 ]]; then
    need psql postgresql-client
    if command -v psql >/dev/null 2>&1 && \
       ! psql "$PG_URL" -v ON_ERROR_STOP=1 -qAtc 'SELECT 1' >/dev/null 2>&1; then
      echo "run.sh: cannot connect to PostgreSQL at $PG_URL (--pg-url); start it, or bench" \
           "SQLite alone with --backends sqlite" >&2
      missing=1
    fi
  fi
fi
if [[ "$WANT_REF" == 1 && ! -x "$REF_BIN" ]]; then
  echo "run.sh: reference registry '$REF_BIN' not found; install it with: apt-get install docker-registry" >&2
  missing=1
fi
if [[ "$WANT_BERTH" == 1 && ! -x "$BERTH_BIN" ]]; then
  echo "run.sh: Berth binary '$BERTH_BIN' not found; build it with: cargo build --release (or pass --berth BIN, or --reference-only)" >&2
  missing=1
fi
[[ "$missing" == 0 ]] || exit 3
[[ "$WANT_BERTH" == 1 ]] && BERTH_BIN="$(cd "$(dirname "$BERTH_BIN")" && pwd)/$(basename "$BERTH_BIN")"

# ---------------------------------------------------------------- sizes
if [[ "$QUICK" == 1 ]]; then
  SMALL_MIB=32; LARGE_MIB=64; TAGS=500; REPOS=100; WRK_S=3; RUNS=3; LIST_REPS=10
  PULL_LAYERS=5; PULL_MIB=4; PUSHERS=10; PUSHER_MIB=4
else
  SMALL_MIB=256; LARGE_MIB=1024; TAGS=10000; REPOS=1000; WRK_S=10; RUNS=3; LIST_REPS=20
  PULL_LAYERS=20; PULL_MIB=20; PUSHERS=50; PUSHER_MIB=20
fi

# ---------------------------------------------------------------- temp dirs, cleanup
mkdir -p "$WORK_PARENT"
WORK="$(mktemp -d "$WORK_PARENT/berth-bench.XXXXXX")"
if [[ -z "$OUT_DIR" ]]; then
  OUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-results.XXXXXX")"
else
  mkdir -p "$OUT_DIR"
fi
STARTED_PIDS=()
PG_DB=""          # the PostgreSQL database this script created and has not dropped yet

psql_admin() { psql "$PG_URL" -v ON_ERROR_STOP=1 -qAtc "$1" >/dev/null; }

# PG_URL with its database name replaced (keeps user, host, port and ?query).
pg_url_for() {
  local base="${PG_URL%%\?*}" query=""
  [[ "$PG_URL" == *\?* ]] && query="?${PG_URL#*\?}"
  local rest="${base#*://}"
  echo "${base%%://*}://${rest%%/*}/$1$query"
}

drop_pg_db() {
  [[ -n "$PG_DB" ]] || return 0
  psql_admin "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || \
    echo "run.sh: could not drop the PostgreSQL database $PG_DB" >&2
  PG_DB=""
}

stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  drop_pg_db
  if [[ "$KEEP" == 1 ]]; then
    echo "run.sh: work dir kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- disk space check
need_mib=$(( (SMALL_MIB + LARGE_MIB) * (2 * RUNS + 1) + SMALL_MIB * RUNS + LARGE_MIB
             + PULL_LAYERS * PULL_MIB * 2 + PUSHERS * PUSHER_MIB * RUNS + 512 ))
avail_mib=$(( $(df -Pk "$WORK" | awk 'NR==2 {print $4}') / 1024 ))
if (( avail_mib < need_mib )); then
  echo "run.sh: only $avail_mib MiB free under $WORK; need about $need_mib MiB per registry" >&2
  exit 4
fi

echo "== Berth registry benchmark ($([[ $QUICK == 1 ]] && echo quick || echo full))"
echo "   work dir: $WORK   results: $OUT_DIR"
echo "   $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; kernel $(uname -r)"

load1="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
  echo "   WARNING: 1-minute load average is $load1 before the benchmark starts; something" \
       "else is using the CPUs and the numbers will be noisy (the machine has $(nproc) CPUs)."
fi

# ---------------------------------------------------------------- blobs
SMALL="$WORK/blob-small.bin"
LARGE="$WORK/blob-large.bin"
echo "== generating random blobs (${SMALL_MIB} MiB, ${LARGE_MIB} MiB)"
head -c "$((SMALL_MIB * 1024 * 1024))" /dev/urandom >"$SMALL"
head -c "$((LARGE_MIB * 1024 * 1024))" /dev/urandom >"$LARGE"

# ---------------------------------------------------------------- physical limits
echo "== physical limits"
"$PY" "$REGBENCH" limits --file "$LARGE" --chunk-file "$SMALL" --workdir "$WORK" --runs 3 \
  --static-wrk-duration "$WRK_S" --out "$OUT_DIR/limits.json"

# ---------------------------------------------------------------- per-registry suite
RESULTS=()

run_suite() {  # run_suite LABEL URL [PID [USER [PASSWORD]]]
  local label="$1" url="$2" pid="${3:-}" user="${4:-}" password="${5:-}"
  local args=(suite --url "$url" --label "$label" --small "$SMALL" --large "$LARGE"
              --runs "$RUNS" --tags "$TAGS" --repos "$REPOS" --list-reps "$LIST_REPS"
              --wrk-duration "$WRK_S" --repo-prefix "$REPO_PREFIX"
              --catalog-prefix "$CATALOG_PREFIX" --public-repo "$PUBLIC_PROJECT/small"
              --pull-layers "$PULL_LAYERS" --pull-layer-mib "$PULL_MIB"
              --pushers "$PUSHERS" --pusher-mib "$PUSHER_MIB" --workdir "$WORK"
              --out "$OUT_DIR/$label.json")
  [[ -n "$pid" ]] && args+=(--pid "$pid")
  echo "== benchmarking $label at $url${pid:+ (pid $pid)}${user:+ (token auth as $user)}"
  # Credentials go through the environment, not the command line (visible in ps).
  if ! REGBENCH_USER="$user" REGBENCH_PASSWORD="$password" \
       "$PY" "$REGBENCH" "${args[@]}"; then
    echo "run.sh: suite for $label failed (see above)" >&2
  fi
  [[ -f "$OUT_DIR/$label.json" ]] && RESULTS+=("$OUT_DIR/$label.json")
  if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: WARNING: the $label server (pid $pid) is no longer running" >&2
    [[ -f "$OUT_DIR/$label.log" ]] && tail -n 30 "$OUT_DIR/$label.log" >&2
  fi
  return 0
}

wait_ready() {  # wait_ready URL PID LOG [USER PASSWORD]
  local url="$1" pid="$2" logf="$3" user="${4:-}" password="${5:-}" i rc
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: server (pid $pid) exited before it was ready; last log lines:" >&2
      tail -n 30 "$logf" >&2 || true
      return 1
    fi
    rc=0
    REGBENCH_USER="$user" REGBENCH_PASSWORD="$password" \
      "$PY" "$REGBENCH" ping --url "$url" || rc=$?
    [[ "$rc" == 0 ]] && return 0
    if [[ "$rc" != 1 ]]; then  # the server answers, but the token dance failed
      echo "run.sh: $url answers, but GET /v2/ with a token failed (see above)" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "run.sh: $url did not answer GET /v2/ with 200 within 60 s; last log lines:" >&2
  tail -n 30 "$logf" >&2 || true
  return 1
}

SERVER_PID=""
start_berth() {  # start_berth BACKEND LABEL
  local backend="$1" label="$2" port data logf db_url=""
  port="$("$PY" "$REGBENCH" freeport)"
  data="$WORK/berth-data"; mkdir -p "$data"
  logf="$OUT_DIR/$label.log"
  if [[ "$backend" == postgres ]]; then
    PG_DB="berth_bench_$$_$(date +%s)"
    psql_admin "CREATE DATABASE $PG_DB" || { PG_DB=""; return 1; }
    db_url="$(pg_url_for "$PG_DB")"
    echo "   berth: metadata in the fresh PostgreSQL database $PG_DB (dropped afterwards)"
  fi
  # BERTH_DATABASE_URL (empty: SQLite in the data dir) for `serve` and `admin` alike.
  if [[ -n "$db_url" ]]; then export BERTH_DATABASE_URL="$db_url"; else unset BERTH_DATABASE_URL; fi
  # Run from the work dir so that no stray ./berth.toml is picked up. Logging at warn
  # (unless BERTH_LOG_LEVEL says otherwise), as the reference logs at error without an
  # access log: per-request log lines would cost CPU that the reference does not spend.
  # The empty data dir makes Berth create the administrator `root` with
  # BERTH_INITIAL_ROOT_PASSWORD; tokens last an hour so that one token serves a whole
  # measurement (the default, 5 minutes, is shorter than a full run).
  (cd "$WORK" && BERTH_LOG_LEVEL="${BERTH_LOG_LEVEL:-warn}" \
     BERTH_INITIAL_ROOT_PASSWORD="$BERTH_PASSWORD" BERTH_TOKEN_EXPIRY=1h \
     exec "$BERTH_BIN" serve --listen "127.0.0.1:$port" --data-dir "$data" \
     "${BERTH_ARGS[@]}") >"$logf" 2>&1 &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  SERVER_URL="http://127.0.0.1:$port"
  wait_ready "$SERVER_URL" "$SERVER_PID" "$logf" root "$BERTH_PASSWORD" || return 1
  grep -m1 'berth listening on' "$logf" || true
  # Every image path must belong to a project: create the two the suite pushes under
  # (admin works on the data dir while the server runs).
  local proj
  for proj in "$REPO_PREFIX:private" "$CATALOG_PREFIX:private" "$PUBLIC_PROJECT:public"; do
    if ! (cd "$WORK" && "$BERTH_BIN" admin --log-level warn --data-dir "$data" \
            project create "${proj%:*}" --parents --visibility "${proj##*:}") >>"$logf" 2>&1; then
      echo "run.sh: creating the Berth project ${proj%:*} failed; last log lines:" >&2
      tail -n 10 "$logf" >&2 || true
      return 1
    fi
  done
  echo "   berth: root password from BERTH_INITIAL_ROOT_PASSWORD, token expiry 1h," \
       "projects $REPO_PREFIX, $CATALOG_PREFIX (private) and $PUBLIC_PROJECT (public)"
}

start_reference() {
  local port data logf cfg
  port="$("$PY" "$REGBENCH" freeport)"
  data="$WORK/reference-data"; mkdir -p "$data"
  cfg="$WORK/reference-config.yml"
  logf="$OUT_DIR/reference.log"
  "$PY" "$REGBENCH" reference-config --data "$data" --port "$port" >"$cfg"
  cp "$cfg" "$OUT_DIR/reference-config.yml"
  "$REF_BIN" serve "$cfg" >"$logf" 2>&1 &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  SERVER_URL="http://127.0.0.1:$port"
  wait_ready "$SERVER_URL" "$SERVER_PID" "$logf"
  echo "   reference: $("$REF_BIN" --version 2>/dev/null || echo unknown version)"
}

# One server at a time, so an idle registry never competes for the 2 CPUs.
if [[ "$WANT_BERTH" == 1 ]]; then
  for backend in "${BACKEND_LIST[@]}"; do
    label="berth-$backend"
    if start_berth "$backend" "$label"; then
      run_suite "$label" "$SERVER_URL" "$SERVER_PID" root "$BERTH_PASSWORD"
    fi
    [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
    rm -rf "$WORK/berth-data"; SERVER_PID=""
    drop_pg_db
    unset BERTH_DATABASE_URL
  done
fi
if [[ "$WANT_REF" == 1 ]]; then
  if start_reference; then
    run_suite reference "$SERVER_URL" "$SERVER_PID"
  fi
  [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
  rm -rf "$WORK/reference-data"; SERVER_PID=""
fi
# The skopeo pull once more, every registry at once and taking turns round by round:
# the rows above measured each registry minutes apart, under whatever the disk's
# writeback was doing then, and a pull writes every layer it fetches.
if [[ "$WANT_BERTH" == 1 && "$WANT_REF" == 1 && "$PULL_LAYERS" -gt 0 ]]; then
  echo "== skopeo pull, interleaved (bench/pull_ab.py)"
  if ! "$PY" "$HERE/pull_ab.py" --berth "$BERTH_BIN" --backends "$BACKENDS" \
       --reference "$REF_BIN" --pg-url "$PG_URL" --layers "$PULL_LAYERS" \
       --layer-mib "$PULL_MIB" --rounds 5 --workdir "$WORK" | tee "$OUT_DIR/pull_ab.txt"; then
    echo "run.sh: the interleaved pull failed (see above)" >&2
  fi
fi
if [[ -n "$URL" ]]; then
  run_suite "$URL_LABEL" "$URL" "$URL_PID" "$URL_USER" "${REGBENCH_PASSWORD:-}"
fi

if [[ ${#RESULTS[@]} -eq 0 ]]; then
  echo "run.sh: no registry produced results" >&2
  exit 1
fi

echo
echo "== results"
"$PY" "$REGBENCH" report "${RESULTS[@]}" --limits "$OUT_DIR/limits.json" \
  --out-md "$OUT_DIR/report.md" --out-json "$OUT_DIR/results.json"
echo
echo "Results written to: $OUT_DIR/report.md and $OUT_DIR/results.json"
