"""The dashboard page (server-rendered), its fragments and live-update JSON, and the static assets.

Every asset is served from web/static; nothing comes from a CDN, so the page works on a
fleet's LAN without Internet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bottle

from web.context import WebContext
from web.http import ApiError, RawJsonBytes, api, error_response

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = [str(HERE / "templates")]
# Scripts and styles only from this origin; no inline script, so injected markup cannot run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
FRAGMENTS = {"nodes": ("cards.tpl", "sig"), "alerts": ("alerts.tpl", "alerts_sig"), "jobs": ("jobs.tpl", "jobs_sig"),
             "hubs": ("hubs.tpl", "hubs_sig"), "exports": ("exports.tpl", "exports_sig"),
             "notify": ("notify.tpl", "notify_sig")}


def default_series(series: list[dict[str, Any]]) -> str:
    """The series the chart opens on: a room temperature if there is one."""
    ids = [s["id"] for s in series]
    for suffix in ("/dht22/temperature", "/temperature", "/cpu_temperature"):
        for sid in ids:
            if sid.endswith(suffix) and not sid.startswith("hub/"):
                return sid
    return ids[0] if ids else ""


def _html(body: str) -> str:
    bottle.response.content_type = "text/html; charset=utf-8"
    bottle.response.set_header("Cache-Control", "no-store")
    bottle.response.set_header("Content-Security-Policy", CSP)
    return body


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add the page, its fragments, /api/dashboard and /static to the app."""

    @app.get("/")
    def index() -> str:
        readable = ctx.auth.may_read()
        if readable:
            model = ctx.dashboard.model()
        else:  # the page's script asks for the operator token, then loads the cards with it
            model = {"status": "this dashboard needs the operator token", "cards": [], "alerts": [], "series": [],
                     "series_sig": "", "leds": {}, "buzzer": {}, "sig": "", "alerts_sig": "", "jobs": [], "summary": [],
                     "summary_day": None, "jobs_sig": "", "hubs": None, "hubs_sig": "", "exports": None,
                     "exports_sig": "", "notify": None, "notify_sig": ""}
        return _html(bottle.template("dashboard.tpl", template_lookup=TEMPLATES, hub=ctx.node, readable=readable,
                                     chart_series=default_series(model["series"]), **model))

    @app.get("/fragment/<part>")
    def fragment(part: str) -> str:
        try:
            ctx.auth.require_reader()
            if part not in FRAGMENTS:
                raise ApiError(404, f"no fragment {part!r}; known: {', '.join(FRAGMENTS)}")
        except ApiError as exc:
            return error_response(exc)
        template, sig = FRAGMENTS[part]
        model = ctx.dashboard.model()
        bottle.response.set_header("X-Harvester-Sig", model[sig])
        return _html(bottle.template(template, template_lookup=TEMPLATES, **model))

    @app.get("/api/dashboard")
    @api
    def dashboard() -> RawJsonBytes:
        ctx.auth.require_reader()
        return RawJsonBytes(ctx.dashboard.live.get_bytes())

    @app.get("/api/series")
    @api
    def series() -> RawJsonBytes:
        """Every chartable series, and the signature the dashboard's update carries for the list."""
        ctx.auth.require_reader()
        return RawJsonBytes(ctx.dashboard.series_bytes())

    @app.get("/static/<path:path>")
    def static(path: str) -> Any:
        return bottle.static_file(path, root=str(STATIC))
