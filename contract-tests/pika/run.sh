#!/usr/bin/env bash
# A producer that is not ours: Python pika publishes to a RabbitMQ queue exactly as the
# seed does (a durable queue, delivery_mode=2, no other properties), then one malformed
# body. Our consumer's side is checked by crates/messaging/tests/rabbitmq.rs
# (`pika_interop_the_seeds_message_is_handled_and_bad_ones_dead_lettered`), which runs this script.
# Usage: contract-tests/pika/run.sh <queue> [amqp-url]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
queue="${1:?usage: run.sh <queue> [amqp-url]}"
url="${2:-amqp://guest:guest@127.0.0.1:5672/%2f}"
venv="${PIKA_VENV:-$root/target/pika-venv}"

. "$root/contract-tests/lib.sh"
requirements_venv "$venv" "$here/requirements.txt"

exec "$venv/bin/python" "$here/publish_seed.py" "$queue" "$url"
