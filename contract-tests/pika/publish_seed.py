"""Publishes the seed's work-queue message the way the seed's Python producer does.

Our side declared the queue first; pika declares it again exactly as the seed does
(`durable=True`, no arguments), which RabbitMQ accepts only because our queues carry no
x-arguments. Then one malformed body, which our consumer must dead-letter with a reason.
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
    connection.close()
    print(f"published the seed message and one malformed body to {queue}")


if __name__ == "__main__":
    main()
