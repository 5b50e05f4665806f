% if not alerts:
<p class="no-alerts">✓ No active alerts</p>
% end
% for a in alerts:
<div class="alert sev-{{a['severity']}}{{' acked' if a['acknowledged'] else ''}}" data-alert="{{a['id']}}">
  <span class="sev">{{a['severity']}}</span>
  <div class="what">
    <strong>{{a['message']}}</strong>
    <span class="muted">{{a['where']}} · {{a['plugin']}} · since <span data-key="alert/{{a['id']}}/since">{{a['since']}}</span></span>
  </div>
% if a['acknowledged']:
  <span class="acked-by">acknowledged{{' by ' + a['acked_by'] if a['acked_by'] else ''}}</span>
% else:
  <button type="button" class="op" data-ack="{{a['id']}}" disabled>Acknowledge</button>
% end
</div>
% end
