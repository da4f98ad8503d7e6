"""Bus request/reply round trip vs a bare paho round trip, on one real mosquitto.

Run: .venv/bin/python bench/bus.py [--count 2000]
The baseline is a raw paho client echoing through the same broker in the same run, so the
ratio shows what validation, typing and correlation cost on top of MQTT itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, Endpoint, read_password, set_no_delay
from fieldkit.messages import Ping, Pong
from fieldkit.registry import Identity, identities_for, load_specs

BENCH = Identity(name="tester", writes=("tester/#",), reads=("#",))


def raw_round_trips(broker: LocalBroker, count: int, *, no_delay: bool) -> list[float]:
    """Baseline: publish to a topic our own raw client echoes back, QoS 1 both ways."""
    pw = read_password(broker.runtime_dir, "tester")
    got = threading.Event()
    echo = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    echo.username_pw_set("tester", pw)
    echo.on_message = lambda c, u, m: c.publish("tester/pong", m.payload, qos=1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if no_delay:
        echo.on_socket_open = client.on_socket_open = set_no_delay
    echo.connect(broker.endpoint.host, broker.endpoint.port)
    echo.subscribe("tester/ping", qos=1)
    echo.loop_start()
    client.username_pw_set("tester", pw)
    client.on_message = lambda c, u, m: got.set()
    client.connect(broker.endpoint.host, broker.endpoint.port)
    client.subscribe("tester/pong", qos=1)
    client.loop_start()
    time.sleep(0.5)
    times = []
    for _ in range(count):
        got.clear()
        start = time.perf_counter()
        client.publish("tester/ping", Ping().encode(), qos=1)
        got.wait(5)
        times.append(time.perf_counter() - start)
    for c in (client, echo):
        c.disconnect()
        c.loop_stop()
    return times


def bus_round_trips(broker: LocalBroker, count: int) -> list[float]:
    """Typed request/reply: tester asks the monitor identity's Bus for ping → pong."""
    responder = Bus("monitor", broker.endpoint, read_password(broker.runtime_dir, "monitor"))
    responder.connect()
    requester = Bus(
        "tester",
        broker.endpoint,
        read_password(broker.runtime_dir, "tester"),
        announce_health=False,
    )
    requester.connect()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        requester.request("monitor", "ping", Ping(), Pong)
        times.append(time.perf_counter() - start)
    requester.close()
    responder.close()
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1000 for t in times)
    return statistics.median(ms), ms[int(len(ms) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        identities = [*identities_for(load_specs(["monitor"])), BENCH]
        with LocalBroker(Path(tmp), identities, Endpoint(port=0)) as broker:
            stock = summary(raw_round_trips(broker, args.count // 10, no_delay=False))
            base = summary(raw_round_trips(broker, args.count, no_delay=True))
            bus = summary(bus_round_trips(broker, args.count))
    print(f"round trips: {args.count} (stock paho: {args.count // 10})")
    print(f"raw paho, stock socket   p50 {stock[0]:8.3f} ms   p99 {stock[1]:8.3f} ms")
    print(f"raw paho, TCP_NODELAY    p50 {base[0]:8.3f} ms   p99 {base[1]:8.3f} ms   (baseline)")
    print(f"fieldkit typed request   p50 {bus[0]:8.3f} ms   p99 {bus[1]:8.3f} ms")
    print(f"ratio fieldkit/baseline  p50 {bus[0] / base[0]:.2f}x   p99 {bus[1] / base[1]:.2f}x")


if __name__ == "__main__":
    main()
