// The Wharf dashboard: reads the API with the token the operator pastes in.
// The token lives in this tab's sessionStorage and only ever travels in an
// Authorization header (never in a URL). Every piece of data reaches the page as text
// (textContent, text nodes): no HTML is ever built from data.
'use strict';

const TOKEN_KEY = 'wharf-token';
const ACTIVE = new Set(['queued', 'fetching', 'building', 'releasing', 'starting', 'health_checking', 'routing']);
const POLL_IDLE_MS = 3000;
const POLL_BUSY_MS = 1000;
// Volumes (sizes are measured by the runtime), backups and databases change slowly:
// read at most this often, and at once after the page's own backups and restores.
const DATA_EVERY_MS = 15000;
const MAX_LOG_LINES = 5000;

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An element with properties (`class`, `data-*`, `title`, ...) and children (nodes or text). */
function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() { return this.code + ': ' + this.message; }
}

/** Calls the API; throws an ApiError carrying the server's stable code and message. */
async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Authorization: 'Bearer ' + token() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch('/v1' + path, {
      method, headers, signal, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (signal && signal.aborted) throw e;
    throw new ApiError(0, 'unreachable', 'the Wharf server did not answer (' + e.message + ')');
  }
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON: reported below */ }
  if (!r.ok) {
    const err = data && data.error;
    throw new ApiError(r.status, err ? err.code : 'http_' + r.status,
      err ? err.message : 'HTTP ' + r.status + ' ' + r.statusText);
  }
  return data;
}

// ---------------------------------------------------------------- formatting

const pad = (n) => String(n).padStart(2, '0');
function clock(ms) {
  const d = new Date(ms);
  return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
}
function when(ms) {
  const d = new Date(ms);
  const day = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate());
  return day + ' ' + clock(ms);
}
function took(ms) {
  if (ms < 1000) return ms + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + ' s';
  return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
}
const short = (s, n = 12) => (s && s.length > n ? s.slice(0, n) + '\u2026' : s || '');
const stateName = (st) => st.state;
const isActive = (st) => ACTIVE.has(st.state);
function stateText(st) {
  switch (st.state) {
    case 'failed': return 'failed at ' + st.step + ': ' + st.reason;
    case 'skipped': return 'skipped: ' + st.reason;
    default: return st.state.replace('_', ' ');
  }
}
function badge(st, extra) {
  return el('span', { class: 'badge s-' + stateName(st), title: stateText(st) }, extra || stateName(st).replace('_', ' '));
}
function basename(p) { return String(p).split('/').pop(); }
/** An image reference short enough for a table cell: a path's last two parts, else its ends. */
function imageText(img) {
  if (img.startsWith('/')) return '\u2026/' + img.split('/').filter(Boolean).slice(-2).join('/');
  return img.length > 36 ? img.slice(0, 14) + '\u2026' + img.slice(-20) : img;
}
function digest(rev) { return rev ? short(rev.replace(/^sha256:/, ''), 12) : ''; }

/** Where a deployment's code came from, for people. */
function sourceText(d, releaseNo) {
  if (d.trigger.kind === 'rollback') {
    const n = releaseNo.get(d.trigger.release);
    return 'rollback to ' + (n ? '#' + n : 'an earlier release');
  }
  const s = d.source;
  switch (s.kind) {
    case 'archive': return 'upload' + (d.revision ? ' ' + digest(d.revision) : ' ' + short(basename(s.path), 16));
    case 'dir': return 'folder ' + basename(s.path);
    case 'image': return 'image ' + s.image;
    case 'git': {
      const ref = s.reference.kind === 'default' ? '' : '@' + s.reference.name;
      return 'git ' + s.url + ref + (d.revision ? ' (' + short(d.revision, 8) + ')' : '');
    }
    default: return s.kind;
  }
}
function triggerText(t) {
  switch (t.kind) {
    case 'manual': return 'manual';
    case 'webhook': return t.provider === 'api' ? 'API (' + t.reference + ')' : t.provider + ' ' + t.reference;
    case 'cascade': return 'dependency changed';
    case 'rollback': return 'rollback';
    default: return t.kind;
  }
}

// ---------------------------------------------------------------- banners

function showError(e, what) {
  const box = $('error');
  box.textContent = '';
  box.append(el('strong', {}, what ? what + ' failed: ' : 'Error: '), String(e));
  if (e instanceof ApiError && e.status === 401) {
    box.append(' \u2014 sign in again with a valid token.');
  }
  box.hidden = false;
}
function clearError() { $('error').hidden = true; $('error').textContent = ''; }
let noticeTimer = 0;
function notice(text) {
  const box = $('notice');
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

// ---------------------------------------------------------------- projects and services

/** Cards already on the page, by "project/service", with the data they were drawn from. */
const cards = new Map();
const sections = new Map();
let refreshing = false;
let timer = 0;
let followedOnce = false;
/** Per project: when its data was read, and what it was. */
const dataRead = new Map();
/** Reads every project's data at the next refresh (after a backup or restore here). */
function dataChanged() { dataRead.clear(); }

/** A project's volumes, backups and databases, read again when older than DATA_EVERY_MS. */
async function projectData(base, name) {
  const had = dataRead.get(name);
  if (had && Date.now() - had.at < DATA_EVERY_MS) return had;
  // A runtime that cannot list volumes leaves the rest working.
  const [volumes, backups, databases] = await Promise.all([
    api(base + '/volumes').catch((e) => ({ error: String(e) })),
    api(base + '/backups').catch(() => []),
    api(base + '/databases').catch(() => []),
  ]);
  const got = { at: Date.now(), volumes, backups, databases };
  dataRead.set(name, got);
  return got;
}

/** A service's API path: under its environment when it has one. */
function servicePath(project, env, name) {
  return '/projects/' + enc(project) + (env ? '/environments/' + enc(env) : '') + '/services/' + enc(name);
}

async function loadService(project, s, envs) {
  const env = s.environment ? envs.get(s.environment) : null;
  const environment = env ? { name: env.name, kind: env.kind } : null;
  const base = servicePath(project.name, environment && environment.name, s.name);
  // The runtime's view of the live instance; a runtime that cannot answer leaves the
  // rest of the page working and says so on this service.
  const health = s.live_deployment
    ? api(base + '/status').then((r) => r.status, (e) => ({ kind: 'unknown', reason: String(e) }))
    : Promise.resolve(null);
  const [deployments, releases, instance] = await Promise.all([
    api(base + '/deployments?limit=10'),
    api(base + '/releases'),
    health,
  ]);
  let live = deployments.find((d) => d.id === s.live_deployment) || null;
  if (s.live_deployment && !live) live = await api('/deployments/' + enc(s.live_deployment));
  return { project: project.name, environment, base, service: s, deployments, releases, live, instance };
}

/** One pass over the API; redraws only the cards whose data changed. */
async function refresh() {
  if (refreshing || !token()) return;
  refreshing = true;
  clearTimeout(timer);
  let busy = false;
  try {
    const projects = await api('/projects');
    const data = [];
    for (const p of projects) {
      const base = '/projects/' + enc(p.name);
      const [services, environments, { volumes, backups, databases }] = await Promise.all([
        api(base + '/services'),
        api(base + '/environments'),
        projectData(base, p.name),
      ]);
      const envs = new Map(environments.map((e) => [e.id, e]));
      data.push({
        project: p,
        services: await Promise.all(services.map((s) => loadService(p, s, envs))),
        volumes, backups, databases,
      });
    }
    busy = data.some((p) => p.services.some((s) => s.deployments.some((d) => isActive(d.state))));
    draw(data);
    clearError();
    $('updated').textContent = 'updated ' + clock(Date.now());
    if (!followedOnce) followLatest(data);
  } catch (e) {
    showError(e, 'Loading projects');
    if (e instanceof ApiError && e.status === 401) { signedOut(); refreshing = false; return; }
  }
  refreshing = false;
  timer = setTimeout(refresh, busy ? POLL_BUSY_MS : POLL_IDLE_MS);
}

function draw(data) {
  const root = $('projects');
  if (!data.length) {
    root.textContent = '';
    root.append(el('p', { class: 'empty' }, 'No projects yet. Deploy one with ', el('code', {}, 'wharf deploy'), '.'));
    sections.clear();
    cards.clear();
    return;
  }
  root.querySelectorAll(':scope > .empty').forEach((n) => n.remove());
  const keepSections = new Set();
  const keepCards = new Set();
  data.forEach(({ project, services, volumes, backups, databases }, i) => {
    keepSections.add(project.name);
    let sec = sections.get(project.name);
    if (!sec) {
      sec = el('section', { class: 'project', 'data-project': project.name },
        el('h2', {}, el('span', { class: 'muted' }, 'project '), project.name));
      sections.set(project.name, sec);
    }
    if (root.children[i] !== sec) root.insertBefore(sec, root.children[i] || null);
    if (!services.length) {
      if (!sec.querySelector('.empty')) sec.append(el('p', { class: 'empty' }, 'No services.'));
    } else {
      sec.querySelectorAll(':scope > .empty').forEach((n) => n.remove());
    }
    services.forEach((sd, j) => {
      const key = project.name + '/' + (sd.environment ? sd.environment.name + '/' : '') + sd.service.name;
      keepCards.add(key);
      const sig = JSON.stringify(sd);
      let c = cards.get(key);
      if (!c || c.sig !== sig) {
        const card = serviceCard(key, sd);
        if (c) c.node.replaceWith(card);
        c = { node: card, sig };
        cards.set(key, c);
      }
      const at = sec.children[j + 1] || null; // after the heading
      if (at !== c.node) sec.insertBefore(c.node, at);
    });
    // The project's data (volumes, their backups) after its services.
    const hasData = (volumes && (volumes.error || volumes.length)) || (databases && databases.length);
    if (hasData) {
      const key = 'data:' + project.name;
      keepCards.add(key);
      // Without the ever-growing age_seconds: a card redraws when what it shows changes.
      const sig = JSON.stringify([volumes, databases, (backups || []).map((b) => [b.id, b.state, b.error, b.size_bytes, ageText(b.created_at)])]);
      let c = cards.get(key);
      if (!c || c.sig !== sig) {
        const card = dataCard(project.name, volumes, backups, databases || []);
        if (c) c.node.replaceWith(card);
        c = { node: card, sig };
        cards.set(key, c);
      }
      const at = sec.children[services.length + 1] || null;
      if (at !== c.node) sec.insertBefore(c.node, at);
    }
  });
  for (const [k, c] of cards) if (!keepCards.has(k)) { c.node.remove(); cards.delete(k); }
  for (const [k, s] of sections) if (!keepSections.has(k)) { s.remove(); sections.delete(k); }
}

/** How long a deployment took: to going live when it made a release, else to its end. */
function tookText(d, release) {
  if (release) return took(release.created_at - d.created_at);
  if (isActive(d.state)) return '\u2026';
  return took(d.updated_at - d.created_at);
}

/** What the service is doing now: deploying, live (which release), failed, never deployed. */
function status(sd, releaseNo, liveRelease) {
  const latest = sd.deployments[0];
  if (latest && isActive(latest.state)) {
    const serving = liveRelease ? ' \u00b7 release #' + liveRelease.number + ' serves meanwhile' : '';
    return { cls: 'deploying', word: 'deploying', detail: stateText(latest.state) + ' \u00b7 ' + sourceText(latest, releaseNo) + serving };
  }
  if (sd.live) {
    const parts = [];
    if (liveRelease) parts.push('release #' + liveRelease.number);
    if (sd.live.trigger.kind === 'rollback') parts.push(sourceText(sd.live, releaseNo));
    const h = sd.instance;
    let cls = 'live';
    let word = 'live';
    if (h) {
      switch (h.kind) {
        case 'healthy': parts.push('healthy'); break;
        case 'running': case 'starting': parts.push(h.kind); break;
        case 'unhealthy': cls = 'warn'; word = 'unhealthy'; parts.push(h.reason); break;
        case 'exited':
          cls = 'down'; word = 'down';
          parts.push('instance exited' + (h.code === null || h.code === undefined ? '' : ' (code ' + h.code + ')') + (h.reason ? ': ' + h.reason : ''));
          break;
        case 'missing': cls = 'down'; word = 'down'; parts.push(h.reason); break;
        default: cls = 'warn'; parts.push('status unknown: ' + h.reason);
      }
    }
    if (latest && latest.id !== sd.live.id && latest.state.state === 'failed') {
      parts.push('last deploy ' + stateText(latest.state));
    }
    return { cls, word, detail: parts.join(' \u00b7 ') };
  }
  if (latest) return { cls: 'down', word: stateName(latest.state).replace('_', ' '), detail: stateText(latest.state) };
  return { cls: 'idle', word: 'not deployed', detail: 'no deployment yet' };
}

function serviceCard(key, sd) {
  const s = sd.service;
  const env = sd.environment;
  // How the service is named in messages: with its environment when it has one.
  const label = env ? s.name + ' (' + env.name + ')' : s.name;
  const envTag = !env ? null : el('span', { class: 'env', title: env.kind.kind === 'preview'
    ? 'preview of pull request #' + env.kind.number + ' (' + env.kind.branch + ')'
    : 'environment ' + env.name }, env.name);
  const releaseNo = new Map(sd.releases.map((r) => [r.id, r.number]));
  const byId = new Map(sd.releases.map((r) => [r.id, r]));
  const byDeployment = new Map(sd.releases.map((r) => [r.deployment, r]));
  const liveRelease = sd.live && sd.live.release ? sd.releases.find((r) => r.id === sd.live.release) : null;
  const st = status(sd, releaseNo, liveRelease);
  const url = s.routed !== false && /^https?:\/\//.test(s.url || '') ? el('a', { href: s.url, target: '_blank', rel: 'noopener noreferrer', class: 'url' }, s.url) : null;

  const head = el('div', { class: 'card-head' },
    el('h3', {}, s.name),
    envTag,
    el('span', { class: 'status st-' + st.cls, 'data-status': st.cls }, st.word),
    el('span', { class: 'status-detail' }, st.detail),
    url,
    sd.live ? el('button', {
      type: 'button', class: 'quiet app-logs', title: 'Follow the live app\u2019s own output',
      onclick: () => followApp(sd.base, label),
    }, 'app logs') : null,
    sd.deployments.length ? redeployButton(sd.base, label) : null);

  const deps = el('table', { class: 'deployments' },
    el('thead', {}, el('tr', {}, ...['state', 'source', 'trigger', 'started', 'took', ''].map((h) => el('th', {}, h)))));
  const dbody = el('tbody');
  for (const d of sd.deployments) {
    const row = el('tr', { 'data-deployment': d.id, class: d.id === (sd.live && sd.live.id) ? 'is-live' : '' },
      el('td', {}, badge(d.state)),
      el('td', { class: 'src', title: d.state.reason || '' }, sourceText(d, releaseNo)),
      el('td', {}, triggerText(d.trigger)),
      el('td', { class: 'time', title: when(d.created_at) }, when(d.created_at)),
      el('td', { class: 'time', title: 'time from request to live (or to its end)' }, tookText(d, byDeployment.get(d.id))),
      el('td', { class: 'act' }, isActive(d.state) ? cancelButton(d.id) : null, el('button', {
        type: 'button', class: 'quiet events', title: 'Show this deployment\u2019s events',
        onclick: () => follow(d.id, label + ' \u00b7 ' + short(d.id, 8)),
      }, 'events')));
    dbody.append(row);
  }
  if (!sd.deployments.length) dbody.append(el('tr', {}, el('td', { colSpan: 6, class: 'empty' }, 'No deployments yet.')));
  deps.append(dbody);

  const rels = el('table', { class: 'releases' },
    el('thead', {}, el('tr', {}, ...['release', 'image', 'revision', 'went live', ''].map((h) => el('th', {}, h)))));
  const rbody = el('tbody');
  for (const r of sd.releases) {
    const isLive = liveRelease && liveRelease.id === r.id;
    const origin = sd.deployments.find((d) => d.id === r.deployment);
    const back = origin && origin.trigger.kind === 'rollback' ? byId.get(origin.trigger.release) : null;
    const note = origin && origin.trigger.kind === 'rollback' ? ' (' + sourceText(origin, releaseNo) + ')' : '';
    const revision = r.revision || (back && back.revision) || '';
    rbody.append(el('tr', { 'data-release': String(r.number), class: isLive ? 'is-live' : '' },
      el('td', { class: 'rel' }, el('strong', {}, '#' + r.number), note ? el('span', { class: 'muted' }, note) : null),
      el('td', { class: 'mono', title: r.artifact.image + (r.artifact.digest ? '\n' + r.artifact.digest : '') }, imageText(r.artifact.image)),
      el('td', { class: 'mono', title: revision }, digest(revision)),
      el('td', { class: 'time' }, when(r.created_at)),
      el('td', { class: 'act' }, isLive
        ? el('span', { class: 'badge s-live' }, 'serving')
        : rollbackButton(sd.base, label, r.number))));
  }
  if (!sd.releases.length) rbody.append(el('tr', {}, el('td', { colSpan: 5, class: 'empty' }, 'No releases yet: a deployment that goes live makes one.')));
  rels.append(rbody);

  return el('article', { class: 'service', 'data-service': key },
    head,
    el('div', { class: 'cols' },
      el('div', {}, el('h4', {}, 'Deployments'), deps),
      el('div', {}, el('h4', {}, 'Releases'), rels)));
}

/** Bytes for people: 1.5 MiB. */
function bytesText(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

/** How long ago an RFC 3339 time was: just now, 3 min, 2 h, 4 d (coarse, so that a card
 * is redrawn, and an armed button disarmed, only when the text changes). */
function ageText(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

/**
 * A project's volumes: who mounts them, size, last backup (state and age, a failure
 * with its error), Back up now, and Restore of the newest good backup (two clicks; a
 * live service that mounts the volume is stopped and started again by the server).
 */
function dataCard(project, volumes, backups, databases) {
  const base = '/projects/' + enc(project);
  const own = 'wharf-' + project;
  const table = el('table', { class: 'volumes' },
    el('thead', {}, el('tr', {}, ...['volume', 'mounted by', 'size', 'last backup', ''].map((h) => el('th', {}, h)))));
  const body = el('tbody');
  if (volumes.error) {
    body.append(el('tr', {}, el('td', { colSpan: 5, class: 'empty' }, 'Volumes unavailable: ' + volumes.error)));
  }
  for (const v of volumes.error ? [] : volumes) {
    const env = v.environment || null;
    const label = v.name + (env ? ' (' + env + ')' : '');
    // By scope, not environment name (a deleted environment's volume has none), and
    // volume backups only (a database's dump of the same name is restored elsewhere).
    const mine = backups.filter((b) => b.source === 'volume' && b.volume === v.name && (b.scope || null) === (v.scope || null));
    const last = mine[0] || null;
    const good = mine.find((b) => b.state === 'succeeded') || null;
    const live = v.mounted_by.filter((m) => m.live).map((m) => m.service);
    const mounts = v.mounted_by.map((m) => m.service + ':' + m.path + (m.live ? '' : ' (not live)')).join(', ');
    const size = v.size_bytes !== null && v.size_bytes !== undefined ? bytesText(v.size_bytes) : (v.size || '');
    let lastCell;
    if (!last) {
      lastCell = el('span', { class: 'muted' }, 'never');
    } else {
      const cls = last.state === 'succeeded' ? 's-live' : last.state === 'failed' ? 's-failed' : 's-building';
      lastCell = el('span', {},
        el('span', { class: 'badge ' + cls, title: last.error || last.sha256 || '' }, last.state),
        ' ' + ageText(last.created_at) + (last.size_bytes ? ' \u00b7 ' + bytesText(last.size_bytes) : ''),
        last.error ? el('div', { class: 'backup-error' }, last.error) : null);
    }
    const now = el('button', { type: 'button', class: 'quiet backup-now', title: 'Back up this volume now' }, 'Back up now');
    now.onclick = async () => {
      now.disabled = true;
      now.textContent = 'Backing up\u2026';
      try {
        const b = await api(base + '/backups', { method: 'POST', body: { volume: v.name, environment: env || undefined } });
        if (b.state === 'succeeded') notice('Backup of ' + label + ' succeeded (' + bytesText(b.size_bytes) + ').');
        else showError(b.error || b.state, 'Backup of ' + label);
      } catch (e) {
        showError(e, 'Backup of ' + label);
      }
      dataChanged();
      refresh();
    };
    const restore = !good ? null : confirmButton(
      { class: 'restore', 'data-backup': good.id, title: 'Replace the volume\u2019s contents with the backup of ' + good.created_at },
      'Restore', 'Confirm restore from ' + ageText(good.created_at) + (live.length ? ' (restarts ' + live.join(', ') + ')' : ''),
      'Restoring\u2026', 'Restore of ' + label, async () => {
        await api(base + '/backups/' + enc(good.id) + '/restore',
          { method: 'POST', body: { confirm: v.name, restart: true } });
        dataChanged();
        notice('Volume ' + label + ' holds the backup of ' + when(Date.parse(good.created_at)) + ' again.');
      });
    const rowKey = (env ? env + '/' : v.orphaned ? (v.scope || '') + '/' : '') + v.name;
    body.append(el('tr', { 'data-volume': rowKey, class: v.orphaned ? 'orphaned' : '' },
      el('td', {}, el('strong', {}, v.name), env ? el('span', { class: 'env' }, env) : null,
        v.orphaned ? el('span', { class: 'muted' }, ' environment deleted') : null),
      el('td', { class: 'mono' }, mounts || el('span', { class: 'muted' }, 'nothing')),
      el('td', { class: 'size' }, size),
      el('td', { class: 'last-backup' }, lastCell),
      el('td', { class: 'act' }, now, restore)));
  }
  table.append(body);

  // Databases: engine, how services reach it, its volume's size, its last dump, and
  // Back up now / Restore of the newest good dump (Redis: its volume, above).
  const dbTable = !databases.length ? null : el('table', { class: 'databases' },
    el('thead', {}, el('tr', {}, ...['database', 'engine', 'reference', 'size', 'last dump', ''].map((h) => el('th', {}, h)))));
  if (dbTable) {
    const dbBody = el('tbody');
    for (const d of databases) {
      const dumps = backups.filter((b) => b.source !== 'volume' && b.volume === d.name && (b.scope || null) === own);
      const last = dumps[0] || null;
      const good = dumps.find((b) => b.state === 'succeeded') || null;
      const vol = volumes.error ? null : volumes.find((v) => v.name === d.name + '-data' && (v.scope || null) === own);
      const size = vol && vol.size_bytes !== null && vol.size_bytes !== undefined ? bytesText(vol.size_bytes) : '';
      const redis = d.engine === 'redis';
      let lastCell;
      if (redis) lastCell = el('span', { class: 'muted' }, 'backed up with its volume ' + d.name + '-data');
      else if (!last) lastCell = el('span', { class: 'muted' }, 'never');
      else {
        const cls = last.state === 'succeeded' ? 's-live' : last.state === 'failed' ? 's-failed' : 's-building';
        lastCell = el('span', {},
          el('span', { class: 'badge ' + cls, title: last.error || last.sha256 || '' }, last.state),
          ' ' + ageText(last.created_at) + (last.size_bytes ? ' \u00b7 ' + bytesText(last.size_bytes) : ''),
          last.error ? el('div', { class: 'backup-error' }, last.error) : null);
      }
      let now = null;
      if (!redis) {
        now = el('button', { type: 'button', class: 'quiet backup-now', title: 'Dump this database now' }, 'Back up now');
        now.onclick = async () => {
          now.disabled = true;
          now.textContent = 'Backing up\u2026';
          try {
            const b = await api(base + '/databases/' + enc(d.name) + '/backups', { method: 'POST', body: {} });
            if (b.state === 'succeeded') notice('Dump of ' + d.name + ' succeeded (' + bytesText(b.size_bytes) + ').');
            else showError(b.error || b.state, 'Dump of ' + d.name);
          } catch (e) {
            showError(e, 'Dump of ' + d.name);
          }
          dataChanged();
          refresh();
        };
      }
      const restore = redis || !good ? null : confirmButton(
        { class: 'restore', 'data-backup': good.id, title: 'Load the dump of ' + good.created_at + ' into the live database' },
        'Restore', 'Confirm restore of ' + d.name + ' from ' + ageText(good.created_at),
        'Restoring\u2026', 'Restore of ' + d.name, async () => {
          await api(base + '/backups/' + enc(good.id) + '/restore',
            { method: 'POST', body: { confirm: d.name } });
          dataChanged();
          notice('Database ' + d.name + ' holds the dump of ' + when(Date.parse(good.created_at)) + ' again.');
        });
      dbBody.append(el('tr', { 'data-database': d.name },
        el('td', {}, el('strong', {}, d.name), d.public ? el('span', { class: 'env' }, 'public') : null),
        el('td', {}, d.engine + ' ' + d.version),
        el('td', { class: 'mono' }, d.reference),
        el('td', { class: 'size' }, size),
        el('td', { class: 'last-backup' }, lastCell),
        el('td', { class: 'act' }, now, restore)));
    }
    dbTable.append(dbBody);
  }
  return el('article', { class: 'service data', 'data-data': project },
    el('div', { class: 'card-head' }, el('h3', {}, 'Data'),
      el('span', { class: 'status-detail' }, 'volumes, databases and their backups')),
    dbTable ? el('h4', {}, 'Databases') : null, dbTable,
    el('h4', {}, 'Volumes'), table);
}

function cancelButton(id) {
  const b = el('button', { type: 'button', class: 'quiet cancel', title: 'Cancel this deployment' }, 'cancel');
  b.onclick = async () => {
    b.disabled = true;
    try {
      await api('/deployments/' + enc(id) + '/cancel', { method: 'POST', body: {} });
      notice('Cancel requested for deployment ' + short(id, 8) + '.');
    } catch (e) {
      showError(e, 'Cancelling ' + short(id, 8));
      b.disabled = false;
    }
    refresh();
  };
  return b;
}

/**
 * A button that asks once more before it acts (no modal dialog to block the page):
 * the first click arms it for five seconds, the second runs `action`, whose errors
 * show on the page.
 */
function confirmButton(props, label, confirmLabel, busyLabel, what, action) {
  let armed = 0;
  const b = el('button', Object.assign({ type: 'button' }, props), label);
  const disarm = () => { armed = 0; b.textContent = label; b.classList.remove('armed'); };
  b.onclick = async () => {
    if (!armed) {
      b.textContent = confirmLabel;
      b.classList.add('armed');
      armed = setTimeout(disarm, 5000);
      return;
    }
    clearTimeout(armed);
    b.disabled = true;
    b.textContent = busyLabel;
    try {
      await action();
    } catch (e) {
      showError(e, what);
    }
    // Ready again (a redraw replaces it anyway when what it acted on changed).
    b.disabled = false;
    disarm();
    refresh();
  };
  return b;
}

function rollbackButton(base, service, number) {
  return confirmButton({ class: 'rollback', 'data-release': String(number) },
    'Rollback', 'Confirm rollback to #' + number, 'Rolling back\u2026',
    'Rollback of ' + service + ' to #' + number, async () => {
      const dep = await api(base + '/rollback',
        { method: 'POST', body: { release: number } });
      notice('Rolling ' + service + ' back to release #' + number + ' (deployment ' + short(dep.id, 8) + ').');
      follow(dep.id, service + ' \u00b7 rollback to #' + number);
    });
}

/** Deploys the service's current source again (a git source fetches its branch anew). */
function redeployButton(base, service) {
  return confirmButton({ class: 'quiet redeploy', title: 'Deploy the current source again' },
    'Redeploy', 'Confirm redeploy', 'Deploying\u2026', 'Redeploy of ' + service, async () => {
      const dep = await api(base + '/deployments',
        { method: 'POST', body: {} });
      notice('Redeploying ' + service + ' (deployment ' + short(dep.id, 8) + ').');
      follow(dep.id, service + ' \u00b7 redeploy');
    });
}

// ---------------------------------------------------------------- live events (SSE over fetch)

let following = null;

function followLatest(data) {
  let latest = null;
  for (const p of data) for (const s of p.services) for (const d of s.deployments) {
    if (!latest || d.created_at > latest.d.created_at) latest = { d, name: s.service.name };
  }
  if (latest) { followedOnce = true; follow(latest.d.id, latest.name + ' \u00b7 ' + short(latest.d.id, 8)); }
}

function logState(cls, text) {
  const s = $('logstate');
  s.className = 'pill ' + cls;
  s.textContent = text;
}

function logLine(cls, at, tag, ...parts) {
  const log = $('log');
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  log.append(el('div', { class: 'line ' + cls },
    el('span', { class: 'at' }, at ? clock(at) : ''),
    el('span', { class: 'tag' }, tag),
    el('span', { class: 'msg' }, ...parts)));
  while (log.childElementCount > MAX_LOG_LINES) log.firstChild.remove();
  if (stick) log.scrollTop = log.scrollHeight;
}

/** Draws one event; returns whether it was the deployment's final state. */
function showEvent(ev) {
  const k = ev.kind;
  if (k.kind === 'state') {
    logLine('state s-' + k.to.state, ev.at, 'state',
      stateName(k.from).replace('_', ' ') + ' \u2192 ', el('strong', {}, stateText(k.to)));
    return !isActive(k.to);
  }
  logLine('log ' + k.stream, k.at || ev.at, k.stream, k.text);
  return false;
}

/** Parses one SSE block ("id:", "event:", "data:" lines). */
function parseBlock(block) {
  const ev = { id: null, event: 'message', data: [] };
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'id') ev.id = value;
    else if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data.push(value);
  }
  return ev.data.length ? ev : null;
}

/**
 * Reads one server-sent event stream from the API until it ends, calling `onEvent`
 * with each {id, event, data}. EventSource cannot send an Authorization header, so
 * this reads the stream with fetch. Throws an ApiError when the API refuses.
 */
async function readStream(path, extraHeaders, signal, onEvent) {
  const headers = Object.assign({ Authorization: 'Bearer ' + token(), Accept: 'text/event-stream' }, extraHeaders);
  const r = await fetch('/v1' + path, { headers, signal, cache: 'no-store' });
  if (!r.ok) {
    let err = null;
    try { err = (await r.json()).error; } catch (_) { /* reported below */ }
    throw new ApiError(r.status, err ? err.code : 'http_' + r.status, err ? err.message : 'HTTP ' + r.status);
  }
  logState('streaming', 'live');
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = parseBlock(buf.slice(0, i));
      buf = buf.slice(i + 2);
      if (ev) onEvent({ id: ev.id, event: ev.event, data: ev.data.join('\n') });
    }
  }
}

/**
 * Shows a stream in the viewer, taking over from whatever it showed. `connect(ctrl)`
 * reads once and returns whether the stream is over for good; a dropped connection
 * is retried with a growing pause, an API refusal (4xx) is shown and ends it.
 */
async function view(label, key, connect) {
  if (following) following.abort();
  const ctrl = new AbortController();
  following = ctrl;
  $('log').textContent = '';
  $('logfor').textContent = label;
  $('logs').setAttribute('data-following', key);
  let failures = 0;
  let ended = false;
  while (!ended && !ctrl.signal.aborted) {
    try {
      logState('connecting', failures ? 'reconnecting' : 'connecting');
      ended = await connect(ctrl);
      failures = 0;
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
        logState('failed', 'error');
        logLine('error', Date.now(), 'error', String(e));
        return;
      }
      failures += 1;
      const wait = Math.min(1000 * failures, 5000);
      logState('failed', 'disconnected');
      logLine('error', Date.now(), 'error',
        'stream broke (' + e.message + '); reconnecting in ' + wait / 1000 + ' s');
      await sleep(wait);
    }
  }
  if (!ctrl.signal.aborted) logState('ended', 'ended');
}

/**
 * Follows a deployment's events: stored ones first, then live ones, until its final
 * state; resumes after a dropped connection with Last-Event-ID.
 */
function follow(id, label) {
  let last = null;
  return view(label, 'deployment:' + id, async (ctrl) => {
    let ended = false;
    await readStream('/deployments/' + enc(id) + '/events',
      last === null ? {} : { 'Last-Event-ID': last }, ctrl.signal, (ev) => {
        if (ev.id !== null) last = ev.id;
        try {
          if (showEvent(JSON.parse(ev.data))) ended = true;
        } catch (e) {
          logLine('error', Date.now(), 'error', 'unreadable event: ' + e.message);
        }
      });
    if (ended) return true;
    // The server ends a stream only after the final state: ask whether it came.
    const d = await api('/deployments/' + enc(id), { signal: ctrl.signal });
    return !isActive(d.state);
  });
}

/** Follows the live app's own output (its last lines, then new ones). */
function followApp(base, service) {
  let connects = 0;
  return view(service + ' \u00b7 app output', 'app:' + base, async (ctrl) => {
    // After a redeploy the live instance is a new one: show its last lines too.
    if (connects++) logLine('system', Date.now(), 'system', 'reconnected: the live instance\u2019s last lines follow');
    await readStream(base + '/logs?follow=true&tail=200',
      {}, ctrl.signal, (ev) => {
        if (ev.event === 'error') { logLine('error', Date.now(), 'error', ev.data); return; }
        try {
          const line = JSON.parse(ev.data);
          logLine('log ' + line.stream, line.at, line.stream, line.text);
        } catch (e) {
          logLine('error', Date.now(), 'error', 'unreadable line: ' + e.message);
        }
      });
    // The instance went away (a redeploy, a stop): pick up the live one, if any.
    await sleep(1000);
    return false;
  });
}

// ---------------------------------------------------------------- session

function signedIn() {
  $('login').hidden = true;
  $('session').hidden = false;
}
function signedOut() {
  clearTimeout(timer);
  if (following) following.abort();
  following = null;
  followedOnce = false;
  dataChanged();
  $('login').hidden = false;
  $('session').hidden = true;
  $('projects').textContent = '';
  $('projects').append(el('p', { class: 'empty' }, 'Signed out. Sign in with an API token to see your projects.'));
  cards.clear();
  sections.clear();
  $('log').textContent = '';
  $('logfor').textContent = 'pick a deployment';
  logState('', '');
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (!t) { showError(new ApiError(0, 'invalid_input', 'paste a token first'), 'Sign-in'); return; }
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await api('/projects');
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err, 'Sign-in');
      return;
    }
    clearError();
    signedIn();
    refresh();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    signedOut();
    clearError();
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  if (token()) { signedIn(); refresh(); }
});
