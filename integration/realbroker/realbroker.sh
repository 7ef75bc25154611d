#!/usr/bin/env bash
# realbroker.sh - run a REAL Apache Kafka 4.x broker (single combined KRaft
# node) and a REAL Apicurio Registry 3.x on this machine, without Docker.
#
# Usage: realbroker.sh start|start-secured|stop|stop-broker|start-broker|pause-broker|resume-broker|status|env|logs
#
#   start          resolve (via mvn, cached) and start both; idempotent
#   start-secured  the same, with the broker's SASL_SSL listener too
#                  (REALBROKER_SECURED=1 start does the same)
#   stop           SIGTERM both (SIGKILL after 30 s) and remove the state dir
#   stop-broker    kill the broker alone (SIGKILL), keeping its data: a broker
#                  outage, for the tests that ride one out (a SIGTERM that
#                  interrupts a transaction's markers can leave it hanging
#                  on a partition, a broker fault no client can clear)
#   start-broker   start the broker stopped by stop-broker again, on its data,
#                  and wait until it answers
#   pause-broker   freeze the broker (SIGSTOP): it accepts connections and
#                  answers nothing, as a hung or cut-off broker does
#   resume-broker  let the broker paused by pause-broker go on (SIGCONT)
#   status         report whether each one is running and answering
#   env            print the export lines the integration tests read,
#                  PRODUCTSTREAM_BROKER_CONTROL included (the command the
#                  tests run with stop-broker, start-broker, pause-broker or
#                  resume-broker)
#   logs           print the tail of both logs
#
# Secured mode: beside the PLAINTEXT listener, the broker listens with
# SASL_SSL on KAFKA_SECURED_PORT, enabling SCRAM-SHA-512 (one user, created
# when the storage is formatted) and OAUTHBEARER (unsecured JWTs, for
# tests). A CA and the broker's certificate (for 127.0.0.1 and localhost)
# are made with openssl into $REALBROKER_DIR/secured, with a random
# password. `env` then prints the secured listener, the CA file and the
# credentials (PRODUCTSTREAM_SECURED_*), and not the plaintext listener, so
# the integration suite runs once, over SASL_SSL. The registry stays plain
# HTTP: the tests put a TLS proxy with basic auth of their own in front of it.
#
# Needs only java (17+) and mvn (3.8+) reaching Maven Central, plus the usual
# coreutils; curl or python3 is used for the registry HTTP checks.
#
# Environment (all optional):
#   KAFKA_VERSION            org.apache.kafka:kafka_2.13 version   (4.4.0)
#   LOG4J_VERSION            log4j2 backend version                 (2.25.4)
#   SLF4J_VERSION            slf4j-api version                      (2.0.17)
#   APICURIO_VERSION         io.apicurio:apicurio-registry-app      (3.0.9)
#                            3.0.x runs on Java 17; 3.1+ (e.g. 3.3.3) is built
#                            for Java 21, see REGISTRY_JAVA.
#   KAFKA_JAVA               java binary for Kafka                  (java)
#   REGISTRY_JAVA            java binary for the registry           (java)
#   KAFKA_PORT               PLAINTEXT listener port                (19092)
#   KAFKA_CONTROLLER_PORT    CONTROLLER listener port               (19093)
#   KAFKA_SECURED_PORT       SASL_SSL listener port, secured mode   (19094)
#   REALBROKER_SECURED       1: start in secured mode               (0)
#   REGISTRY_PORT            registry HTTP port                     (18081)
#   REGISTRY_MANAGEMENT_PORT registry (Quarkus) management port     (18082)
#   REALBROKER_DIR           state dir: data, logs, pid files       (/tmp/productstream-realbroker)
#   REALBROKER_CACHE         jar cache dir                          (~/.cache/productstream-realbroker)
#   REALBROKER_TIMEOUT       readiness timeout, seconds, each       (120)
#   KAFKA_HEAP_OPTS          broker heap flags                      (-Xms128m -Xmx512m)
#   REGISTRY_HEAP_OPTS       registry heap flags                    (-Xms64m -Xmx512m)
#   REALBROKER_MVN_ARGS      extra arguments for every mvn call     (empty)
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.4}"
SLF4J_VERSION="${SLF4J_VERSION:-2.0.17}"
APICURIO_VERSION="${APICURIO_VERSION:-3.0.9}"
KAFKA_JAVA="${KAFKA_JAVA:-java}"
REGISTRY_JAVA="${REGISTRY_JAVA:-java}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_SECURED_PORT="${KAFKA_SECURED_PORT:-19094}"
REALBROKER_SECURED="${REALBROKER_SECURED:-0}"
REGISTRY_PORT="${REGISTRY_PORT:-18081}"
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-18082}"
REALBROKER_DIR="${REALBROKER_DIR:-/tmp/productstream-realbroker}"
REALBROKER_CACHE="${REALBROKER_CACHE:-$HOME/.cache/productstream-realbroker}"
REALBROKER_TIMEOUT="${REALBROKER_TIMEOUT:-120}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
REGISTRY_HEAP_OPTS="${REGISTRY_HEAP_OPTS:--Xms64m -Xmx512m}"
REALBROKER_MVN_ARGS="${REALBROKER_MVN_ARGS:-}"

# Pinned so that the plugin behaves the same with every Maven 3.8+.
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
DEP_PLUGIN_OLD="org.apache.maven.plugins:maven-dependency-plugin:2.8"

KAFKA_HOME="$REALBROKER_CACHE/kafka-$KAFKA_VERSION-log4j-$LOG4J_VERSION"
APICURIO_HOME="$REALBROKER_CACHE/apicurio-registry-$APICURIO_VERSION"

KAFKA_DATA="$REALBROKER_DIR/kafka-data"
KAFKA_PROPS="$REALBROKER_DIR/server.properties"
KAFKA_LOG4J="$REALBROKER_DIR/kafka-log4j2.properties"
KAFKA_TOOLS_LOG4J="$REALBROKER_DIR/tools-log4j2.properties"
KAFKA_LOG="$REALBROKER_DIR/kafka.log"
KAFKA_PID="$REALBROKER_DIR/kafka.pid"
REGISTRY_LOG="$REALBROKER_DIR/registry.log"
REGISTRY_PID="$REALBROKER_DIR/registry.pid"
REGISTRY_WORK="$REALBROKER_DIR/registry-work"
SECURED_DIR="$REALBROKER_DIR/secured"
SECURED_USER=productstream

# Marker put on each java command line, so that a pid file is only trusted
# when the pid still belongs to the process we started (pids get reused).
KAFKA_MARK="-Dproductstream.realbroker=kafka"
REGISTRY_MARK="-Dproductstream.realbroker=registry"

REGISTRY_BASE="http://127.0.0.1:$REGISTRY_PORT"
CCOMPAT_URL="$REGISTRY_BASE/apis/ccompat/v7"

log() { printf '[realbroker] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not on PATH"
}

now() { date +%s; }

# java_major JAVA -> prints the feature version (17, 21, ...) of that JVM.
java_major() {
  local v
  v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n 1)
  v=${v#1.}
  printf '%s\n' "${v:-0}"
}

# need_java JAVA MIN WHAT: fail clearly when JAVA is missing or too old.
need_java() {
  local j=$1 min=$2 what=$3 major
  command -v "$j" >/dev/null 2>&1 || die "'$j' (java for $what) is not on PATH"
  major=$(java_major "$j")
  ((major >= min)) || die "$what needs Java $min+, but '$j' is Java $major"
}

# Apicurio Registry 3.0.x is built for Java 17; 3.1 and later for Java 21.
apicurio_min_java() {
  case "$APICURIO_VERSION" in
    2.* | 3.0.*) echo 17 ;;
    *) echo 21 ;;
  esac
}

# ---------------------------------------------------------------- processes

# pid_alive PIDFILE MARK -> prints pid and succeeds if the process runs.
pid_alive() {
  local pidfile=$1 mark=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -e "$mark" || return 1
  printf '%s\n' "$pid"
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

# wait_gone PIDFILE MARK TRIES INTERVAL: poll up to TRIES times, INTERVAL
# seconds apart, until the process is gone.
wait_gone() {
  local pidfile=$1 mark=$2 tries=$3 interval=$4 i
  for ((i = 0; i < tries; i++)); do
    pid_alive "$pidfile" "$mark" >/dev/null || break
    sleep "$interval"
  done
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# spawn LOGFILE PIDFILE CMD...: start CMD fully detached (own session, no
# inherited stdio, so callers that capture our output never hang on it).
spawn() {
  local logfile=$1 pidfile=$2
  shift 2
  nohup setsid "$@" </dev/null >>"$logfile" 2>&1 &
  printf '%s\n' "$!" >"$pidfile"
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

# ---------------------------------------------------------------- maven

mvn_run() {
  # shellcheck disable=SC2086 # REALBROKER_MVN_ARGS is word-split on purpose
  mvn -B -q -ntp $REALBROKER_MVN_ARGS "$@"
}

# Kafka jars: a generated pom whose runtime dependency closure is copied into
# $KAFKA_HOME/libs. Marker file .complete makes later runs skip Maven.
ensure_kafka_jars() {
  [[ -f $KAFKA_HOME/.complete ]] && return 0
  need mvn
  log "resolving Kafka $KAFKA_VERSION (+ log4j $LOG4J_VERSION) with mvn into $KAFKA_HOME (first run only)"
  rm -rf "$KAFKA_HOME"
  mkdir -p "$KAFKA_HOME"
  cat >"$KAFKA_HOME/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>productstream.integration</groupId>
  <artifactId>realbroker-kafka-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- kafka_2.13 declares slf4j-api 1.7; the log4j2 binding needs 2.x. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  if ! mvn_run -f "$KAFKA_HOME/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$KAFKA_HOME/mvn.log" 2>&1; then
    tail_log "mvn (kafka)" "$KAFKA_HOME/mvn.log"
    die "could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  fi
  [[ -f $KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar ]] \
    || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn copy-dependencies"
  touch "$KAFKA_HOME/.complete"
  local jars=("$KAFKA_HOME"/libs/*.jar)
  log "Kafka classpath ready: ${#jars[@]} jars"
}

# Apicurio Registry: the Quarkus fast-jar distribution published on Central
# as io.apicurio:apicurio-registry-app:<v>:tar.gz:all, unpacked into the cache.
ensure_apicurio() {
  [[ -f $APICURIO_HOME/.complete ]] && return 0
  need mvn
  local coords="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all"
  log "resolving Apicurio Registry $APICURIO_VERSION ($coords) with mvn into $APICURIO_HOME (first run only)"
  rm -rf "$APICURIO_HOME"
  mkdir -p "$APICURIO_HOME/dl"
  # Some apicurio-registry-app releases (e.g. 3.0.9) reference a parent pom
  # that the repository does not serve; dependency-plugin 3.x then refuses to
  # copy even with -Dtransitive=false, while the 2.8 plugin does not read the
  # descriptor and copies the file fine. Try 3.x first, then 2.8.
  if ! mvn_run "$DEP_PLUGIN:copy" -Dartifact="$coords" \
      -DoutputDirectory="$APICURIO_HOME/dl" -Dmdep.overWriteReleases=true \
      >"$APICURIO_HOME/mvn.log" 2>&1; then
    log "dependency-plugin 3.x could not copy $coords, retrying with $DEP_PLUGIN_OLD"
    if ! mvn_run "$DEP_PLUGIN_OLD:copy" -Dartifact="$coords" \
        -DoutputDirectory="$APICURIO_HOME/dl" -Dmdep.overWriteReleases=true \
        >>"$APICURIO_HOME/mvn.log" 2>&1; then
      tail_log "mvn (apicurio)" "$APICURIO_HOME/mvn.log"
      die "could not resolve $coords"
    fi
  fi
  local tgzs=("$APICURIO_HOME"/dl/*.tar.gz) tgz
  tgz=${tgzs[0]}
  [[ -f $tgz ]] || die "no tar.gz found after mvn dependency:copy"
  mkdir -p "$APICURIO_HOME/app"
  tar -xzf "$tgz" -C "$APICURIO_HOME/app"
  rm -rf "$APICURIO_HOME/dl" # the tarball stays in ~/.m2
  # 3.1+ ships a Quarkus fast-jar (quarkus-run.jar); 3.0.x a legacy
  # "<artifact>-runner.jar" with lib/ beside it. Remember which one to run.
  local jar runners=("$APICURIO_HOME"/app/*-runner.jar)
  if [[ -f $APICURIO_HOME/app/quarkus-run.jar ]]; then
    jar=$APICURIO_HOME/app/quarkus-run.jar
  else
    jar=${runners[0]}
  fi
  [[ -f $jar ]] || die "neither quarkus-run.jar nor *-runner.jar found in $tgz"
  printf '%s\n' "$jar" >"$APICURIO_HOME/launcher"
  touch "$APICURIO_HOME/.complete"
}

# ---------------------------------------------------------------- kafka

kafka_classpath() { printf '%s/libs/*' "$KAFKA_HOME"; }

# secured: this start, or the running broker, has the SASL_SSL listener.
secured() {
  [[ $REALBROKER_SECURED == 1 || -s $SECURED_DIR/password ]]
}

# write_secured_material: a CA, the broker's key and certificate signed by
# it (as a PKCS12 key store for the broker) and the SCRAM password, in
# $SECURED_DIR.
write_secured_material() {
  need openssl
  rm -rf "$SECURED_DIR"
  mkdir -p "$SECURED_DIR"
  local d=$SECURED_DIR
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$d/ca.key" -out "$d/ca.pem" \
      -subj "/CN=productstream realbroker test CA" \
      -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -keyout "$d/broker.key" -out "$d/broker.csr" -subj "/CN=127.0.0.1"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" >"$d/broker.ext"
    openssl x509 -req -days 2 -in "$d/broker.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -extfile "$d/broker.ext" -out "$d/broker.pem"
    openssl rand -hex 16 >"$d/keystore-password"
    openssl pkcs12 -export -in "$d/broker.pem" -inkey "$d/broker.key" -name broker \
      -out "$d/broker.p12" -passout "file:$d/keystore-password"
  } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "openssl could not make the test CA and certificate"; }
  # Last: its presence marks a secured state dir (see secured).
  openssl rand -hex 16 >"$d/password"
}

# secured_kafka_config: the SASL_SSL listener's part of server.properties.
secured_kafka_config() {
  cat <<EOF
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$SECURED_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$(<"$SECURED_DIR/keystore-password")
listener.name.sasl_ssl.ssl.key.password=$(<"$SECURED_DIR/keystore-password")
sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="$SECURED_USER";
EOF
}

write_kafka_config() {
  local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT" protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if secured; then
    listeners+=",SASL_SSL://127.0.0.1:$KAFKA_SECURED_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  cat >"$KAFKA_PROPS" <<EOF
# Generated by realbroker.sh - single combined KRaft node for tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=$listeners,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$KAFKA_DATA
num.partitions=1
num.network.threads=2
num.io.threads=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
# A transaction's first write to a partition waits for the markers of the
# producer's previous transaction; the broker retries it every 20 ms by
# default, which every exactly-once cycle paid (docs/processor.md).
add.partitions.to.txn.retry.backoff.ms=1
auto.create.topics.enable=false
delete.topic.enable=true
# Make log compaction observable within seconds.
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.backoff.ms=1000
log.cleaner.min.cleanable.ratio=0.01
log.cleaner.delete.retention.ms=1000
log.cleaner.min.compaction.lag.ms=0
log.segment.delete.delay.ms=1000
log.retention.check.interval.ms=5000
EOF
  if secured; then secured_kafka_config >>"$KAFKA_PROPS"; fi

  # The broker logs to stdout, which spawn() sends to $KAFKA_LOG.
  log4j_console realbroker-kafka out INFO >"$KAFKA_LOG4J"
  cat >>"$KAFKA_LOG4J" <<'EOF'
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
logger.controller.name = kafka.controller
logger.controller.level = INFO
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF

  # Command-line tools (StorageTool) only print warnings, to stderr.
  log4j_console realbroker-tools err WARN >"$KAFKA_TOOLS_LOG4J"
}

# log4j_console NAME out|err LEVEL: print a log4j2 properties file whose
# root logger, at LEVEL, writes to one console appender, on stdout (out) or
# stderr (err).
log4j_console() {
  local name=$1 a=$2 level=$3 ref=STDOUT
  [[ $a == err ]] && ref=STDERR
  printf '%s\n' "status = warn" "name = $name" \
    "appender.$a.type = Console" "appender.$a.name = $ref"
  if [[ $a == err ]]; then
    printf '%s\n' "appender.$a.target = SYSTEM_ERR"
  fi
  printf '%s\n' "appender.$a.layout.type = PatternLayout" \
    "appender.$a.layout.pattern = [%d] %p %m (%c)%n" \
    "rootLogger.level = $level" "rootLogger.appenderRef.$a.ref = $ref"
}

# kafka_api_versions_ok: send a raw ApiVersions v0 request (api_key 18,
# correlation id 42, client id "rb") and check that the broker answers it
# with error_code 0. Pure bash, no client needed.
kafka_api_versions_ok() {
  local resp
  resp=$(
    exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT" || exit 1
    printf '\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x2a\x00\x02rb' >&3
    timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n'
  ) 2>/dev/null || return 1
  # size(4) correlation_id(4)=0x2a error_code(2)=0
  [[ ${resp:8:8} == 0000002a && ${resp:16:4} == 0000 ]]
}

kafka_version_from_log() {
  sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$KAFKA_LOG" 2>/dev/null | tail -n 1
}

# A KRaft cluster id is 16 random bytes in URL-safe base64 without padding
# (what StorageTool random-uuid prints); Kafka avoids ids starting with '-'.
gen_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || break
  done
  printf '%s\n' "$id"
}

# Set to 1 by *_launch when this invocation spawned the process, so that a
# failed start can take down what it started (and only that).
KAFKA_LAUNCHED=0
REGISTRY_LAUNCHED=0

abort_start() {
  local msg=$1
  ((REGISTRY_LAUNCHED)) && stop_proc Registry "$REGISTRY_PID" "$REGISTRY_MARK"
  ((KAFKA_LAUNCHED)) && stop_proc Kafka "$KAFKA_PID" "$KAFKA_MARK"
  die "$msg"
}

# wait_started NAME TAG PIDFILE MARK LOG LAUNCHED_VAR LATE READY...: poll
# every 0.5 s until the command READY succeeds. Abort the start when the
# process exits first (showing the end of LOG under TAG and setting
# LAUNCHED_VAR to 0), or when REALBROKER_TIMEOUT seconds pass ("NAME LATE
# within ...s").
wait_started() {
  local name=$1 tag=$2 pidfile=$3 mark=$4 logfile=$5 launched=$6 late=$7
  shift 7
  local deadline=$(($(now) + REALBROKER_TIMEOUT))
  while :; do
    if ! pid_alive "$pidfile" "$mark" >/dev/null; then
      tail_log "$tag" "$logfile"
      rm -f "$pidfile"
      printf -v "$launched" 0
      abort_start "$name exited during startup"
    fi
    "$@" && break
    if (($(now) >= deadline)); then
      tail_log "$tag" "$logfile"
      abort_start "$name $late within ${REALBROKER_TIMEOUT}s"
    fi
    sleep 0.5
  done
}

kafka_launch() {
  local pid p
  if pid=$(pid_alive "$KAFKA_PID" "$KAFKA_MARK"); then
    log "Kafka: already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  rm -f "$KAFKA_PID"
  local ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
  secured && ports+=("$KAFKA_SECURED_PORT")
  for p in "${ports[@]}"; do
    port_open "$p" && abort_start "port $p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SECURED_PORT)"
  done

  # Not running, so any old data is stale: start from an empty log dir.
  rm -rf "$KAFKA_DATA"
  mkdir -p "$KAFKA_DATA"
  : >"$KAFKA_LOG"
  if ((REALBROKER_SECURED == 1)); then write_secured_material; else rm -rf "$SECURED_DIR"; fi
  write_kafka_config

  local cp cluster_id scram=()
  cp=$(kafka_classpath)
  cluster_id=$(gen_cluster_id)
  if secured; then
    scram=(--add-scram "SCRAM-SHA-512=[name=$SECURED_USER,password=$(<"$SECURED_DIR/password")]")
  fi
  if ! "$KAFKA_JAVA" -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$cp" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_PROPS" "${scram[@]}" \
      >>"$KAFKA_LOG" 2>&1; then
    tail_log kafka "$KAFKA_LOG"
    abort_start "kafka.tools.StorageTool format failed"
  fi

  log "Kafka: starting $KAFKA_VERSION (cluster id $cluster_id) on 127.0.0.1:$KAFKA_PORT, log $KAFKA_LOG"
  kafka_spawn
}

# kafka_spawn: run the broker on the config and data dir in place.
kafka_spawn() {
  # shellcheck disable=SC2086 # heap options are word-split on purpose
  spawn "$KAFKA_LOG" "$KAFKA_PID" "$KAFKA_JAVA" $KAFKA_HEAP_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "$KAFKA_MARK" \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$(kafka_classpath)" kafka.Kafka "$KAFKA_PROPS"
  KAFKA_LAUNCHED=1
}

# kafka_ready: the broker logged its start and answers ApiVersions (and,
# secured, its SASL_SSL listener accepts connections).
kafka_ready() {
  grep -q 'Kafka Server started' "$KAFKA_LOG" 2>/dev/null && kafka_api_versions_ok &&
    { ! secured || port_open "$KAFKA_SECURED_PORT"; }
}

kafka_wait() {
  ((KAFKA_LAUNCHED)) || return 0
  wait_started Kafka kafka "$KAFKA_PID" "$KAFKA_MARK" "$KAFKA_LOG" KAFKA_LAUNCHED \
    "did not become ready" kafka_ready
  log "Kafka: ready, version $(kafka_version_from_log), pid $(<"$KAFKA_PID"), bootstrap 127.0.0.1:$KAFKA_PORT"
  if secured; then log "Kafka: SASL_SSL (SCRAM-SHA-512, OAUTHBEARER) on 127.0.0.1:$KAFKA_SECURED_PORT, CA $SECURED_DIR/ca.pem"; fi
}

# ---------------------------------------------------------------- registry

# http_get URL -> prints "<status> <body>"; status 000 when nothing answers.
http_get() {
  local url=$1
  if command -v curl >/dev/null 2>&1; then
    local out
    out=$(curl -s -m 5 -w '\n%{http_code}' "$url" 2>/dev/null) || true
    [[ -n $out ]] || out=$'\n000'
    printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "$url" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status, r.read().decode("utf-8", "replace"))
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode("utf-8", "replace"))
except Exception:
    print("000 ")
EOF
  else
    die "neither curl nor python3 is available for HTTP checks"
  fi
}

registry_version() {
  local r
  r=$(http_get "$REGISTRY_BASE/apis/registry/v3/system/info")
  [[ ${r%% *} == 200 ]] || { echo unknown; return 0; }
  sed -n 's/.*"version" *: *"\([^"]*\)".*/\1/p' <<<"${r#* }" | head -n 1
}

# 3.1+ (Quarkus fast-jar builds) also open a management interface.
apicurio_has_management() {
  case "$APICURIO_VERSION" in
    2.* | 3.0.*) return 1 ;;
    *) return 0 ;;
  esac
}

registry_launch() {
  local pid p ports=("$REGISTRY_PORT")
  if pid=$(pid_alive "$REGISTRY_PID" "$REGISTRY_MARK"); then
    log "Registry: already running (pid $pid) at $CCOMPAT_URL"
    return 0
  fi
  rm -f "$REGISTRY_PID"
  apicurio_has_management && ports+=("$REGISTRY_MANAGEMENT_PORT")
  for p in "${ports[@]}"; do
    port_open "$p" && abort_start "port $p is already in use by another process (set REGISTRY_PORT / REGISTRY_MANAGEMENT_PORT)"
  done

  rm -rf "$REGISTRY_WORK"
  mkdir -p "$REGISTRY_WORK"
  : >"$REGISTRY_LOG"
  log "Registry: starting Apicurio Registry $APICURIO_VERSION (in-memory storage) on 127.0.0.1:$REGISTRY_PORT, log $REGISTRY_LOG"
  # Default storage is SQL on an in-memory H2 database, which is what we
  # want. The management interface of 3.1+ would otherwise bind 0.0.0.0:9000.
  # shellcheck disable=SC2086 # heap options are word-split on purpose
  (cd "$REGISTRY_WORK" && spawn "$REGISTRY_LOG" "$REGISTRY_PID" "$REGISTRY_JAVA" $REGISTRY_HEAP_OPTS \
    "$REGISTRY_MARK" \
    -Djava.io.tmpdir="$REGISTRY_WORK" \
    -Dquarkus.http.host=127.0.0.1 \
    -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dquarkus.management.host=127.0.0.1 \
    -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
    -Dquarkus.log.console.format='%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] (%t) %s%e%n' \
    -Dapicurio.storage.snapshot.location="$REGISTRY_WORK" \
    -Dapicurio.import.work-dir="$REGISTRY_WORK" \
    -Dapicurio.datasource.jdbc.initial-size=2 \
    -Dapicurio.datasource.jdbc.min-size=2 \
    -Dapicurio.datasource.jdbc.max-size=20 \
    -Dquarkus.http.access-log.enabled=false \
    -jar "$(<"$APICURIO_HOME/launcher")")
  REGISTRY_LAUNCHED=1
}

# registry_ready: the ccompat API answers 200. (A failing http_get ends
# the script, as it would outside a condition.)
registry_ready() {
  local r
  r=$(http_get "$CCOMPAT_URL/subjects") || exit
  [[ ${r%% *} == 200 ]]
}

registry_wait() {
  ((REGISTRY_LAUNCHED)) || return 0
  wait_started "Apicurio Registry" registry "$REGISTRY_PID" "$REGISTRY_MARK" "$REGISTRY_LOG" REGISTRY_LAUNCHED \
    "did not answer 200 on $CCOMPAT_URL/subjects" registry_ready
  log "Registry: ready, Apicurio Registry version $(registry_version), pid $(<"$REGISTRY_PID"), ccompat $CCOMPAT_URL"
}

# ---------------------------------------------------------------- commands

cmd_start() {
  mkdir -p "$REALBROKER_DIR" "$REALBROKER_CACHE"
  local t0
  t0=$(now)
  # Resolve (first run only) before launching anything, then launch both
  # JVMs at once and wait for each: they start in parallel.
  need_java "$KAFKA_JAVA" 17 "Kafka $KAFKA_VERSION"
  need_java "$REGISTRY_JAVA" "$(apicurio_min_java)" "Apicurio Registry $APICURIO_VERSION"
  ensure_kafka_jars
  ensure_apicurio
  kafka_launch
  registry_launch
  kafka_wait
  registry_wait
  log "both up in $(($(now) - t0))s"
  cmd_env
}

cmd_stop() {
  stop_proc Registry "$REGISTRY_PID" "$REGISTRY_MARK"
  stop_proc Kafka "$KAFKA_PID" "$KAFKA_MARK"
  rm -rf "$REALBROKER_DIR"
  log "removed $REALBROKER_DIR"
}

# cmd_stop_broker: kill the broker alone, keeping its data dir and config,
# so that cmd_start_broker brings the same broker back.
cmd_stop_broker() {
  [[ -f $KAFKA_PROPS && -d $KAFKA_DATA ]] || die "no broker state in $REALBROKER_DIR: run start first"
  local pid
  if ! pid=$(pid_alive "$KAFKA_PID" "$KAFKA_MARK"); then
    log "Kafka: not running"
    return 0
  fi
  log "Kafka: killing pid $pid (SIGKILL), keeping its data"
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$KAFKA_PID" "$KAFKA_MARK" 40 0.25
  local i
  for ((i = 0; i < 100; i++)); do
    port_open "$KAFKA_PORT" || break
    sleep 0.1
  done
  rm -f "$KAFKA_PID"
  log "Kafka: stopped"
}

# cmd_start_broker: start the broker stopped by cmd_stop_broker on its data.
cmd_start_broker() {
  [[ -f $KAFKA_PROPS && -d $KAFKA_DATA ]] || die "no broker state in $REALBROKER_DIR: run start first"
  local pid
  if pid=$(pid_alive "$KAFKA_PID" "$KAFKA_MARK"); then
    log "Kafka: already running (pid $pid)"
    return 0
  fi
  log "Kafka: starting again on $KAFKA_DATA"
  printf -- '----- started again by start-broker -----\n' >>"$KAFKA_LOG"
  # The log is appended to: wait for this start's line, not the first one.
  local started
  started=$(grep -c 'Kafka Server started' "$KAFKA_LOG" 2>/dev/null || true)
  kafka_spawn
  # The pid's command line reads empty for a moment while nohup and setsid
  # exec java: give it that moment before taking it for dead.
  local i
  for ((i = 0; i < 20; i++)); do
    pid_alive "$KAFKA_PID" "$KAFKA_MARK" >/dev/null && break
    sleep 0.1
  done
  # shellcheck disable=SC2317 # called through wait_started
  kafka_restarted() {
    (($(grep -c 'Kafka Server started' "$KAFKA_LOG" 2>/dev/null || true) > started)) && kafka_api_versions_ok &&
      { ! secured || port_open "$KAFKA_SECURED_PORT"; }
  }
  wait_started Kafka kafka "$KAFKA_PID" "$KAFKA_MARK" "$KAFKA_LOG" KAFKA_LAUNCHED "did not become ready" kafka_restarted
  log "Kafka: ready again, pid $(<"$KAFKA_PID")"
}

# cmd_signal_broker NAME SIGNAL: send SIGNAL to the running broker.
cmd_signal_broker() {
  local what=$1 sig=$2 pid
  pid=$(pid_alive "$KAFKA_PID" "$KAFKA_MARK") || die "Kafka is not running"
  kill -"$sig" "$pid"
  log "Kafka: $what (pid $pid, SIG$sig)"
}

cmd_status() {
  local rc=0 pid
  if pid=$(pid_alive "$KAFKA_PID" "$KAFKA_MARK"); then
    if kafka_api_versions_ok; then
      echo "kafka: running (pid $pid), version $(kafka_version_from_log), answering on 127.0.0.1:$KAFKA_PORT"
      if secured && ! port_open "$KAFKA_SECURED_PORT"; then
        echo "kafka: the SASL_SSL listener 127.0.0.1:$KAFKA_SECURED_PORT does NOT accept connections"
        rc=1
      elif secured; then
        echo "kafka: SASL_SSL listener on 127.0.0.1:$KAFKA_SECURED_PORT"
      fi
    else
      echo "kafka: running (pid $pid) but NOT answering on 127.0.0.1:$KAFKA_PORT"
      rc=1
    fi
  else
    echo "kafka: stopped"
    rc=1
  fi
  if pid=$(pid_alive "$REGISTRY_PID" "$REGISTRY_MARK"); then
    local r
    r=$(http_get "$CCOMPAT_URL/subjects")
    if [[ ${r%% *} == 200 ]]; then
      echo "registry: running (pid $pid), Apicurio Registry $(registry_version), answering at $CCOMPAT_URL"
    else
      echo "registry: running (pid $pid) but $CCOMPAT_URL/subjects answered ${r%% *}"
      rc=1
    fi
  else
    echo "registry: stopped"
    rc=1
  fi
  return "$rc"
}

cmd_env() {
  # The command the integration tests run, with stop-broker and start-broker
  # or pause-broker and resume-broker, to ride out an outage of this broker.
  printf 'export PRODUCTSTREAM_BROKER_CONTROL=%q\n' \
    "env REALBROKER_DIR=$REALBROKER_DIR REALBROKER_CACHE=$REALBROKER_CACHE KAFKA_VERSION=$KAFKA_VERSION LOG4J_VERSION=$LOG4J_VERSION KAFKA_JAVA=$KAFKA_JAVA KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT KAFKA_SECURED_PORT=$KAFKA_SECURED_PORT bash $(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
  if secured; then
    echo "export PRODUCTSTREAM_SECURED_KAFKA_BROKERS=127.0.0.1:$KAFKA_SECURED_PORT"
    echo "export PRODUCTSTREAM_SECURED_KAFKA_CA_FILE=$SECURED_DIR/ca.pem"
    echo "export PRODUCTSTREAM_SECURED_KAFKA_MECHANISMS=SCRAM-SHA-512,OAUTHBEARER"
    echo "export PRODUCTSTREAM_SECURED_KAFKA_USERNAME=$SECURED_USER"
    echo "export PRODUCTSTREAM_SECURED_KAFKA_PASSWORD=$(<"$SECURED_DIR/password")"
    echo "export PRODUCTSTREAM_SECURED_SCHEMA_REGISTRY_URL=$CCOMPAT_URL"
    return
  fi
  echo "export PRODUCTSTREAM_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export PRODUCTSTREAM_SCHEMA_REGISTRY_URL=$CCOMPAT_URL"
}

cmd_logs() {
  tail_log kafka "$KAFKA_LOG"
  tail_log registry "$REGISTRY_LOG"
}

main() {
  case "${1:-}" in
    start) cmd_start ;;
    start-secured)
      REALBROKER_SECURED=1
      cmd_start
      ;;
    stop) cmd_stop ;;
    stop-broker) cmd_stop_broker ;;
    start-broker) cmd_start_broker ;;
    pause-broker) cmd_signal_broker paused STOP ;;
    resume-broker) cmd_signal_broker resumed CONT ;;
    status) cmd_status ;;
    env) cmd_env ;;
    logs) cmd_logs ;;
    *)
      echo "usage: $0 start|start-secured|stop|stop-broker|start-broker|pause-broker|resume-broker|status|env|logs" >&2
      exit 2
      ;;
  esac
}

main "$@"
