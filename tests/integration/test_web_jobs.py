"""Scheduled jobs and daily summaries on the dashboard and in the API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import wait_for


def get(cluster, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(cluster.url(path), timeout=10) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_web_jobs_and_daily_summary_are_listed(cluster):
    hub = cluster.hub.role.hub
    now = time.time()
    hub.push([{"node": "pi4", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "value": v, "unit": "°C", "ts": now - 86400 + i}
        for i, v in enumerate([19.0, 23.0])]}])
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 86400))
    # The window holds only the two readings pushed above: the cluster's own nodes push live
    # readings too, and a window ending at `now` would summarise those as well.
    assert hub.store.daily_summary(now - 86400 - 1, now - 86400 + 10, day) == 1

    jobs = wait_for(lambda: json.loads(get(cluster, "/api/jobs")[1])["nodes"].get("hub"), what="hub jobs")
    assert {j["name"] for j in jobs} == {"rollup", "retention", "daily-summary"}
    status, body = get(cluster, "/api/summaries")
    rows = json.loads(body)["summaries"]
    assert status == 200 and (rows[0]["min"], rows[0]["max"], rows[0]["n"]) == (19.0, 23.0, 2)
    assert get(cluster, "/api/summaries?day=yesterday")[0] == 400

    status, page = get(cluster, "/")
    assert status == 200 and "Scheduled jobs" in page and "daily-summary" in page
    assert f"Daily summary · {day}" in page and "19.0 °C" in page and "23.0 °C" in page
    status, fragment = get(cluster, "/fragment/jobs")
    assert status == 200 and "rollup" in fragment


@pytest.mark.parametrize("path", ["/api/jobs", "/api/summaries"])
def test_web_jobs_api_is_json(cluster, path):
    status, body = get(cluster, path)
    assert status == 200 and isinstance(json.loads(body), dict)
