#!/usr/bin/env python3
"""Writes demo-month.jsonl: one month (October 2026) of CloudEvents usage for two tenants.

Deterministic (fixed seed) so the demo's invoice previews are the same on every machine.
- acme: an API customer whose gateway reports request counts every hour (`api.usage`).
- podco: a pod sampled every hour for CPU, memory and disk (`pod.sample`), plus daily
  network transfer reports (`pod.network`).
- two malformed events (a sample without its disk value, a type no meter takes) that the
  load must reject with a reason.
Run from the repository root: python3 events/samples/generate_demo_month.py
"""
import json
import random
from datetime import datetime, timedelta, timezone

rng = random.Random(20261001)
start = datetime(2026, 10, 1, tzinfo=timezone.utc)
end = datetime(2026, 11, 1, tzinfo=timezone.utc)


def event(eid, etype, subject, time, data):
    return {
        "specversion": "1.0",
        "id": eid,
        "source": "/demo/generator",
        "type": etype,
        "subject": subject,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "datacontenttype": "application/json",
        "data": data,
    }


events = []
t = start
while t < end:
    # Office-hours shaped traffic, about 150k requests over the month.
    base = 320 if 8 <= t.hour < 20 else 60
    requests = base + rng.randrange(0, 60)
    events.append(event(f"acme-{t:%Y%m%d%H}", "api.usage", "acme", t + timedelta(minutes=59),
                        {"requests": requests, "route": "/v1/orders" if t.hour % 3 else "/v1/search"}))
    events.append(event(f"podco-{t:%Y%m%d%H}", "pod.sample", "podco", t + timedelta(minutes=30),
                        {"cpu_vcpu": 2, "memory_gb": 4, "disk_gb": 50}))
    if t.hour == 23:
        events.append(event(f"podco-net-{t:%Y%m%d}", "pod.network", "podco", t + timedelta(minutes=59),
                            {"out_gb": "0.40", "in_gb": "1.25"}))
    t += timedelta(hours=1)

# Two malformed events the load must reject with a reason (and count nothing of).
events.append(event("podco-broken-sample", "pod.sample", "podco", datetime(2026, 10, 31, 12, 30, tzinfo=timezone.utc),
                    {"cpu_vcpu": 2, "memory_gb": 4}))
events.append(event("acme-unknown-type", "api.usage.v2", "acme", datetime(2026, 10, 31, 12, 0, tzinfo=timezone.utc),
                    {"requests": 1000}))

with open("events/samples/demo-month.jsonl", "w") as f:
    for e in events:
        f.write(json.dumps(e, separators=(",", ":")) + "\n")
print(f"wrote {len(events)} events")
