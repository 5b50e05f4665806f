% if notify:
<div class="panel">
<header class="panel-head"><h2>Notifications</h2><span class="muted" data-key="notify/heading">{{notify['heading']}}</span></header>
<div class="table-wrap">
<table class="notify">
  <thead><tr><th>Channel</th><th>State</th><th>Sent</th><th>Waiting</th><th class="op-col">Test</th></tr></thead>
  <tbody>
% for c in notify['channels']:
    <tr data-channel="{{c['name']}}">
      <td><strong>{{c['name']}}</strong><span class="kind muted">{{c['kind']}}</span></td>
      <td><span class="notify-state {{c['state_cls']}}" data-key="{{c['key']}}/state" title="{{c['state_title']}}">{{c['state_text']}}</span>
        <span class="error" data-key="{{c['key']}}/error"{{!'' if c['error'] else ' hidden'}}>{{c['error']}}</span></td>
      <td class="num"><span data-key="{{c['key']}}/sent">{{c['sent']}}</span>
        <span class="error" data-key="{{c['key']}}/failed"{{!'' if c['failed'] else ' hidden'}}>{{c['failed']}}</span></td>
      <td class="num"><span data-key="{{c['key']}}/waiting">{{c['waiting']}}</span>
        <span class="warning" data-key="{{c['key']}}/suppressed"{{!'' if c['suppressed'] else ' hidden'}}>{{c['suppressed']}}</span></td>
      <td class="op-col"><button type="button" class="op" data-notify-test="{{c['name']}}" title="send a test message on {{c['name']}} now" disabled>Send test</button>
        <span class="notify-outcome" data-notify-outcome="{{c['name']}}" role="status"></span></td>
    </tr>
% end
  </tbody>
</table>
</div>
</div>
% end
