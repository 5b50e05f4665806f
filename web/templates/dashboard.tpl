<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="dark">
<meta name="theme-color" content="#0d1117">
<title>Harvester · {{hub}}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
</head>
<body data-public="{{'1' if readable else '0'}}">
<header class="top">
  <a class="brand" href="/"><img src="/static/favicon.svg" alt="" width="24" height="24"><span>Harvester</span></a>
  <span id="status" class="status">{{status}}</span>
  <button id="operator-toggle" class="op-toggle" type="button" aria-expanded="false" aria-controls="operator-form">🔒 Operator</button>
</header>
<form id="operator-form" class="operator-form" hidden>
  <input type="text" name="username" autocomplete="username" value="operator" hidden>
  <label for="token">Operator token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" spellcheck="false"
         placeholder="printed by harvester demo; in tokens.json">
  <button type="submit">Unlock controls</button>
  <p id="operator-msg" class="muted">Kept in this tab only (session storage) and sent as an Authorization header.</p>
</form>
<div id="toast" class="toast" role="status" aria-live="polite" hidden></div>
<main>
  <section id="alerts" class="alerts" aria-label="Active alerts" data-sig="{{alerts_sig}}">
% include("alerts.tpl", alerts=alerts)
  </section>
  <section id="hubs" class="hubs" aria-label="Hubs" data-sig="{{hubs_sig}}"{{!'' if hubs else ' hidden'}}>
% include("hubs.tpl", hubs=hubs)
  </section>
  <section id="exports" class="exports" aria-label="Exports" data-sig="{{exports_sig}}"{{!'' if exports else ' hidden'}}>
% include("exports.tpl", exports=exports)
  </section>
  <section id="notify" class="notify" aria-label="Notifications" data-sig="{{notify_sig}}"{{!'' if notify else ' hidden'}}>
% include("notify.tpl", notify=notify)
  </section>
  <section id="nodes" class="nodes" aria-label="Nodes" data-sig="{{sig}}">
% include("cards.tpl", cards=cards, leds=leds, buzzer=buzzer)
  </section>
  <section id="history" class="panel" aria-label="History">
    <header class="panel-head">
      <h2>History</h2>
      <select id="series" aria-label="Series" data-sig="{{series_sig}}">
% for s in series:
        <option value="{{s['id']}}" data-unit="{{s['unit']}}" {{'selected' if s['id'] == chart_series else ''}}>{{s['label']}}</option>
% end
      </select>
      <div class="ranges" role="group" aria-label="Time range">
        <button type="button" data-range="3600" aria-pressed="true">1 h</button>
        <button type="button" data-range="86400" aria-pressed="false">24 h</button>
        <button type="button" data-range="604800" aria-pressed="false">7 d</button>
      </div>
    </header>
    <div id="chart" class="chart"></div>
    <p id="chart-note" class="muted chart-note"></p>
  </section>
  <section id="jobs" class="panel" aria-label="Scheduled jobs and daily summary" data-sig="{{jobs_sig}}">
% include("jobs.tpl", jobs=jobs, summary=summary, summary_day=summary_day)
  </section>
</main>
<footer class="foot muted">
  hub <strong>{{hub}}</strong> · <a href="/api/readings">JSON</a> · <a href="/metrics">metrics</a> · tap a value to chart it
</footer>
<script src="/static/chart.js"></script>
<script src="/static/app.js"></script>
</body>
</html>
