#!/usr/bin/env bash
# backends.sh - run the REAL sink backends (PostgreSQL, Redis, OpenSearch) on
# this machine, without Docker, for the sink tests.
#
# Usage: backends.sh start|stop|status|env|logs [postgres] [redis] [opensearch]
#        (no names = all three)
#
#   start   install / resolve what is missing (cached), start, wait until each
#           really answers; idempotent: a running instance is reused
#   stop    stop each cleanly and remove its data dir (not the jar cache)
#   status  report whether each one is running and answering
#   env     print the export lines the tests read
#   logs    print the tail of each one's log
#
# Concurrent invocations are safe: start and stop of one backend hold an
# exclusive flock on $BACKENDS_DIR/<name>.lock, so a second `start postgres`
# waits for the first and then reuses the instance it started.
#
# What each backend needs:
#   postgres    Debian's PostgreSQL (initdb, pg_ctl, pg_isready; installed with
#               apt-get when missing); runs as the `postgres` OS user
#   redis       redis-server and redis-cli (apt-get install redis-server when
#               missing)
#   opensearch  Java 21+ (Temurin 25 by default) and mvn reaching Maven
#               Central: the jars are resolved once into $BACKENDS_CACHE. It
#               refuses to run as root, so it runs as $BACKENDS_USER.
#
# Environment (all optional):
#   BACKENDS_DIR              state dir: data, logs, pid files   (/tmp/productstream-backends)
#   BACKENDS_CACHE            OpenSearch jar cache               (/var/cache/productstream-backends;
#                                                                 ~/.cache/productstream-backends when not root)
#   BACKENDS_TIMEOUT          readiness timeout, seconds, each    (120)
#   BACKENDS_LOCK_TIMEOUT     how long to wait for another start  (900)
#   BACKENDS_USER             unprivileged user for OpenSearch    (productstream; created when missing)
#   BACKENDS_MVN_ARGS         extra arguments for every mvn call  (empty)
#   The default ports are below the kernel's ephemeral range (32768 and
#   up), so that no outgoing connection of a test can hold one of them.
#   POSTGRES_PORT             PostgreSQL port                     (25432)
#   POSTGRES_BIN              dir with initdb, pg_ctl, pg_isready (newest /usr/lib/postgresql/*/bin)
#   REDIS_PORT                Redis port                          (26379)
#   OPENSEARCH_PORT           OpenSearch HTTP port                (29200)
#   OPENSEARCH_TRANSPORT_PORT OpenSearch transport port           (29300)
#   OPENSEARCH_VERSION        org.opensearch:opensearch version   (3.9.0)
#   OPENSEARCH_LOG4J_VERSION  log4j-core, matching the log4j-api
#                             that opensearch depends on          (2.25.5)
#   OPENSEARCH_JAVA_HOME      JDK for OpenSearch (21+)            (/usr/lib/jvm/temurin-25-jdk-amd64)
#   OPENSEARCH_HEAP_OPTS      heap flags                          (-Xms512m -Xmx512m)
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

BACKENDS_DIR="${BACKENDS_DIR:-/tmp/productstream-backends}"
if [[ $EUID -eq 0 ]]; then
  BACKENDS_CACHE="${BACKENDS_CACHE:-/var/cache/productstream-backends}"
else
  BACKENDS_CACHE="${BACKENDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/productstream-backends}"
fi
BACKENDS_TIMEOUT="${BACKENDS_TIMEOUT:-120}"
BACKENDS_LOCK_TIMEOUT="${BACKENDS_LOCK_TIMEOUT:-900}"
BACKENDS_USER="${BACKENDS_USER:-productstream}"
BACKENDS_MVN_ARGS="${BACKENDS_MVN_ARGS:-}"
POSTGRES_PORT="${POSTGRES_PORT:-25432}"
POSTGRES_BIN="${POSTGRES_BIN:-}"
REDIS_PORT="${REDIS_PORT:-26379}"
OPENSEARCH_PORT="${OPENSEARCH_PORT:-29200}"
OPENSEARCH_TRANSPORT_PORT="${OPENSEARCH_TRANSPORT_PORT:-29300}"
OPENSEARCH_VERSION="${OPENSEARCH_VERSION:-3.9.0}"
OPENSEARCH_LOG4J_VERSION="${OPENSEARCH_LOG4J_VERSION:-2.25.5}"
OPENSEARCH_JAVA_HOME="${OPENSEARCH_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
OPENSEARCH_HEAP_OPTS="${OPENSEARCH_HEAP_OPTS:--Xms512m -Xmx512m}"

ALL_BACKENDS=(postgres redis opensearch)

# Pinned so that the plugin behaves the same with every Maven 3.8+.
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

PG_DIR="$BACKENDS_DIR/postgres"
PG_DATA="$PG_DIR/data"
PG_SOCKET="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"

REDIS_DIR="$BACKENDS_DIR/redis"
REDIS_CONF="$REDIS_DIR/redis.conf"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

OS_DIR="$BACKENDS_DIR/opensearch"
OS_HOME="$OS_DIR/home"
OS_CONF="$OS_HOME/config"
OS_LOG="$OS_DIR/opensearch.log"
OS_PID="$OS_DIR/opensearch.pid"
OS_DIST="$BACKENDS_CACHE/opensearch-$OPENSEARCH_VERSION"
OS_URL="http://127.0.0.1:$OPENSEARCH_PORT"
# Marker put on the java command line, so that a pid file is only trusted
# when the pid still belongs to the process we started (pids get reused).
OS_MARK="-Dproductstream.backends=opensearch"

log() { printf '[backends] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not on PATH"
}

now() { date +%s; }

is_root() { [[ $EUID -eq 0 ]]; }

# as_user USER CMD...: run CMD as USER (when we are root), else as ourselves.
as_user() {
  local user=$1
  shift
  if is_root && [[ $user != root ]]; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

# apt_install PKG...: install Debian packages (root only). Concurrent starts
# of different backends take turns on one lock instead of failing on apt's.
apt_install() {
  is_root || die "need $* but cannot apt-get install as uid $EUID; install it, or run as root"
  need apt-get
  log "apt-get install $*"
  mkdir -p "$BACKENDS_DIR"
  if ! DEBIAN_FRONTEND=noninteractive flock -w "$BACKENDS_LOCK_TIMEOUT" "$BACKENDS_DIR/apt.lock" \
      sh -c 'apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@"' apt "$@" \
      >"$BACKENDS_DIR/apt.log" 2>&1; then
    tail_log apt-get "$BACKENDS_DIR/apt.log"
    die "apt-get install $* failed"
  fi
}

# ensure_user NAME: create an unprivileged system user when it is missing.
ensure_user() {
  local user=$1
  id -u "$user" >/dev/null 2>&1 && return 0
  is_root || die "user '$user' does not exist and only root can create it"
  log "creating system user '$user'"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$user" 2>/dev/null \
    || id -u "$user" >/dev/null 2>&1 \
    || die "could not create user '$user'"
}

# the user a backend runs as: USER when we are root, else ourselves.
run_user() {
  if is_root; then printf '%s\n' "$1"; else id -un; fi
}

# own_dir DIR USER: create DIR owned by USER (when root), mode 0700.
own_dir() {
  local dir=$1 user=$2
  mkdir -p "$dir"
  is_root && chown "$user:" "$dir"
  chmod 0700 "$dir"
}

# reachable_by USER DIR: USER can traverse every directory down to DIR.
reachable_by() {
  local user=$1 dir=$2
  as_user "$user" test -x "$dir" -a -w "$dir" 2>/dev/null \
    || die "user '$user' cannot write $dir (one of its parents is not searchable by others); choose another BACKENDS_DIR, e.g. under /tmp"
}

# ---------------------------------------------------------------- processes

# pid_alive PIDFILE MARK -> prints pid and succeeds if the process runs and
# its command line contains MARK.
pid_alive() {
  local pidfile=$1 mark=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -e "$mark" || return 1
  printf '%s\n' "$pid"
}

# wait_gone PIDFILE MARK TRIES INTERVAL: poll up to TRIES times, INTERVAL
# seconds apart, until the process is gone.
wait_gone() {
  local pidfile=$1 mark=$2 tries=$3 interval=$4 i
  for ((i = 0; i < tries; i++)); do
    pid_alive "$pidfile" "$mark" >/dev/null || break
    sleep "$interval"
  done
}

# stop_proc NAME PIDFILE MARK: SIGTERM, wait up to 30 s, then SIGKILL.
stop_proc() {
  local name=$1 pidfile=$2 mark=$3 pid
  if ! pid=$(pid_alive "$pidfile" "$mark"); then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  log "$name: stopping pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pidfile" "$mark" 60 0.5
  if pid_alive "$pidfile" "$mark" >/dev/null; then
    log "$name: still running after 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pidfile" "$mark" 20 0.25
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# port_free PORT VAR: fail clearly when PORT is taken by something else.
port_free() {
  port_open "$1" && die "port $1 is already in use by another process (set $2)"
  return 0
}

tail_log() {
  local name=$1 file=$2
  if [[ -f $file ]]; then
    printf -- '----- last 60 lines of %s (%s) -----\n' "$name" "$file" >&2
    tail -n 60 "$file" >&2 || true
    printf -- '----- end of %s -----\n' "$name" >&2
  else
    log "$name: no log file at $file"
  fi
}

# wait_until WHAT LOGFILE ALIVE READY: poll every 0.5 s until READY succeeds;
# fail (showing LOGFILE) when ALIVE fails first or BACKENDS_TIMEOUT passes.
wait_until() {
  local what=$1 logfile=$2 alive=$3 ready=$4
  local deadline=$(($(now) + BACKENDS_TIMEOUT))
  while ! "$ready"; do
    if ! "$alive"; then
      tail_log "$what" "$logfile"
      return 1
    fi
    if (($(now) >= deadline)); then
      tail_log "$what" "$logfile"
      log "$what: not ready within ${BACKENDS_TIMEOUT}s"
      return 1
    fi
    sleep 0.5
  done
}

# http_get URL -> prints "<status> <body>"; status 000 when nothing answers.
http_get() {
  local out
  out=$(curl -s -m 10 -w '\n%{http_code}' "$1" 2>/dev/null) || true
  [[ -n $out ]] || out=$'\n000'
  printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
}

# ---------------------------------------------------------------- postgres

pg_bin_dir() {
  if [[ -n $POSTGRES_BIN ]]; then
    printf '%s\n' "$POSTGRES_BIN"
    return 0
  fi
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d ]] || return 1
  printf '%s\n' "$d"
}

ensure_postgres_installed() {
  local bin
  if ! bin=$(pg_bin_dir) || [[ ! -x $bin/initdb ]]; then
    [[ -z $POSTGRES_BIN ]] || die "POSTGRES_BIN=$POSTGRES_BIN has no initdb"
    apt_install postgresql
    bin=$(pg_bin_dir) || die "no /usr/lib/postgresql/*/bin after installing postgresql"
  fi
  PG_BIN=$bin
  local t
  for t in initdb pg_ctl pg_isready postgres; do
    [[ -x $PG_BIN/$t ]] || die "$PG_BIN/$t is missing"
  done
  PG_USER=$(run_user postgres)
  if ! id -u "$PG_USER" >/dev/null 2>&1; then
    ensure_user postgres
  fi
}

pg() { as_user "$PG_USER" "$@"; }

pg_running() {
  [[ -f $PG_DATA/postmaster.pid ]] && pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

postgres_dsn() {
  printf 'postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable\n' "$POSTGRES_PORT"
}

start_postgres() {
  ensure_postgres_installed
  if pg_running; then
    if pg_ready; then
      log "postgres: already running on 127.0.0.1:$POSTGRES_PORT, reusing it"
      return 0
    fi
    log "postgres: running but not answering yet, waiting"
    wait_until postgres "$PG_LOG" pg_running pg_ready || die "postgres: running but not answering on 127.0.0.1:$POSTGRES_PORT"
    return 0
  fi
  port_free "$POSTGRES_PORT" POSTGRES_PORT

  # Not running, so any old data is stale: start from an empty cluster.
  mkdir -p "$BACKENDS_DIR"
  chmod 0755 "$BACKENDS_DIR"
  rm -rf "$PG_DIR"
  own_dir "$PG_DIR" "$PG_USER"
  reachable_by "$PG_USER" "$PG_DIR"
  own_dir "$PG_SOCKET" "$PG_USER"
  pg touch "$PG_LOG"

  local t0
  t0=$(now)
  log "postgres: initdb in $PG_DATA ($("$PG_BIN/postgres" --version))"
  if ! pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync \
      >>"$PG_LOG" 2>&1; then
    tail_log postgres "$PG_LOG"
    die "postgres: initdb failed"
  fi
  pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF

# Written by backends.sh: a throwaway test instance on loopback only.
listen_addresses = '127.0.0.1'
port = $POSTGRES_PORT
unix_socket_directories = '$PG_SOCKET'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF
  pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by backends.sh: trust, loopback only.
local all all               trust
host  all all 127.0.0.1/32  trust
host  all all ::1/128       trust
EOF

  log "postgres: starting on 127.0.0.1:$POSTGRES_PORT, log $PG_LOG"
  # pg_ctl detaches the server (stdin /dev/null, output to the log file).
  if ! pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$BACKENDS_TIMEOUT" -s start >&2; then
    tail_log postgres "$PG_LOG"
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -s stop >/dev/null 2>&1 || true
    die "postgres: pg_ctl start failed"
  fi
  if ! wait_until postgres "$PG_LOG" pg_running pg_ready; then
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -s stop >/dev/null 2>&1 || true
    die "postgres: pg_isready did not answer on 127.0.0.1:$POSTGRES_PORT"
  fi
  log "postgres: ready in $(($(now) - t0))s, $(postgres_dsn)"
}

stop_postgres() {
  if [[ -d $PG_DATA ]]; then
    ensure_postgres_installed
    if pg_running; then
      log "postgres: stopping (pg_ctl stop -m fast)"
      pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop >&2 \
        || pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -s stop >&2 \
        || log "postgres: pg_ctl stop failed"
      log "postgres: stopped"
    else
      log "postgres: not running"
    fi
  else
    log "postgres: not running"
  fi
  rm -rf "$PG_DIR"
}

status_postgres() {
  local bin
  bin=$(pg_bin_dir 2>/dev/null) || bin=""
  if [[ -z $bin || ! -x $bin/pg_isready ]]; then
    echo "postgres: not installed"
    return 1
  fi
  PG_BIN=$bin
  PG_USER=$(run_user postgres)
  if [[ -d $PG_DATA ]] && pg_running; then
    if pg_ready; then
      echo "postgres: running, answering on 127.0.0.1:$POSTGRES_PORT ($("$PG_BIN/postgres" --version))"
      return 0
    fi
    echo "postgres: running but NOT answering on 127.0.0.1:$POSTGRES_PORT"
    return 1
  fi
  echo "postgres: stopped"
  return 1
}

# ---------------------------------------------------------------- redis

ensure_redis_installed() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server
  fi
  need redis-server
  need redis-cli
}

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_alive() { pid_alive "$REDIS_PID" "redis-server" >/dev/null; }

redis_ready() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

start_redis() {
  ensure_redis_installed
  if redis_alive; then
    if redis_ready; then
      log "redis: already running (pid $(<"$REDIS_PID")) on 127.0.0.1:$REDIS_PORT, reusing it"
      return 0
    fi
    wait_until redis "$REDIS_LOG" redis_alive redis_ready || die "redis: running but not answering PING on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  port_free "$REDIS_PORT" REDIS_PORT

  mkdir -p "$BACKENDS_DIR"
  chmod 0755 "$BACKENDS_DIR"
  rm -rf "$REDIS_DIR"
  mkdir -p "$REDIS_DIR/data"
  cat >"$REDIS_CONF" <<EOF
# Written by backends.sh: a throwaway test instance on loopback only.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_PID
logfile $REDIS_LOG
dir $REDIS_DIR/data
save ""
appendonly no
databases 16
EOF
  local t0
  t0=$(now)
  log "redis: starting $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT, log $REDIS_LOG"
  if ! redis-server "$REDIS_CONF" </dev/null >>"$REDIS_LOG" 2>&1; then
    tail_log redis "$REDIS_LOG"
    die "redis: redis-server failed to start"
  fi
  # daemonize: the pid file appears once the server forked.
  local i
  for ((i = 0; i < 40; i++)); do
    [[ -s $REDIS_PID ]] && break
    sleep 0.25
  done
  if ! wait_until redis "$REDIS_LOG" redis_alive redis_ready; then
    stop_proc redis "$REDIS_PID" redis-server
    die "redis: did not answer PING on 127.0.0.1:$REDIS_PORT"
  fi
  log "redis: ready in $(($(now) - t0))s, pid $(<"$REDIS_PID"), 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
  if redis_alive; then
    log "redis: stopping (shutdown nosave)"
    if command -v redis-cli >/dev/null 2>&1; then
      redis_cli shutdown nosave >/dev/null 2>&1 || true
      wait_gone "$REDIS_PID" redis-server 40 0.25
    fi
    if redis_alive; then
      stop_proc redis "$REDIS_PID" redis-server
    else
      log "redis: stopped"
    fi
  else
    log "redis: not running"
  fi
  rm -rf "$REDIS_DIR"
}

status_redis() {
  if redis_alive; then
    if redis_ready; then
      echo "redis: running (pid $(<"$REDIS_PID")), answering PING on 127.0.0.1:$REDIS_PORT"
      return 0
    fi
    echo "redis: running (pid $(<"$REDIS_PID")) but NOT answering on 127.0.0.1:$REDIS_PORT"
    return 1
  fi
  echo "redis: stopped"
  return 1
}

# ---------------------------------------------------------------- opensearch

# java_major JAVA -> prints the feature version (17, 21, ...) of that JVM.
java_major() {
  local v
  v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n 1)
  v=${v#1.}
  printf '%s\n' "${v:-0}"
}

# OpenSearch 3.x needs Java 21+: OPENSEARCH_JAVA_HOME, else JAVA_HOME, else
# any JDK under /usr/lib/jvm, else java on PATH.
find_opensearch_java() {
  local c
  for c in "$OPENSEARCH_JAVA_HOME/bin/java" "${JAVA_HOME:+$JAVA_HOME/bin/java}" \
      /usr/lib/jvm/*/bin/java "$(command -v java 2>/dev/null || true)"; do
    [[ -n $c && -x $c ]] || continue
    if (($(java_major "$c") >= 21)); then
      OS_JAVA=$c
      return 0
    fi
  done
  die "OpenSearch $OPENSEARCH_VERSION needs Java 21+; none found (set OPENSEARCH_JAVA_HOME)"
}

mvn_run() {
  # shellcheck disable=SC2086 # BACKENDS_MVN_ARGS is word-split on purpose
  mvn -B -q -ntp $BACKENDS_MVN_ARGS "$@"
}

# mvn_copy_deps DIR OUTDIR DEPENDENCY_XML: copy the runtime closure of the
# dependencies into OUTDIR, via a generated pom in DIR.
mvn_copy_deps() {
  local dir=$1 out=$2 deps=$3
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>productstream.integration</groupId>
  <artifactId>backends-$(basename "$dir")</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$deps
  </dependencies>
</project>
EOF
  if ! mvn_run -f "$dir/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$out" >"$dir/mvn.log" 2>&1; then
    tail_log "mvn ($(basename "$dir"))" "$dir/mvn.log"
    return 1
  fi
}

dep_xml() {
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$@"
}

# The OpenSearch distribution, assembled from Maven Central once into
# $OS_DIST (lib/ = the server's classpath, modules/transport-netty4/ = the
# HTTP and transport module, modules/mapper-extras/ = scaled_float),
# readable by every user. .complete marks it done.
ensure_opensearch_dist() {
  [[ -f $OS_DIST/.complete && -d $OS_DIST/modules/mapper-extras ]] && return 0
  mkdir -p "$BACKENDS_CACHE"
  chmod 0755 "$BACKENDS_CACHE"
  # Another BACKENDS_DIR may be assembling the same cache right now.
  exec {cache_fd}>"$BACKENDS_CACHE/.lock"
  flock -w "$BACKENDS_LOCK_TIMEOUT" "$cache_fd" || die "timed out waiting for $BACKENDS_CACHE/.lock"
  if [[ -f $OS_DIST/.complete && -d $OS_DIST/modules/mapper-extras ]]; then
    exec {cache_fd}>&-
    return 0
  fi
  need mvn
  local t0 tmp
  t0=$(now)
  tmp="$OS_DIST.tmp"
  log "opensearch: resolving OpenSearch $OPENSEARCH_VERSION with mvn into $OS_DIST (first run only)"
  rm -rf "$tmp" "$OS_DIST"
  mkdir -p "$tmp/lib" "$tmp/modules/transport-netty4" "$tmp/plugins"
  mvn_copy_deps "$tmp/build/server" "$tmp/lib" "$(
    dep_xml org.opensearch opensearch "$OPENSEARCH_VERSION"
    dep_xml org.opensearch opensearch-plugin-classloader "$OPENSEARCH_VERSION"
    dep_xml org.opensearch opensearch-agent-bootstrap "$OPENSEARCH_VERSION"
    dep_xml org.apache.logging.log4j log4j-core "$OPENSEARCH_LOG4J_VERSION"
  )" || die "could not resolve org.opensearch:opensearch:$OPENSEARCH_VERSION"
  [[ -f $tmp/lib/opensearch-$OPENSEARCH_VERSION.jar ]] || die "opensearch-$OPENSEARCH_VERSION.jar missing after mvn copy-dependencies"
  local api
  api=$(find "$tmp/lib" -name 'log4j-api-*.jar' -printf '%f\n' | head -n 1)
  [[ $api == "log4j-api-$OPENSEARCH_LOG4J_VERSION.jar" ]] \
    || die "opensearch $OPENSEARCH_VERSION brings ${api:-no log4j-api}; set OPENSEARCH_LOG4J_VERSION to match"

  mvn_copy_deps "$tmp/build/transport-netty4" "$tmp/build/netty-all" "$(
    dep_xml org.opensearch.plugin transport-netty4-client "$OPENSEARCH_VERSION"
  )" || die "could not resolve org.opensearch.plugin:transport-netty4-client:$OPENSEARCH_VERSION"
  # A module may not carry a jar the server already has (jar hell check).
  local jar
  for jar in "$tmp"/build/netty-all/*.jar; do
    [[ -f $tmp/lib/$(basename "$jar") ]] || cp "$jar" "$tmp/modules/transport-netty4/"
  done
  [[ -f $tmp/modules/transport-netty4/transport-netty4-client-$OPENSEARCH_VERSION.jar ]] \
    || die "transport-netty4-client-$OPENSEARCH_VERSION.jar missing after mvn copy-dependencies"
  cat >"$tmp/modules/transport-netty4/plugin-descriptor.properties" <<EOF
# Written by backends.sh (the distribution's module carries the same).
description=Netty 4 based transport implementation
version=$OPENSEARCH_VERSION
name=transport-netty4
classname=org.opensearch.transport.Netty4ModulePlugin
java.version=21
opensearch.version=$OPENSEARCH_VERSION
extended.plugins=
has.native.controller=false
EOF
  # mapper-extras: the scaled_float field type the OpenSearch sink maps
  # prices to.
  mkdir -p "$tmp/modules/mapper-extras"
  mvn_copy_deps "$tmp/build/mapper-extras" "$tmp/build/mapper-extras-jars" "$(
    dep_xml org.opensearch.plugin mapper-extras-client "$OPENSEARCH_VERSION"
  )" || die "could not resolve org.opensearch.plugin:mapper-extras-client:$OPENSEARCH_VERSION"
  for jar in "$tmp"/build/mapper-extras-jars/*.jar; do
    [[ -f $tmp/lib/$(basename "$jar") ]] || cp "$jar" "$tmp/modules/mapper-extras/"
  done
  cat >"$tmp/modules/mapper-extras/plugin-descriptor.properties" <<EOF
description=Adds advanced field mappers (scaled_float, rank_feature, ...)
version=$OPENSEARCH_VERSION
name=mapper-extras
classname=org.opensearch.index.mapper.MapperExtrasModulePlugin
java.version=21
opensearch.version=$OPENSEARCH_VERSION
extended.plugins=
has.native.controller=false
EOF
  rm -rf "$tmp/build"
  chmod -R a+rX "$tmp"
  mv "$tmp" "$OS_DIST"
  touch "$OS_DIST/.complete"
  exec {cache_fd}>&-
  local jars=("$OS_DIST"/lib/*.jar) mjars=("$OS_DIST"/modules/transport-netty4/*.jar)
  log "opensearch: distribution ready in $(($(now) - t0))s: ${#jars[@]} jars in lib, ${#mjars[@]} in modules/transport-netty4"
}

os_alive() { pid_alive "$OS_PID" "$OS_MARK" >/dev/null; }

# os_ready: the cluster health reaches yellow (200 and not timed out).
os_ready() {
  local r
  r=$(http_get "$OS_URL/_cluster/health?wait_for_status=yellow&timeout=2s")
  [[ ${r%% *} == 200 && $r != *'"timed_out":true'* ]]
}

os_version() {
  local r
  r=$(http_get "$OS_URL/")
  [[ ${r%% *} == 200 ]] || { echo unknown; return 0; }
  sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p' <<<"${r#* }" | head -n 1
}

write_opensearch_config() {
  cat >"$OS_CONF/opensearch.yml" <<EOF
# Written by backends.sh: a throwaway single-node test instance, loopback only.
cluster.name: productstream-backends
node.name: productstream-backends-1
network.host: 127.0.0.1
http.port: $OPENSEARCH_PORT
transport.port: $OPENSEARCH_TRANSPORT_PORT
discovery.type: single-node
path.data: $OS_DIR/data
path.logs: $OS_DIR/logs
action.auto_create_index: true
cluster.routing.allocation.disk.threshold_enabled: false
EOF

  # Read by this script (the node does not read it: the distribution's
  # launcher would). One JVM option a line.
  {
    echo "# Written by backends.sh: the JVM options the node is started with."
    # shellcheck disable=SC2086 # heap options are split one a line on purpose
    printf '%s\n' $OPENSEARCH_HEAP_OPTS
    cat <<EOF
-XX:+UseG1GC
-XX:G1ReservePercent=25
-XX:InitiatingHeapOccupancyPercent=30
-XX:-HeapDumpOnOutOfMemoryError
-XX:ErrorFile=$OS_DIR/logs/hs_err_pid%p.log
-Xlog:disable
-Xlog:all=warning:stderr:utctime,level,tags
-Djava.io.tmpdir=$OS_DIR/tmp
-Djna.tmpdir=$OS_DIR/tmp
-Djava.awt.headless=true
-Dfile.encoding=UTF-8
-Djna.nosys=true
-Dio.netty.noUnsafe=true
-Dio.netty.noKeySetOptimization=true
-Dio.netty.recycler.maxCapacityPerThread=0
-Dlog4j.shutdownHookEnabled=false
-Dlog4j2.disable.jmx=true
-Dlog4j2.formatMsgNoLookups=true
-Dopensearch.networkaddress.cache.ttl=60
-Dopensearch.networkaddress.cache.negative.ttl=10
--enable-native-access=ALL-UNNAMED
EOF
  } >"$OS_CONF/jvm.options"

  # The node logs to stdout, which spawn() sends to $OS_LOG.
  cat >"$OS_CONF/log4j2.properties" <<'EOF'
# Written by backends.sh: everything to the console (the log file).
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.deprecation.name = org.opensearch.deprecation
logger.deprecation.level = error
EOF
}

start_opensearch() {
  need curl
  find_opensearch_java
  ensure_opensearch_dist
  if os_alive; then
    if os_ready; then
      log "opensearch: already running (pid $(<"$OS_PID")) at $OS_URL, reusing it"
      return 0
    fi
    log "opensearch: running (pid $(<"$OS_PID")) but not ready yet, waiting"
    wait_until opensearch "$OS_LOG" os_alive os_ready || die "opensearch: running but cluster health never reached yellow at $OS_URL"
    return 0
  fi
  port_free "$OPENSEARCH_PORT" OPENSEARCH_PORT
  port_free "$OPENSEARCH_TRANSPORT_PORT" OPENSEARCH_TRANSPORT_PORT

  local user
  user=$(run_user "$BACKENDS_USER")
  ensure_user "$user"
  mkdir -p "$BACKENDS_DIR"
  chmod 0755 "$BACKENDS_DIR"
  rm -rf "$OS_DIR"
  own_dir "$OS_DIR" "$user"
  reachable_by "$user" "$OS_DIR"
  as_user "$user" test -r "$OS_DIST/lib/opensearch-$OPENSEARCH_VERSION.jar" \
    || die "user '$user' cannot read the jar cache $OS_DIST; set BACKENDS_CACHE to a dir others can read"
  # The home: lib and modules from the cache, the rest per instance.
  as_user "$user" mkdir -p "$OS_HOME/plugins" "$OS_CONF" "$OS_DIR/data" "$OS_DIR/logs" "$OS_DIR/tmp"
  ln -s "$OS_DIST/lib" "$OS_HOME/lib"
  ln -s "$OS_DIST/modules" "$OS_HOME/modules"
  write_opensearch_config
  is_root && chown -R "$user:" "$OS_HOME"
  : >"$OS_LOG"

  local opts=()
  mapfile -t opts < <(grep -v -e '^#' -e '^[[:space:]]*$' "$OS_CONF/jvm.options")
  # The node warns below 65535 open files; raise the soft limit if allowed.
  ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  local t0
  t0=$(now)
  log "opensearch: starting $OPENSEARCH_VERSION as user $user on Java $(java_major "$OS_JAVA") at $OS_URL, log $OS_LOG"
  # Own session, no inherited stdio (callers capturing our output must not
  # hang on it). The shell, already running as the user (runuser may stay
  # around as a parent), writes its pid, then becomes the JVM.
  local runas=()
  is_root && runas=(runuser -u "$user" --)
  # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
  nohup setsid "${runas[@]}" bash -c 'cd "$1" && echo "$$" >"$2" && shift 2 && exec "$@"' backends \
    "$OS_DIR" "$OS_PID" \
    "$OS_JAVA" "${opts[@]}" "$OS_MARK" \
    -Dopensearch.path.home="$OS_HOME" \
    -Dopensearch.path.conf="$OS_CONF" \
    -Dopensearch.distribution.type=tar \
    -Dopensearch.bundled_jdk=false \
    -cp "$OS_HOME/lib/*" org.opensearch.bootstrap.OpenSearch \
    </dev/null >>"$OS_LOG" 2>&1 &
  local i
  for ((i = 0; i < 40; i++)); do
    [[ -s $OS_PID ]] && break
    sleep 0.1
  done
  if ! wait_until opensearch "$OS_LOG" os_alive os_ready; then
    stop_proc opensearch "$OS_PID" "$OS_MARK"
    die "opensearch: cluster health did not reach yellow at $OS_URL"
  fi
  log "opensearch: ready in $(($(now) - t0))s, version $(os_version), pid $(<"$OS_PID"), $OS_URL"
}

stop_opensearch() {
  stop_proc opensearch "$OS_PID" "$OS_MARK"
  rm -rf "$OS_DIR"
}

status_opensearch() {
  local pid
  if pid=$(pid_alive "$OS_PID" "$OS_MARK"); then
    local r rss
    rss=$(awk '/^VmRSS/ {print int($2 / 1024) " MB"}' "/proc/$pid/status" 2>/dev/null || true)
    r=$(http_get "$OS_URL/_cluster/health")
    if [[ ${r%% *} == 200 ]]; then
      local st
      st=$(sed -n 's/.*"status" *: *"\([^"]*\)".*/\1/p' <<<"${r#* }")
      echo "opensearch: running (pid $pid, ${rss:-? MB} resident), version $(os_version), cluster $st, at $OS_URL"
      return 0
    fi
    echo "opensearch: running (pid $pid) but $OS_URL/_cluster/health answered ${r%% *}"
    return 1
  fi
  echo "opensearch: stopped"
  return 1
}

# ---------------------------------------------------------------- commands

env_line() {
  case $1 in
    postgres) echo "export PRODUCTSTREAM_POSTGRES_DSN=$(postgres_dsn)" ;;
    redis) echo "export PRODUCTSTREAM_REDIS_ADDR=127.0.0.1:$REDIS_PORT" ;;
    opensearch) echo "export PRODUCTSTREAM_OPENSEARCH_URL=$OS_URL" ;;
  esac
}

log_file() {
  case $1 in
    postgres) echo "$PG_LOG" ;;
    redis) echo "$REDIS_LOG" ;;
    opensearch) echo "$OS_LOG" ;;
  esac
}

# locked CMD NAME: run `backends.sh __locked CMD NAME` holding NAME's lock.
# flock -o closes the lock's descriptor in the child, so the servers it
# starts do not inherit it (they would hold the lock for their lifetime).
locked() {
  local cmd=$1 name=$2 rc=0
  mkdir -p "$BACKENDS_DIR"
  chmod 0755 "$BACKENDS_DIR" 2>/dev/null || true
  flock -o -E 75 -w "$BACKENDS_LOCK_TIMEOUT" "$BACKENDS_DIR/$name.lock" \
    bash "$SELF" __locked "$cmd" "$name" || rc=$?
  if ((rc == 75)); then
    log "$name: timed out after ${BACKENDS_LOCK_TIMEOUT}s waiting for $BACKENDS_DIR/$name.lock (another $cmd?)"
  fi
  return "$rc"
}

cmd_start() {
  need flock
  local t0 name pids=() rc=0 i failed=()
  t0=$(now)
  # In parallel, each under its own lock: OpenSearch takes the longest.
  for name in "$@"; do
    locked start "$name" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { rc=1; failed+=("${@:i+1:1}"); }
  done
  ((rc == 0)) || die "could not start: ${failed[*]}"
  log "up in $(($(now) - t0))s: $*"
  cmd_env "$@"
}

cmd_stop() {
  need flock
  local name rc=0
  for name in "$@"; do
    locked stop "$name" || rc=1
  done
  return "$rc"
}

cmd_status() {
  local name rc=0
  for name in "$@"; do
    "status_$name" || rc=1
  done
  return "$rc"
}

cmd_env() {
  local name
  for name in "$@"; do env_line "$name"; done
}

cmd_logs() {
  local name
  for name in "$@"; do tail_log "$name" "$(log_file "$name")"; done
}

usage() {
  echo "usage: $0 start|stop|status|env|logs [postgres] [redis] [opensearch]" >&2
  exit 2
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  if [[ $cmd == __locked ]]; then
    # Internal: one backend, its lock held by our parent flock.
    "$1_$2"
    return
  fi
  local names=("$@") name
  ((${#names[@]})) || names=("${ALL_BACKENDS[@]}")
  for name in "${names[@]}"; do
    case $name in
      postgres | redis | opensearch) ;;
      *)
        log "unknown backend '$name' (known: ${ALL_BACKENDS[*]})"
        usage
        ;;
    esac
  done
  case "$cmd" in
    start) cmd_start "${names[@]}" ;;
    stop) cmd_stop "${names[@]}" ;;
    status) cmd_status "${names[@]}" ;;
    env) cmd_env "${names[@]}" ;;
    logs) cmd_logs "${names[@]}" ;;
    *) usage ;;
  esac
}

main "$@"
