#!/usr/bin/env bash
# run.sh - run the load harness of issue 6 (integration/bench) against a real
# Apache Kafka and schema registry, and write integration/bench/RESULTS.md.
#
#   bash integration/bench/run.sh [harness flags]     e.g. -duration 20s
#
# With PRODUCTSTREAM_KAFKA_BROKERS (and PRODUCTSTREAM_SCHEMA_REGISTRY_URL) set,
# it uses that broker and registry. Otherwise it starts Kafka and Apicurio
# Registry with integration/realbroker/realbroker.sh on ports and a state dir
# of its own (so a broker on the default ports is left alone), and stops them
# when it is done, whatever happens.
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

if [[ -z ${PRODUCTSTREAM_KAFKA_BROKERS:-} ]]; then
  export REALBROKER_DIR=${BENCH_REALBROKER_DIR:-/tmp/productstream-bench-realbroker}
  if rb status >/dev/null 2>&1; then
    echo "[bench] reusing the broker already running in $REALBROKER_DIR (left running)" >&2
  else
    trap 'rb stop' EXIT
    rb start >/dev/null
  fi
  eval "$(rb env)"
fi

# The command RESULTS.md names.
export BENCH_COMMAND="bash integration/bench/run.sh${*:+ $*}"
go run ./integration/bench "$@"
