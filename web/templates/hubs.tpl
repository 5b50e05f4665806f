% if hubs:
<div class="panel">
<header class="panel-head"><h2>Hubs</h2><span class="muted">{{hubs['heading']}}</span></header>
<div class="table-wrap">
<table class="hubs">
  <thead><tr><th>Hub</th><th>Role</th><th>State</th><th>Copy</th></tr></thead>
  <tbody>
% for h in hubs['hubs']:
    <tr class="{{'down' if not h['online'] else ''}}" data-hub="{{h['name']}}">
      <td title="{{h['address']}}"><strong>{{h['name']}}</strong>{{' · this hub' if h['self'] else ''}}</td>
      <td class="role-{{h['role']}}">{{h['role']}}</td>
      <td class="{{'ok' if h['online'] else 'bad'}}" title="{{h['error']}}">{{h['state']}}</td>
      <td data-key="{{h['key']}}">{{h['lag']}}</td>
    </tr>
% end
  </tbody>
</table>
</div>
% if hubs['warning']:
<p class="warning" data-quorum>{{hubs['warning']}}</p>
% end
</div>
% end
