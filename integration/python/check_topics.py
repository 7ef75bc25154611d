#!/usr/bin/env python3
"""Reads every productstream topic on a broker with clients nobody here wrote.

Confluent's client (librdkafka) consumes every partition of every topic whose
name ends in .changes, .updates, .events or a state topic's name (.products,
.collections, .categories, .options, .groups, .pos); its schema-registry client and
fastavro decode each value through the registry. For each record it checks:

- the key is a UTF-8 "<namespace>:<id>" string;
- the record sits on the partition Kafka's default partitioner gives its key
  (murmur2 as implemented by kafka-python);
- the value decodes, and its namespace and id match the key;
- a null value (tombstone) appears only on a state topic;
- an update stands for at least one change.

It prints one line per topic and a closing "N passed, N failed" line, and
exits non-zero when any record fails or nothing was found to check.
"""

import argparse
import sys
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka.partitioner.default import murmur2

STATE = ("products", "collections", "categories", "options", "groups", "pos")
FAMILIES = ("changes", "updates", "events") + STATE


def kafka_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def read_topic(brokers, topic, partitions):
    """Yields every record of topic present now."""
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "check-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    try:
        assign, remaining = [], set()
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                assign.append(TopicPartition(topic, p, low))
                remaining.add(p)
        if not assign:
            return
        consumer.assign(assign)
        idle = 0
        while remaining:
            msg = consumer.poll(5.0)
            if msg is None:
                idle += 1
                if idle > 6:
                    raise RuntimeError(f"{topic}: no records for 30 s, partitions left {sorted(remaining)}")
                continue
            idle = 0
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    remaining.discard(msg.partition())
                    continue
                raise RuntimeError(f"{topic}: {msg.error()}")
            yield msg
    finally:
        consumer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--registry", required=True, help="Confluent-compatible registry base URL")
    ap.add_argument("--expect-tombstone", action="store_true", help="fail unless some .products topic holds a tombstone")
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.brokers})
    meta = admin.list_topics(timeout=30)
    topics = sorted(t for t in meta.topics if not t.startswith("_") and t.rsplit(".", 1)[-1] in FAMILIES)
    registry = SchemaRegistryClient({"url": args.registry})
    decode = AvroDeserializer(registry)

    passed = failed = tombstones = 0
    for topic in topics:
        family = topic.rsplit(".", 1)[-1]
        partitions = len(meta.topics[topic].partitions)
        n = bad = dead = 0
        for msg in read_topic(args.brokers, topic, partitions):
            n += 1
            problems = []
            key = msg.key()
            try:
                key_text = key.decode("utf-8")
                namespace, _, ident = key_text.partition(":")
                if not namespace or not ident:
                    problems.append(f"key {key_text!r} is not <namespace>:<id>")
            except (AttributeError, UnicodeDecodeError):
                problems.append(f"key {key!r} is not UTF-8 text")
                namespace = ident = None
            if key is not None and msg.partition() != kafka_partition(key, partitions):
                problems.append(f"on partition {msg.partition()}, Kafka's partitioner gives {kafka_partition(key, partitions)}")
            if msg.value() is None:
                dead += 1
                if family not in STATE:
                    problems.append("tombstone outside a state topic")
            else:
                try:
                    value = decode(msg.value(), SerializationContext(topic, MessageField.VALUE))
                    subject = value.get("subject") if family == "events" else value.get("product_id", value.get("id"))
                    if (value.get("namespace"), subject) != (namespace, ident):
                        problems.append(f"value is {value.get('namespace')}:{subject}, key {key_text}")
                    if family == "updates" and value.get("change_count", 0) < 1:
                        problems.append("update stands for no change")
                except Exception as e:  # any decoding failure is a failed record
                    problems.append(f"value does not decode: {e}")
            if problems:
                bad += 1
                if bad <= 5:
                    print(f"  FAIL {topic}[{msg.partition()}]@{msg.offset()}: {'; '.join(problems)}")
        tombstones += dead
        passed += n - bad
        failed += bad
        print(f"{topic}: {n} records, {partitions} partitions, {dead} tombstones, {bad} failed")

    if not topics or passed + failed == 0:
        print("no productstream records found")
        failed += 1
    if args.expect_tombstone and tombstones == 0:
        print("no tombstone found on any products topic")
        failed += 1
    print(f"check_topics: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
