"""Names and flags must match Celery's exactly: RabbitMQ refuses any other redeclare."""

from __future__ import annotations

import os
import socket

import pytest

from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.wire import names
from aiocelerymon.wire.entities import Binding, Exchange, ExchangeKind


def test_exchange_flags_are_celerys():
    assert names.pidbox_exchange() == Exchange("celery.pidbox", ExchangeKind.FANOUT, False, False)
    assert names.reply_exchange() == Exchange(
        "reply.celery.pidbox", ExchangeKind.DIRECT, False, False
    )
    assert names.event_exchange() == Exchange("celeryev", ExchangeKind.TOPIC, True, False)
    assert names.pidbox_exchange("custom").name == "custom.pidbox"
    assert names.reply_exchange("custom").name == "reply.custom.pidbox"


def test_queue_names():
    assert names.node_queue_name("celery@host1") == "celery@host1.celery.pidbox"
    assert names.reply_queue_name("abc", "ns") == "abc.reply.ns.pidbox"
    assert names.event_queue_name("1234") == "celeryev.1234"
    assert names.event_queue_name("x", prefix="mon") == "mon.x"


def test_reply_binding_uses_control_ttl_and_expiry_for_the_reply_queue():
    b = names.reply_binding("oid1")
    assert (b.exchange.name, b.routing_key, b.queue) == (
        "reply.celery.pidbox",
        "oid1",
        "oid1.reply.celery.pidbox",
    )
    assert (b.message_ttl, b.expires) == (300.0, 10.0)
    assert (b.exclusive, b.durable, b.auto_delete) == (True, False, True)


def test_event_binding_hears_everything_including_task_multi():
    b = names.event_binding("n1")
    assert (b.routing_key, b.queue, b.message_ttl, b.expires) == ("#", "celeryev.n1", 5.0, 60.0)
    durable = names.event_binding("n1", durable=True, exclusive=False)
    assert (durable.durable, durable.auto_delete, durable.exclusive) == (True, False, False)


def test_durable_exclusive_is_refused_like_celery():
    with pytest.raises(ConfigurationError, match="durable and exclusive"):
        names.reply_binding("x", durable=True, exclusive=True)
    with pytest.raises(ConfigurationError, match="positive"):
        Binding(names.event_exchange(), expires=0)


@pytest.mark.parametrize(
    ("seconds", "ms"), [(10.0, 10000), (300.0, 300000), (5, 5000), (0.0015, 1), (None, None)]
)
def test_milliseconds_are_integers(seconds, ms):
    value = names.to_milliseconds(seconds)
    assert value == ms
    assert value is None or type(value) is int


def test_event_routing_key_and_anon_nodename():
    assert names.event_routing_key("task-succeeded") == "task.succeeded"
    assert names.event_routing_key("worker-heartbeat") == "worker.heartbeat"
    assert names.anon_nodename() == f"gen{os.getpid()}@{socket.gethostname()}"
    assert names.anon_nodename("h", 7) == "gen7@h"
