<header class="panel-head"><h2>Scheduled jobs</h2></header>
% if not jobs:
<p class="muted">No jobs reported yet.</p>
% else:
<div class="table-wrap">
<table class="jobs">
  <thead><tr><th>Node</th><th>Job</th><th>When</th><th>Next</th><th>Last</th><th>Result</th></tr></thead>
  <tbody>
% for j in jobs:
    <tr class="{{'failed' if j['failed'] else ''}}" data-job="{{j['node']}}/{{j['name']}}">
      <td>{{j['node']}}</td><td><strong>{{j['name']}}</strong></td><td class="muted">{{j['trigger']}}</td>
      <td>{{j['next']}}</td><td>{{j['last']}}{{' · ' + j['took'] if j['took'] else ''}}</td>
      <td class="outcome">{{j['outcome']}}</td>
    </tr>
% end
  </tbody>
</table>
</div>
% end
<header class="panel-head"><h2>Daily summary{{' · ' + summary_day if summary_day else ''}}</h2></header>
% if not summary:
<p class="muted">The first summary is written at 00:05 for the day before.</p>
% else:
<div class="table-wrap">
<table class="summary">
  <thead><tr><th>Series</th><th>Min</th><th>Mean</th><th>Max</th><th>Readings</th><th>Alerts</th></tr></thead>
  <tbody>
% for r in summary:
    <tr><td>{{r['where']}}</td><td>{{r['min']}}</td><td>{{r['mean']}}</td><td>{{r['max']}}</td><td>{{r['n']}}</td>
      <td class="{{'failed' if r['alerts'] else ''}}">{{r['alerts']}}</td></tr>
% end
  </tbody>
</table>
</div>
% end
