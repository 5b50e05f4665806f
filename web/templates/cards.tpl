% if not cards:
<p class="empty muted">No nodes yet.</p>
% end
% for c in cards:
<article class="card {{'online' if c['online'] else 'offline'}}" data-node="{{c['name']}}">
  <header class="card-head">
    <h2>{{c['name']}}</h2>
    <span class="badge role-{{c['role']}}">{{c['role_label']}}</span>
    <span class="badge profile-{{c['profile']}}">{{c['profile_label']}}</span>
    <span class="pill" data-online>{{'online' if c['online'] else 'offline'}}</span>
  </header>
  <p class="seen"><span data-status>{{c['status']}}</span> <span class="warning" data-warning>{{c['warning']}}</span></p>
% for s in c['sections']:
  <section class="group">
    <h3>{{s['title']}}</h3>
% for r in s['rows']:
    <div class="row {{r['cls']}}" data-key="{{r['key']}}" data-series="{{r['series'] or ''}}">
      <span class="label">{{r['label']}}</span>
      <span class="value" title="{{r['title']}}">{{r['text']}}</span><span class="tag">{{r['tag']}}</span>
% if r['bar'] is not None:
      <svg class="bar" viewBox="0 0 100 4" preserveAspectRatio="none" aria-hidden="true"><rect class="track" width="100" height="4" rx="2"/><rect class="fill" width="{{round(r['bar'] * 100, 1)}}" height="4" rx="2"/></svg>
% end
    </div>
% end
  </section>
% end
% if c['leds']:
% strip = leds.get(c['name']) or {'known': False, 'pixels': [None] * 11, 'text': 'unknown'}
  <section class="group actuator" data-leds="{{c['name']}}">
    <h3>LED strip <span class="muted" data-leds-text>{{strip['text']}}</span></h3>
    <svg class="strip{{'' if strip['known'] else ' unknown'}}" viewBox="0 0 {{len(strip['pixels']) * 26}} 26" role="img" aria-label="LED strip of {{c['name']}}">
% for i, colour in enumerate(strip['pixels']):
      <circle class="led{{' lit' if colour and colour != '#000000' else ''}}" data-i="{{i}}" cx="{{13 + 26 * i}}" cy="13" r="10" fill="{{colour if colour and colour != '#000000' else '#1e252e'}}"><title>LED {{i}}</title></circle>
% end
    </svg>
    <div class="controls">
      <span class="muted hint">paint</span>
% for name in ('red', 'amber', 'green', 'blue', 'white', 'off'):
      <button type="button" class="op swatch sw-{{name}}" data-colour="{{name}}" aria-pressed="{{'true' if name == 'red' else 'false'}}" title="paint {{name}}" disabled><span class="sr">{{name}}</span></button>
% end
      <button type="button" class="op" data-led-action="clear" disabled>Clear</button>
    </div>
  </section>
% end
% if c['buzzer']:
% b = buzzer.get(c['name']) or {'known': False, 'state': 'unknown', 'text': 'unknown', 'detail': ''}
  <section class="group actuator" data-buzzer="{{c['name']}}">
    <h3>Buzzer</h3>
    <div class="row">
      <span class="label">State</span>
      <span class="value buzzer-{{b['state']}}" data-buzzer-text>{{b['text']}}</span>
    </div>
    <p class="detail muted" data-buzzer-detail>{{b['detail']}}</p>
    <div class="controls">
      <button type="button" class="op" data-buzz="beep" disabled>Beep</button>
      <button type="button" class="op" data-buzz="on" disabled>On</button>
      <button type="button" class="op" data-buzz="off" disabled>Off</button>
      <button type="button" class="op" data-buzz="silence" disabled>Silence</button>
    </div>
  </section>
% end
</article>
% end
