"""The hub's read API and page on a real hub + spoke: readings, nodes, history, alerts, the
server-rendered dashboard and its live-update JSON, and read access when reads are private."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.hub.state import Hub
from actors.hub.store import Store
from actors.hub.tokens import Tokens
from actors.node.config import load_config
from tests.helpers import wait_for, write_node_config
from tests.integration.web_client import Web, serve
from web.app import create_app


@pytest.fixture
def web(cluster):
    return Web(cluster.web_port)


def test_web_api_readings_and_nodes(cluster, pi4, web):
    status, body = web.get("/api/readings")
    assert status == 200
    nodes = {n["name"]: n for n in body["nodes"]}
    assert nodes["pi4"]["sensors"]["dht22"]["temperature"]["unit"] == "°C"
    status, listing = web.get("/api/nodes")
    assert status == 200 and {n["name"] for n in listing} == {"hub", "pi4"}
    pi4_row = next(n for n in listing if n["name"] == "pi4")
    assert "sensors" not in pi4_row and pi4_row["role"] == "spoke" and pi4_row["online"]
    # the hub learns the spoke's outbox from its probe of the spoke's agent
    wait_for(lambda: isinstance((cluster.node_snapshot("pi4").get("outbox") or {}).get("pending_batches"), int),
             what="outbox stats from the probe")


def test_web_api_history_and_its_404s_and_400s(cluster, pi4, web):
    now = time.time()
    status, body = wait_for(lambda: (r := web.get(f"/api/history?node=pi4&sensor=dht22&quantity=temperature"
                                                   f"&since={now - 600}")) and r[1].get("points") and r,
                            what="history points")
    assert status == 200 and body["step"] == "raw" and body["columns"] == ["ts", "value"]
    assert all(now - 600 <= p[0] <= time.time() + 1 for p in body["points"])
    for query, status_, message in [
        ("node=nope&sensor=dht22&quantity=temperature", 404, "unknown node 'nope'"),
        ("node=pi4&sensor=bme999&quantity=temperature", 404, "no sensor 'bme999'"),
        ("node=pi4&sensor=dht22&quantity=pressure", 404, "no quantity 'pressure'"),
        ("node=pi4&sensor=dht22", 400, "required"),
        ("node=pi4&sensor=dht22&quantity=temperature&since=abc", 400, "must be a number"),
        ("node=pi4&sensor=dht22&quantity=temperature&since=10&until=5", 400, "must be before"),
        ("node=pi4&sensor=dht22&quantity=temperature&step=5m", 400, "step must be"),
    ]:
        got, answer = web.get(f"/api/history?{query}")
        assert (got, message in answer["error"]) == (status_, True), (query, answer)


def test_web_api_alerts_lists_active_and_all(cluster, web):
    now = time.time()
    cluster.hub.role.hub.record_alerts("hub", [
        {"plugin": "cpu_temperature", "version": "1.0", "alert": "cpu-hot", "state": "raised", "severity": "critical",
         "message": "CPU at 80 °C", "node": "hub", "sensor": "monitor", "quantity": "cpu_temperature",
         "value": 80.0, "ts": now}])
    status, body = web.get("/api/alerts")
    assert status == 200 and [a["alert"] for a in body["alerts"]] == ["cpu-hot"]
    assert body["alerts"][0]["active"] and not body["alerts"][0]["acknowledged"]
    assert web.get("/api/alerts?state=all")[0] == 200
    status, body = web.get("/api/alerts?state=maybe")
    assert status == 400 and "state must be" in body["error"]


def test_web_page_is_server_rendered_with_local_assets_only(cluster, pi4, web):
    status, headers, html = web.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    # one card per node with its badges, values formatted by the server
    assert 'data-node="pi4"' in html and 'data-node="hub"' in html
    assert ">Spoke<" in html and ">Hub<" in html and ">WASM<" in html
    assert re.search(r'data-key="pi4/dht22/temperature"[^>]*>\s*<span class="label">Temperature</span>\s*'
                     r'<span class="value"[^>]*>-?\d+\.\d °C<', html)
    assert 'data-buzzer="pi4"' in html and 'data-leds="pi4"' in html and html.count('class="led') == 11
    # every asset from this server, none from a CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in {a for a in assets if a.startswith("/static/")}:
        assert web.request("GET", asset)[0] == 200, asset


def test_web_dashboard_update_and_fragments(cluster, pi4, web):
    update = wait_for(lambda: (d := web.get("/api/dashboard")[1]) and d["leds"].get("pi4", {}).get("known") and d,
                      what="LED state polled from pi4")
    assert update["nodes"]["pi4"]["online"] and update["status"] == "2/2 nodes online"
    assert update["values"]["pi4/dht22/temperature"]["text"].endswith("°C")
    assert update["values"]["pi4/link/hub"]["text"].startswith("🟢")
    assert len(update["leds"]["pi4"]["pixels"]) == 11 and update["buzzer"]["pi4"]["state"] == "idle"
    # the series list travels apart from the update: the update names its signature
    status, listed = web.get("/api/series")
    assert status == 200 and "series" not in update and listed["sig"] == update["series_sig"]
    assert {"id": "pi4/dht22/temperature", "label": "pi4 · dht22 · Temperature", "unit": "°C"} in listed["series"]
    status, headers, html = web.request("GET", "/")
    assert f'data-sig="{update["series_sig"]}"' in html and 'value="pi4/dht22/temperature"' in html
    status, headers, html = web.request("GET", "/fragment/nodes")
    assert status == 200 and headers["x-harvester-sig"] == update["sig"] and 'data-node="pi4"' in html
    status, body = web.get("/fragment/everything")
    assert status == 404 and "no fragment" in body["error"]
    status, actuators = web.get("/api/actuators")
    assert status == 200 and actuators["nodes"]["pi4"]["leds"]["state"]["count"] == 11
    assert "hub" not in actuators["nodes"]  # the test hub has no LEDs or buzzer


def test_web_healthz_and_unknown_routes(cluster, web):
    assert web.get("/healthz") == (200, {"ok": True, "node": "hub", "nodes": 1})
    status, body = web.get("/api/nope")
    assert status == 404 and "no such page or endpoint: GET /api/nope" in body["error"]


@pytest.fixture
def private_app(tmp_path):
    hub = Hub(Store(tmp_path / "hub.sqlite3"))
    hub.hello({"node": "pi4", "role": "spoke", "profile": "native", "push_interval": 5})
    tokens = Tokens(tmp_path / "tokens.json")
    node_token = tokens.ensure_node("pi4")
    with serve(create_app(hub, tokens, public_read=False)) as port:
        yield Web(port), tokens.data()["operator"], node_token
    hub.store.close()


@pytest.mark.parametrize("path", ["/api/readings", "/api/nodes", "/api/alerts", "/api/dashboard", "/api/series",
                                  "/api/actuators",
                                  "/fragment/nodes", "/metrics",
                                  "/api/history?node=pi4&sensor=dht22&quantity=temperature"])
def test_web_private_reads_need_the_operator_token(private_app, path):
    web, operator, node_token = private_app
    status, body = web.get(path)
    assert status == 401 and "operator token" in body["error"]
    assert web.get(path, token="wrong")[0] == 403
    assert web.get(path, token=node_token)[0] == 403  # a node token pushes; it does not read
    assert web.get(path, token=operator)[0] in (200, 404)  # 404: the history series does not exist


def test_web_private_page_and_health_stay_reachable(private_app):
    web, operator, _ = private_app
    status, html = web.get("/")
    assert status == 200 and "needs the operator token" in html and 'data-node="pi4"' not in html
    assert 'data-node="pi4"' in web.get("/", token=operator)[1]
    assert web.get("/healthz")[0] == 200
    assert web.get("/api/whoami") == (200, {"role": "anonymous", "public_read": False})
    assert web.get("/api/whoami", token=operator)[1]["role"] == "operator"
    assert web.get("/api/whoami", token="nope")[0] == 403


def test_web_public_read_is_a_config_key(tmp_path: Path):
    path = write_node_config(tmp_path / "hub.toml", "hub", "hub", 9090, web_port=8080)
    assert load_config(path).web.public_read is True
    assert load_config(path, ["web.public_read=false"]).web.public_read is False


@pytest.mark.parametrize("path, status, message", [
    ("/api/alerts?state=pi4%F0%9F%94%A5", 400, "state must be active or all, got 'pi4🔥'"),
    ("/api/history?node=pi4%F0%9F%94%A5&sensor=dht22&quantity=temperature", 404, "unknown node 'pi4🔥'"),
    ("/api/history?node=hub&sensor=caf%C3%A9&quantity=temperature", 404, "node 'hub' has no sensor 'café'"),
    ("/api/history?node=hub&sensor=monitor&quantity=cpu_load&step=%E2%9C%93", 400,
     "step must be raw, 1m, 1h or auto, got '✓'"),
    ("/api/history?node=hub&sensor=monitor&quantity=cpu_load&since=%C2%BD", 400,
     "query parameter 'since' must be a number (epoch seconds), got '½'"),
    ("/api/summaries?day=%E2%91%A0", 400, "day must be a date written YYYY-MM-DD, got '①'"),
    ("/api/alerts?state=%FF%FE", 400, "query parameter 'state' is not UTF-8"),
    ("/api/history?node=%C3&sensor=a&quantity=b", 400, "query parameter 'node' is not UTF-8"),
])
def test_web_api_query_values_are_read_as_utf8(cluster, web, path, status, message):
    got, body = web.get(path)
    assert (got, message in body["error"]) == (status, True), body
    assert "\n" not in body["error"]


@pytest.mark.parametrize("day, message", [
    ("2024-13-45", "day '2024-13-45' is not a calendar date (month must be in 1..12); expected YYYY-MM-DD"),
    ("2023-02-29", "day '2023-02-29' is not a calendar date (day is out of range for month); expected YYYY-MM-DD"),
    ("0000-01-01", "day '0000-01-01' is not a calendar date (year 0 is out of range); expected YYYY-MM-DD"),
    ("20240101", "day must be a date written YYYY-MM-DD, got '20240101'"),
    ("%D9%A2%D9%A0%D9%A2%D9%A4-01-01", "day must be a date written YYYY-MM-DD, got '٢٠٢٤-01-01'"),
])
def test_web_api_summaries_day_must_be_a_calendar_date(cluster, web, day, message):
    status, body = web.get(f"/api/summaries?day={day}")
    assert (status, body) == (400, {"error": message})
    assert web.get("/api/summaries?day=2024-02-29") == (200, {"day": "2024-02-29", "summaries": []})


# property-based: any query values, percent-encoded UTF-8 or raw bytes, on every read route:
# a 2xx, or a 4xx with a one-line JSON error; reads never change the hub.
QUERY_VALUE = (st.text(max_size=30).map(lambda t: quote(t, safe=""))
               | st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe=""))
               | st.sampled_from(["1e308", "-1e308", "nan", "inf", "9" * 400, "2024-13-45", "2024-02-29",
                                  "raw", "1m", "1h", "auto", "all", "active", "hub", "monitor", "cpu_load"]))
ROUTES = {"/api/history": ["node", "sensor", "quantity", "since", "until", "step"], "/api/alerts": ["state"],
          "/api/summaries": ["day"], "/api/readings": [], "/api/nodes": [], "/healthz": []}


@st.composite
def api_paths(draw) -> str:
    route = draw(st.sampled_from(sorted(ROUTES)))
    names = draw(st.lists(st.sampled_from(ROUTES[route] or ["x"]), max_size=6))
    query = "&".join(f"{n}={draw(QUERY_VALUE)}" for n in names)
    return f"{route}?{query}" if query else route


def test_web_api_fuzz_query_params_only_2xx_or_a_json_4xx(cluster, web):
    hub = cluster.hub.role.hub
    statuses: dict[int, int] = {}

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(path=api_paths())
    def check(path: str) -> None:
        before = (hub.node_names(), hub.duplicates, hub.rejected)
        status, headers, body = web.request("GET", path)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500 and headers["content-type"] == "application/json", (path, status, body)
        if status >= 400:
            assert status in (400, 404) and isinstance(body["error"], str), (path, body)
            assert "\n" not in body["error"] and len(body["error"]) < 400, (path, body)
        assert (hub.node_names(), hub.duplicates, hub.rejected) == before

    check()
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > 50, statuses
