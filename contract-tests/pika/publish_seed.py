"""Publishes the seed's work-queue message the way the seed's Python producer does.

Our side declared the queue first; pika declares it again exactly as the seed does
(`durable=True`, no arguments), which RabbitMQ accepts only because our queues carry no
x-arguments. Then three bad ones (not JSON, an unknown type, a wrong shape), which our
consumer must dead-letter with their reasons while it keeps serving.
"""

import json
import sys

import pika


def main() -> None:
    queue, url = sys.argv[1], sys.argv[2]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.confirm_delivery()

    # The seed, byte for byte: a durable queue and a persistent message, nothing else.
    message = {"order_id": "ORD-12345", "total": 1999.98}
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=json.dumps(message),
        properties=pika.BasicProperties(delivery_mode=2),
        mandatory=True,
    )
    # Not JSON at all.
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=b"{not json",
        properties=pika.BasicProperties(delivery_mode=2),
        mandatory=True,
    )
    # JSON, but a message type this queue does not carry.
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=json.dumps({"order_id": "ORD-1"}),
        properties=pika.BasicProperties(delivery_mode=2, type="RefundOrder"),
        mandatory=True,
    )
    # The right type, the wrong shape: total missing.
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=json.dumps({"order_id": "ORD-2"}),
        properties=pika.BasicProperties(delivery_mode=2),
        mandatory=True,
    )
    connection.close()
    print(f"published the seed message and three bad ones to {queue}")


if __name__ == "__main__":
    main()
