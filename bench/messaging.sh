#!/usr/bin/env bash
# Messaging throughput (issue 6): durable publish -> consume -> ack of 1 KiB messages on
# each backend; on RabbitMQ and NATS our layer against the raw client (lapin, async-nats)
# doing the same work in the same run.
#
#   bench/messaging.sh
#
# Knobs (environment):
#   BENCH_ROUNDS=3          runs of each example; every run's output is printed
#   BENCH_EMBEDDED_N=100000 messages per embedded run
#   BENCH_BROKER_N=20000    messages per RabbitMQ / NATS run
#   BENCH_SKIP_BUILD=0      1 = use the release examples already built
#
# Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and NATS with JetStream on 127.0.0.1:4222.
# Results and their reading: BENCHMARKS.md. Run one benchmark at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${BENCH_ROUNDS:-3}
EMBEDDED_N=${BENCH_EMBEDDED_N:-100000}
BROKER_N=${BENCH_BROKER_N:-20000}

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p messaging --examples
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
EX="$TARGET_DIR/release/examples"

echo "messaging throughput, $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  echo
  echo "== round $round: embedded ($EMBEDDED_N x 1 KiB, 256 publishes in flight, prefetch 256)"
  "$EX/embedded_throughput" "$EMBEDDED_N" 1024 256
  echo "== round $round: RabbitMQ, ours vs raw lapin ($BROKER_N x 1 KiB)"
  "$EX/rabbitmq_throughput" "$BROKER_N"
  echo "== round $round: NATS JetStream, ours vs raw async-nats ($BROKER_N x 1 KiB)"
  "$EX/nats_throughput" "$BROKER_N"
done
