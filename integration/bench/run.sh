#!/usr/bin/env bash
# run.sh - run the load harness (integration/bench) against a real Apache
# Kafka and schema registry, and real sink backends (PostgreSQL, Redis,
# OpenSearch), and write integration/bench/RESULTS.md.
#
#   bash integration/bench/run.sh [harness flags]     e.g. -duration 20s
#   bash integration/bench/run.sh -sections sinks -out /tmp/sinks.md   the sinks alone
#   bash integration/bench/run.sh -sections sinkfresh,startup          freshness to every sink, start-up and takeover
#   bash integration/bench/run.sh -config secured.yaml ...             every client secured as that file's kafka and
#                                                                      schema_registry sections say
#
# With PRODUCTSTREAM_KAFKA_BROKERS (and PRODUCTSTREAM_SCHEMA_REGISTRY_URL) set,
# it uses that broker and registry. Otherwise it starts Kafka and Apicurio
# Registry with integration/realbroker/realbroker.sh on ports and a state dir
# of its own (so a broker on the default ports is left alone), and stops them
# when it is done, whatever happens. With -config, whose kafka.brokers take
# the place of that broker, set PRODUCTSTREAM_KAFKA_BROKERS and
# PRODUCTSTREAM_SCHEMA_REGISTRY_URL too (and -broker-dir, for Kafka's CPU),
# or a broker the run does not use is started.
#
# Likewise for the sinks section's backends: each of PRODUCTSTREAM_POSTGRES_DSN,
# PRODUCTSTREAM_REDIS_ADDR and PRODUCTSTREAM_OPENSEARCH_URL that is set is
# used; for the others it runs integration/backends/backends.sh (its ports and
# state dir, see there), reusing a backend already running (left running) and
# stopping at the end only those it started. With -sections lacking sinks and
# sinkfresh, no backend is needed.
#
# Environment (all optional), for the broker it starts:
#   BENCH_KAFKA_PORT                 (39092)
#   BENCH_KAFKA_CONTROLLER_PORT      (39093)
#   BENCH_REGISTRY_PORT              (38081)
#   BENCH_REGISTRY_MANAGEMENT_PORT   (38082)
#   BENCH_REALBROKER_DIR             (/tmp/productstream-bench-realbroker)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

rb() {
  KAFKA_PORT=${BENCH_KAFKA_PORT:-39092} \
    KAFKA_CONTROLLER_PORT=${BENCH_KAFKA_CONTROLLER_PORT:-39093} \
    REGISTRY_PORT=${BENCH_REGISTRY_PORT:-38081} \
    REGISTRY_MANAGEMENT_PORT=${BENCH_REGISTRY_MANAGEMENT_PORT:-38082} \
    REALBROKER_DIR=$REALBROKER_DIR \
    bash integration/realbroker/realbroker.sh "$@"
}

stop_broker=0
started_backends=()
cleanup() {
  if ((${#started_backends[@]} > 0)); then
    bash integration/backends/backends.sh stop "${started_backends[@]}" >/dev/null || true
  fi
  if ((stop_broker)); then
    rb stop || true
  fi
}
trap cleanup EXIT

if [[ -z ${PRODUCTSTREAM_KAFKA_BROKERS:-} ]]; then
  export REALBROKER_DIR=${BENCH_REALBROKER_DIR:-/tmp/productstream-bench-realbroker}
  if rb status >/dev/null 2>&1; then
    echo "[bench] reusing the broker already running in $REALBROKER_DIR (left running)" >&2
  else
    stop_broker=1
    rb start >/dev/null
  fi
  eval "$(rb env)"
fi

# The sinks and sinkfresh sections need the backends; they run unless
# -sections leaves them out.
sections=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    -sections | --sections) sections=${args[i + 1]:-} ;;
    -sections=* | --sections=*) sections=${args[i]#*=} ;;
  esac
done
if [[ -z $sections || ,${sections// /}, == *,sinks,* || ,${sections// /}, == *,sinkfresh,* ]]; then
  declare -A env_of=([postgres]=PRODUCTSTREAM_POSTGRES_DSN [redis]=PRODUCTSTREAM_REDIS_ADDR [opensearch]=PRODUCTSTREAM_OPENSEARCH_URL)
  missing=()
  for name in postgres redis opensearch; do
    [[ -n ${!env_of[$name]:-} ]] && continue
    missing+=("$name")
    if bash integration/backends/backends.sh status "$name" >/dev/null 2>&1; then
      echo "[bench] reusing the $name already running (left running)" >&2
    else
      started_backends+=("$name")
    fi
  done
  if ((${#started_backends[@]} > 0)); then
    echo "[bench] starting ${started_backends[*]} (integration/backends/backends.sh)" >&2
    bash integration/backends/backends.sh start "${started_backends[@]}" >/dev/null
  fi
  if ((${#missing[@]} > 0)); then
    eval "$(bash integration/backends/backends.sh env "${missing[@]}")"
  fi
fi

# The command RESULTS.md names.
export BENCH_COMMAND="bash integration/bench/run.sh${*:+ $*}"
go run ./integration/bench "$@"
