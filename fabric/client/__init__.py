"""Loom's client library: talks straight to brokers and the coordinator (the fast path)."""

from fabric.client.admin import EARLIEST, LATEST, Admin
from fabric.client.consumer import Consumer
from fabric.client.group import GroupConsumer
from fabric.client.producer import Producer, RecordFuture, RecordMetadata
from fabric.records import Record

__all__ = ["Admin", "Consumer", "GroupConsumer", "Producer", "RecordFuture", "RecordMetadata", "Record", "EARLIEST", "LATEST"]
