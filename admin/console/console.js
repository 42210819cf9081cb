// wxproxy status console (SPEC §15). It reads /admin/status every few
// seconds and renders it. Every value from the server is put into the page
// with textContent or as an attribute value, never parsed as markup. The
// admin token the operator types is kept in sessionStorage only (this tab)
// and sent only as a bearer header to this origin's POST endpoints.
'use strict';

(() => {
  const EVERY_MS = 2000;
  const TOKEN_KEY = 'wxproxy.adminToken';
  const $ = (id) => document.getElementById(id);

  let paused = false;
  let timer = 0;
  let lastOK = null; // time of the last status read
  let inFlight = false;

  // ---- building blocks -------------------------------------------------

  // h builds an element. attrs: class, text, or any attribute; children:
  // nodes or strings (strings become text nodes).
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

  function duration(sec) {
    sec = Math.max(0, Math.round(sec));
    const d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600);
    const m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d) return `${d}d ${hh}h`;
    if (hh) return `${hh}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function clock(iso) {
    const t = new Date(iso);
    if (isNaN(t)) return '';
    const now = new Date();
    const time = t.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false});
    if (t.toDateString() === now.toDateString()) return time;
    return t.toLocaleDateString([], {month: 'short', day: 'numeric'}) + ' ' + time;
  }

  function ago(iso, now) {
    const t = new Date(iso);
    if (isNaN(t)) return '';
    return duration((now - t) / 1000) + ' ago';
  }

  // timeEl is a <time> with the local clock time as text and the ISO
  // timestamp as its machine-readable value and tooltip.
  function timeEl(iso, now, withAgo) {
    const text = clock(iso) + (withAgo ? ` (${ago(iso, now)})` : '');
    return h('time', {datetime: iso, title: iso, text});
  }

  // meter is a labelled bar; lo/hi mark where it turns amber/red (for
  // "used" bars) or the other way round (for time-left bars).
  function meter(label, value, max, kind) {
    const m = h('meter', {min: 0, max, value: Math.min(value, max), 'aria-label': label});
    if (kind === 'left') { // time left: more is better
      m.low = max * 0.1; m.high = max * 0.5; m.optimum = max;
    } else { // used: less is better
      m.low = max * 0.5; m.high = max * 0.8; m.optimum = 0;
    }
    return m;
  }

  function badge(state, text) {
    return h('span', {class: 'badge state-' + state.replace(/[^a-z-]/g, ''), text: text || state});
  }

  function section(id, title, ...content) {
    return h('section', {class: 'panel', id, 'aria-labelledby': id + '-h'},
      h('h2', {id: id + '-h', text: title}), ...content);
  }

  function empty(text) { return h('p', {class: 'empty', text}); }

  // ---- sections ---------------------------------------------------------

  function tokenLine(label, t, now) {
    const row = h('div', {class: 'tok'});
    row.append(h('span', {class: 'tok-label', text: label}));
    if (!t.present) {
      row.append(badge('open', 'none'));
      if (t.last_error) row.append(h('span', {class: 'err-text', text: t.last_error}));
      return row;
    }
    const life = (new Date(t.expires_at) - new Date(t.obtained_at)) / 1000;
    const left = t.ttl_seconds;
    if (life > 0) row.append(meter(label + ' time left', left, life, 'left'));
    row.append(h('span', {class: 'ttl', text: 'TTL ' + duration(left)}),
      h('code', {class: 'fp', title: 'first 8 hex of sha256 of the ' + label, text: t.fingerprint}));
    return row;
  }

  function breakerBlock(b, now, multi) {
    const wrap = h('div', {class: 'breaker'});
    const line = h('p', {class: 'kv'}, h('span', {class: 'k', text: 'Breaker'}), badge(b.state));
    if (b.since) line.append(h('span', {class: 'since'}, 'since ', timeEl(b.since, now, true)));
    wrap.append(line);
    if (multi && b.replicas.length > 0) {
      const ul = h('ul', {class: 'per-replica'});
      for (const r of b.replicas) {
        ul.append(h('li', {}, h('span', {class: 'replica', text: r.replica}), ' ', badge(r.state),
          ` ${r.counts.consecutive_failures} failures in a row`));
      }
      wrap.append(ul);
    }
    return wrap;
  }

  function appCard(a, now, multi) {
    const card = h('article', {class: 'card', 'data-app': a.name, 'aria-labelledby': 'app-' + a.name});
    card.append(h('header', {class: 'card-head'},
      h('h3', {id: 'app-' + a.name, text: a.name}),
      badge(a.ready ? 'ready' : 'not-ready', a.ready ? 'ready' : 'not ready')));
    card.append(h('p', {class: 'meta', text: `${a.kind} · ${a.appid} · ${a.token_mode}`}));
    card.append(breakerBlock(a.breaker, now, multi));
    card.append(tokenLine('access_token', a.token, now));
    card.append(h('p', {class: 'meta', text: `${plural(a.token.refreshes, 'token')} fetched by this replica`}));
    if (a.tickets.length) {
      const tl = h('div', {class: 'tickets'});
      for (const t of a.tickets) tl.append(tokenLine(t.type + ' ticket', t, now));
      card.append(tl);
    }
    if (a.upstreams.length) {
      const ul = h('ul', {class: 'upstreams', 'aria-label': 'upstreams of ' + a.name});
      for (const u of a.upstreams) {
        const li = h('li', {}, badge(u.state === 'up' ? 'closed' : 'open', u.state), ' ', h('span', {class: 'url', text: u.url}));
        if (u.active) li.append(' (in use)');
        if (u.since) li.append(' since ', timeEl(u.since, now, false));
        ul.append(li);
      }
      card.append(ul);
    }
    card.append(h('div', {class: 'card-actions'},
      h('button', {type: 'button', 'data-action': 'refresh', 'data-app': a.name, 'data-key': 'refresh:' + a.name,
        text: 'Refresh token', 'aria-label': 'Refresh the token of ' + a.name})));
    return card;
  }

  function usedCell(label, used, limit) {
    const td = h('td', {'data-label': label});
    if (limit > 0) {
      td.append(meter(label, used, limit, 'used'), h('span', {class: 'nums', text: `${used} / ${limit}`}));
    } else {
      td.append(h('span', {class: 'nums', text: `${used} (no limit)`}));
    }
    return td;
  }

  function quotaTables(quotas, now) {
    const out = [];
    for (const q of quotas) {
      const wrap = h('div', {class: 'quota-app', 'data-quota-app': q.app});
      wrap.append(h('h3', {text: q.app}),
        h('p', {class: 'meta', text: `day resets at midnight ${q.reset_timezone || ''} · on limit: ${q.on_limit || 'reject'}`}));
      if (q.error) wrap.append(h('p', {class: 'warn', text: q.error}));
      if (!q.apis.length) {
        wrap.append(empty('No quotas configured and no use today.'));
        out.push(wrap);
        continue;
      }
      const tbody = h('tbody');
      for (const u of q.apis) {
        const wx = h('td', {'data-label': 'WeChat'});
        if (u.upstream_exhausted) {
          wx.append(badge('open', u.upstream_exhausted + ' remembered'));
          if (u.upstream_resets_at) wx.append(' until ', timeEl(u.upstream_resets_at, now, false));
        } else {
          wx.append(h('span', {class: 'muted', text: '—'}));
        }
        tbody.append(h('tr', {'data-api': u.api},
          h('th', {scope: 'row', 'data-label': 'API'}, h('code', {text: u.api})),
          usedCell('this minute', u.used_minute, u.per_minute),
          usedCell('today', u.used_day, u.per_day), wx));
      }
      wrap.append(h('div', {class: 'table-wrap'}, h('table', {class: 'stack'},
        h('caption', {class: 'visually-hidden', text: 'Quotas of ' + q.app}),
        h('thead', {}, h('tr', {}, h('th', {scope: 'col', text: 'API'}), h('th', {scope: 'col', text: 'This minute'}),
          h('th', {scope: 'col', text: 'Today'}), h('th', {scope: 'col', text: 'WeChat said'}))),
        tbody)));
      out.push(wrap);
    }
    return out;
  }

  function platformTable(ps, now) {
    if (!ps.length) return empty('No Open Platform or WeCom suite configured.');
    const tbody = h('tbody');
    for (const p of ps) {
      const a = p.authorizers || {};
      const state = h('td', {'data-label': 'State'}, badge(p.ready ? 'ready' : 'not-ready', p.ready ? 'ready' : 'not ready'));
      for (const r of p.reasons || []) state.append(' ', h('span', {class: 'err-text', text: r}));
      tbody.append(h('tr', {'data-platform': p.name},
        h('th', {scope: 'row', 'data-label': 'Platform'}, p.name, ' ', h('span', {class: 'muted', text: p.kind})),
        state,
        h('td', {'data-label': 'Token'}, tokenLine('token', p.token, now)),
        h('td', {'data-label': 'Authorizers', class: 'nums',
          text: `${a.ok || 0} ok · ${a.refreshing || 0} refreshing · ${a.unauthorized || 0} unauthorized`})));
    }
    return h('div', {class: 'table-wrap'}, h('table', {class: 'stack'},
      h('thead', {}, h('tr', {}, ...['Platform', 'State', 'Token', 'Authorizers'].map((t) => h('th', {scope: 'col', text: t})))),
      tbody));
  }

  function errorTable(errs, total, now) {
    if (!errs.length) return empty('No errors since this replica started.');
    const tbody = h('tbody');
    for (const e of errs) {
      tbody.append(h('tr', {class: 'error-row'},
        h('td', {'data-label': 'Time'}, timeEl(e.time, now, true)),
        h('td', {'data-label': 'Kind'}, h('code', {class: 'kind', text: e.kind})),
        h('td', {'data-label': 'App', class: 'err-app', text: e.app || '—'}),
        h('td', {'data-label': 'API'}, h('code', {class: 'err-api', text: e.api || '—'})),
        h('td', {'data-label': 'HTTP', text: e.status || '—'}),
        h('td', {'data-label': 'Count', class: 'nums', text: e.count > 1 ? `×${e.count} since ${clock(e.first)}` : '1'}),
        h('td', {'data-label': 'Message', class: 'err-msg', text: e.message || ''})));
    }
    return [h('p', {class: 'meta', text: `${total} errors recorded by ${errs[0].replica || 'this replica'} since it started; the last ${errs.length} entries, newest first.`}),
      h('div', {class: 'table-wrap'}, h('table', {class: 'stack errors'},
        h('thead', {}, h('tr', {}, ...['Time', 'Kind', 'App', 'API', 'HTTP', 'Count', 'Message'].map((t) => h('th', {scope: 'col', text: t})))),
        tbody))];
  }

  function replicaList(rs) {
    const ul = h('ul', {class: 'replicas'});
    for (const r of rs) {
      const b = r.breakers || {};
      const li = h('li', {'data-replica': r.name}, h('span', {class: 'replica', text: r.name}));
      if (r.self) li.append(' ', h('span', {class: 'muted', text: '(this page)'}));
      li.append(' ', badge(b.open ? 'open' : (b['half-open'] ? 'half-open' : 'closed'),
        `${b.open || 0} open · ${b['half-open'] || 0} half-open · ${b.closed || 0} closed`));
      ul.append(li);
    }
    return ul;
  }

  function render(st) {
    const now = new Date(st.generated_at);
    const multi = st.replicas.length > 1;
    const open = st.apps.filter((a) => a.breaker.state !== 'closed').length;
    const notReady = st.apps.filter((a) => !a.ready).length;
    $('summary').textContent = `${plural(st.apps.length, 'app')} · ${notReady} not ready · ` +
      `${plural(open, 'breaker')} not closed · ${plural(st.replicas.length, 'replica')}${st.fleet ? ' (fleet)' : ''} · ` +
      `served by ${st.replica} · updated ${clock(st.generated_at)}`;

    const parts = [];
    if (st.warnings.length) {
      parts.push(h('div', {class: 'warn', role: 'alert'}, ...st.warnings.map((w) => h('p', {text: w}))));
    }
    const apps = h('div', {class: 'cards'});
    for (const a of st.apps) apps.append(appCard(a, now, multi));
    parts.push(section('apps', 'Apps', apps));
    parts.push(section('quotas', 'Quotas', ...quotaTables(st.quotas, now)));
    parts.push(section('errors', 'Recent errors', ...[].concat(errorTable(st.errors, st.errors_total, now))));
    parts.push(section('platforms', 'Platforms', platformTable(st.platforms, now)));
    parts.push(section('replicas', 'Replicas', replicaList(st.replicas)));

    // Keep keyboard focus on the same control across the re-render.
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : '';
    $('view').replaceChildren(...parts);
    if (focused) {
      const again = $('view').querySelector(`[data-key="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  // ---- polling ----------------------------------------------------------

  async function poll() {
    if (inFlight) return;
    inFlight = true;
    try {
      const resp = await fetch('/admin/status', {cache: 'no-store', headers: {Accept: 'application/json'}});
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      const st = await resp.json();
      render(st);
      lastOK = new Date();
      setConn('', '');
    } catch (err) {
      setConn('warn', 'Status unavailable (' + (err && err.message ? err.message : 'network error') + ')' +
        (lastOK ? '; showing what was read at ' + clock(lastOK.toISOString()) : ''));
    } finally {
      inFlight = false;
    }
  }

  function setConn(cls, text) {
    const c = $('conn');
    c.className = 'conn ' + cls;
    if (c.textContent !== text) c.textContent = text;
  }

  function schedule() {
    clearTimeout(timer);
    if (!paused) timer = setTimeout(async () => { await poll(); schedule(); }, EVERY_MS);
  }

  // ---- actions ----------------------------------------------------------

  function say(text, cls) {
    const r = $('action-result');
    r.className = 'action-result ' + (cls || '');
    r.textContent = text;
  }

  function showTokenState() {
    const has = !!sessionStorage.getItem(TOKEN_KEY);
    $('token-state').textContent = has ?
      'Admin token entered (kept in this tab only). Buttons send it to this admin port.' :
      'No admin token entered: “Reload configuration” and “Refresh token” do nothing until you enter one. It is kept in this tab only (sessionStorage).';
    document.body.classList.toggle('has-token', has);
  }

  // post sends an authorized POST; without a token it sends nothing.
  async function post(url, what) {
    const tok = sessionStorage.getItem(TOKEN_KEY);
    if (!tok) {
      say(`Enter the admin token first; nothing was sent (${what}).`, 'warn');
      $('admin-token').focus();
      return null;
    }
    say(what + '…', '');
    try {
      const resp = await fetch(url, {method: 'POST', cache: 'no-store', headers: {Authorization: 'Bearer ' + tok}});
      const body = await resp.json().catch(() => ({}));
      if (resp.status === 403) {
        say('The admin port refused the token: ' + (body.error || 'forbidden') + '.', 'warn');
        return null;
      }
      return {status: resp.status, body};
    } catch (err) {
      say(what + ' failed: ' + (err && err.message ? err.message : 'network error'), 'warn');
      return null;
    }
  }

  async function refreshApp(app) {
    const r = await post('/admin/apps/' + encodeURIComponent(app) + '/refresh', 'Refreshing the token of ' + app);
    if (!r) return;
    if (r.body.refreshed) say(`Token of ${app} refreshed: fingerprint ${r.body.fingerprint}.`, 'ok');
    else say(`Refresh of ${app} failed (HTTP ${r.status}): ${r.body.error || 'unknown error'}.`, 'warn');
    poll();
  }

  async function reloadConfig() {
    const r = await post('/admin/reload', 'Reloading the configuration');
    if (!r) return;
    if (r.body.reloaded) {
      const restart = r.body.needs_restart || [];
      say('Configuration reloaded.' + (restart.length ? ' Needs a restart to apply: ' + restart.join(', ') + '.' : ''), 'ok');
    } else {
      say('Reload refused; the running configuration stays: ' + (r.body.errors || []).join('; '), 'warn');
    }
    poll();
  }

  function init() {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('admin-token');
      const v = input.value.trim();
      input.value = ''; // not left in the page
      if (v) {
        sessionStorage.setItem(TOKEN_KEY, v);
        say('Admin token kept for this tab.', 'ok');
      } else {
        say('Type the admin token first.', 'warn');
      }
      showTokenState();
    });
    $('forget-token').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      say('Admin token forgotten.', 'ok');
      showTokenState();
    });
    $('reload-config').addEventListener('click', reloadConfig);
    $('pause').addEventListener('click', (ev) => {
      paused = !paused;
      ev.currentTarget.setAttribute('aria-pressed', String(paused));
      ev.currentTarget.textContent = paused ? 'Resume updates' : 'Pause updates';
      if (!paused) poll();
      schedule();
    });
    $('view').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action="refresh"]');
      if (b) refreshApp(b.dataset.app);
    });
    showTokenState();
    poll().then(schedule);
  }

  init();
})();
