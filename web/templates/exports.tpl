% if exports:
<div class="panel">
<header class="panel-head"><h2>Exports</h2><span class="muted" data-key="exports/heading">{{exports['heading']}}</span></header>
<div class="table-wrap">
<table class="exports">
  <thead><tr><th>Target</th><th>State</th><th>Sent</th><th>Waiting</th></tr></thead>
  <tbody>
% for e in exports['targets']:
    <tr data-export="{{e['name']}}">
      <td><strong>{{e['name']}}</strong><span class="url muted">{{e['url']}}</span></td>
      <td><span class="export-state {{e['state_cls']}}" data-key="{{e['key']}}/state" title="{{e['state_title']}}">{{e['state_text']}}</span>
        <span class="error" data-key="{{e['key']}}/error"{{!'' if e['error'] else ' hidden'}}>{{e['error']}}</span></td>
      <td class="num" data-key="{{e['key']}}/sent">{{e['sent']}}</td>
      <td><span data-key="{{e['key']}}/waiting">{{e['waiting']}}</span>
        <span class="warning" data-key="{{e['key']}}/lost"{{!'' if e['lost'] else ' hidden'}}>{{e['lost']}}</span></td>
    </tr>
% end
  </tbody>
</table>
</div>
</div>
% end
