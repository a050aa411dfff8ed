//! The dashboard: one static page that reads the API with the token the operator
//! pastes in (kept in the browser's session storage, never sent anywhere else).

/// The page served at `/`.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Wharf</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}
.live{color:#080}.failed{color:#b00}pre{background:#111;color:#ddd;padding:.8rem;max-height:20rem;overflow:auto}
</style></head><body>
<h1>Wharf</h1>
<p id="login"><label>API token <input id="token" type="password" size="50"></label> <button id="save">Use</button></p>
<div id="projects"></div>
<h2 id="logtitle" hidden>Events</h2><pre id="log" hidden></pre>
<script>
const el = (t, a = {}, ...kids) => { const e = document.createElement(t); Object.assign(e, a); e.append(...kids); return e; };
const token = () => sessionStorage.getItem('wharf-token') || '';
async function api(path) {
  const r = await fetch('/v1' + path, { headers: { Authorization: 'Bearer ' + token() } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.code + ': ' + body.error.message : r.status);
  return body;
}
async function follow(id) {
  const log = document.getElementById('log');
  log.hidden = false; document.getElementById('logtitle').hidden = false; log.textContent = '';
  const r = await fetch('/v1/deployments/' + id + '/events', { headers: { Authorization: 'Bearer ' + token() } });
  const reader = r.body.getReader(); const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read(); if (done) break;
    for (const line of dec.decode(value).split('\n')) {
      if (!line.startsWith('data:')) continue;
      const ev = JSON.parse(line.slice(5)); const k = ev.kind;
      log.textContent += (k.kind === 'state' ? k.from.state + ' -> ' + k.to.state : k.text) + '\n';
    }
  }
}
async function render() {
  const root = document.getElementById('projects'); root.textContent = '';
  try {
    for (const p of await api('/projects')) {
      root.append(el('h2', { textContent: p.name }));
      const t = el('table'); t.append(el('tr', {}, el('th', { textContent: 'service' }), el('th', { textContent: 'url' }), el('th', { textContent: 'last deployment' })));
      for (const s of await api('/projects/' + p.name + '/services')) {
        const deps = await api('/projects/' + p.name + '/services/' + s.name + '/deployments?limit=1');
        const d = deps[0]; const state = d ? d.state.state : 'never deployed';
        const link = el('a', { href: '#', textContent: state, className: state });
        if (d) link.onclick = (e) => { e.preventDefault(); follow(d.id); };
        t.append(el('tr', {}, el('td', { textContent: s.name }), el('td', {}, el('a', { href: s.url, textContent: s.url })), el('td', {}, link)));
      }
      root.append(t);
    }
  } catch (e) { root.append(el('p', { className: 'failed', textContent: String(e.message) })); }
}
document.getElementById('save').onclick = () => { sessionStorage.setItem('wharf-token', document.getElementById('token').value.trim()); render(); };
if (token()) render();
</script></body></html>
"#;
