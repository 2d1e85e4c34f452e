// The Switchboard dashboard: one page, no build step, no dependencies. Everything it
// shows comes from /api/v1 with the API key the operator signed in with, so it sees and
// may change exactly what that key may; the manager checks every call.
//
// Views are chosen by the URL's hash (#/delegates, #/tasks, #/tasks/<id>, #/explain,
// #/credentials). The live views (delegates, tasks, a task, the queue) redraw when the
// manager says something changed, over the event stream of GET /api/v1/events (read
// with fetch, which can send the key), and only when their data did change, so focus and
// half-typed input survive the refresh. While the stream is down they poll every POLL_MS
// instead, and the stream is opened again with a growing pause; while it is up they
// still poll every PUSH_POLL_MS, for what no event announces (heartbeat ages).
// document.body.dataset.live says which ('push' or 'poll'); window.switchboardLive
// counts the events, for tests.

'use strict';

(() => {
  const POLL_MS = 2000;
  const PUSH_POLL_MS = 15000;
  const KEY = 'switchboard.api-key';
  const STATES = ['queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled', 'expired', 'timed_out'];
  const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'expired', 'timed_out']);
  const PERMISSIONS = ['delegates:view', 'delegates:edit', 'delegates:delete', 'pipelines:execute', 'connectors:access', 'secrets:access'];

  const main = document.getElementById('main');
  const notice = document.getElementById('notice');
  let me = null; // GET /api/v1/status: { version, store, caller }
  let poller = null;
  let refresh = () => {}; // redraws the live view now (after an action), not at the next poll
  let generation = 0; // bumped on every navigation: a late answer for an old view is dropped
  let stream = null; // the AbortController of the open event stream, if any
  const liveState = { mode: 'poll', events: 0 };
  window.switchboardLive = liveState;

  // ---- helpers -------------------------------------------------------------------------

  const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => (
    { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  // Markup that is already safe: what html`` and raw() return. Anything else put into
  // html`` is escaped, so data from the API can never become markup.
  class Safe {
    constructor(text) { this.text = text; }
    toString() { return this.text; }
  }
  const raw = (text) => new Safe(String(text));
  const piece = (v) => (v instanceof Safe ? v.text : esc(v));

  function html(strings, ...values) {
    let out = strings[0];
    values.forEach((v, i) => {
      out += (Array.isArray(v) ? v.map(piece).join('') : piece(v)) + strings[i + 1];
    });
    return new Safe(out);
  }

  function say(text, isError = false) {
    if (notice.textContent !== text) notice.textContent = text;
    notice.classList.toggle('error', isError);
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, body, extra = {}) {
    const headers = { ...extra, Authorization: `Bearer ${sessionStorage.getItem(KEY) || ''}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    });
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
    if (!response.ok) {
      if (response.status === 401 && me) signOut('Your API key was refused; sign in again.');
      throw new ApiError(response.status, data || {});
    }
    return data;
  }

  const may = (permission) => me && (me.caller.kind === 'admin' || me.caller.permissions.includes(permission));

  function scopeText(o) {
    return [o.account, o.org, o.project].filter(Boolean).join(' / ');
  }

  function badge(state, text) {
    return html`<span class="badge s-${state}">${text ?? state.replaceAll('_', ' ')}</span>`;
  }

  function tags(list) {
    if (!list || list.length === 0) return raw('<span class="muted">none</span>');
    return raw(list.map((t) => html`<span class="tag">${t}</span>`).join(''));
  }

  function when(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return d.toLocaleString(undefined, { hour12: false });
  }

  function age(ms) {
    if (ms < 1000) return `${ms} ms`;
    const s = Math.round(ms / 1000);
    if (s < 120) return `${s} s`;
    const m = Math.round(s / 60);
    return m < 120 ? `${m} min` : `${Math.round(m / 60)} h`;
  }

  function route() {
    const hash = location.hash.replace(/^#\/?/, '');
    const [path, query] = hash.split('?');
    const parts = path.split('/').filter(Boolean);
    return { parts, query: new URLSearchParams(query || '') };
  }

  // Runs `load` now and again POLL_MS after each answer while this view is shown;
  // `draw` gets the data only when its fingerprint changed (and always the first time).
  // An answer older than one already drawn (a poll overtaken by a refresh after an
  // action) is dropped.
  function live(load, draw, fingerprint = JSON.stringify) {
    const mine = generation;
    let last = null;
    let asked = 0;
    let drawn = 0;
    const tick = async () => {
      const n = ++asked;
      try {
        const data = await load();
        if (mine !== generation || n < drawn) return;
        drawn = n;
        const print = fingerprint(data);
        if (print !== last) {
          last = print;
          draw(data);
        }
        if (notice.classList.contains('error') && notice.dataset.live) say('');
      } catch (e) {
        if (mine !== generation) return;
        say(`Could not refresh: ${e.message}`, true);
        notice.dataset.live = '1';
      }
    };
    const loop = async () => {
      await tick();
      if (mine === generation) poller = setTimeout(loop, liveState.mode === 'push' ? PUSH_POLL_MS : POLL_MS);
    };
    refresh = tick;
    return loop();
  }

  // Redraws `box` with `markup`, keeping what the operator was doing: the focused
  // control and anything typed into an input of the box.
  function redraw(box, markup) {
    const active = document.activeElement && box.contains(document.activeElement) ? document.activeElement.id : null;
    const typed = [...box.querySelectorAll('input[id]')].map((i) => [i.id, i.value, i.defaultValue]);
    box.innerHTML = markup;
    for (const [id, value, original] of typed) {
      const input = document.getElementById(id);
      if (input && value !== original) input.value = value;
    }
    if (active && document.getElementById(active)) document.getElementById(active).focus();
  }

  async function act(button, what, work) {
    button.disabled = true;
    try {
      await work();
      say(what);
      refresh();
      return true;
    } catch (e) {
      say(e.message, true);
      return false;
    } finally {
      button.disabled = false;
    }
  }

  // A destructive button asks once more in place ("Really revoke?") instead of a modal.
  function confirmed(button) {
    if (button.dataset.armed) return true;
    button.dataset.armed = '1';
    button.dataset.label = button.textContent;
    button.textContent = `Really ${button.textContent.toLowerCase()}?`;
    setTimeout(() => {
      if (!button.isConnected) return;
      delete button.dataset.armed;
      button.textContent = button.dataset.label;
    }, 5000);
    return false;
  }

  // ---- sign-in ---------------------------------------------------------------------------

  function showSignIn(message) {
    document.getElementById('nav').hidden = true;
    document.getElementById('who').hidden = true;
    main.innerHTML = html`
      <section class="card signin" aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in</h1>
        <p>Use an API key (or the admin key). The dashboard shows what that key may see.</p>
        <form id="signin-form">
          <label>API key <input id="api-key" name="key" type="password" autocomplete="current-password" required></label>
          <p><button type="submit">Sign in</button></p>
          <p id="signin-error" class="muted" role="alert">${message || ''}</p>
        </form>
      </section>`;
    const form = document.getElementById('signin-form');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, document.getElementById('api-key').value.trim());
      try {
        me = await api('GET', '/status');
        enter();
      } catch (e) {
        me = null;
        sessionStorage.removeItem(KEY);
        document.getElementById('signin-error').textContent = `Sign-in failed: ${e.message}`;
      }
    });
    document.getElementById('api-key').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    me = null;
    stop();
    unfollow();
    showSignIn(message);
  }

  // ---- the event stream ------------------------------------------------------------------

  function setMode(mode) {
    liveState.mode = mode;
    document.body.dataset.live = mode;
  }

  // Opens GET /api/v1/events and redraws the live view on each `changed` event; when the
  // stream ends or fails, polls again and reopens it after a pause that doubles up to 30 s.
  function follow(pause = 1000) {
    unfollow();
    const controller = new AbortController();
    stream = controller;
    const retry = () => {
      if (stream !== controller) return; // signed out, or replaced
      setMode('poll');
      refresh();
      setTimeout(() => { if (stream === controller && me) follow(Math.min(pause * 2, 30000)); }, pause);
    };
    (async () => {
      const response = await fetch('/api/v1/events', {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ''}` },
        signal: controller.signal,
      });
      if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
      setMode('push');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (block.split('\n').some((line) => line === 'event: changed')) {
            liveState.events += 1;
            refresh();
          }
        }
      }
    })().then(retry, retry);
  }

  function unfollow() {
    if (stream) stream.abort();
    stream = null;
    setMode('poll');
  }

  function enter() {
    document.getElementById('nav').hidden = false;
    const who = document.getElementById('who');
    who.hidden = false;
    const c = me.caller;
    document.getElementById('who-name').textContent = c.kind === 'admin'
      ? 'admin key'
      : `${c.name} (${scopeText(c)})`;
    follow();
    if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/delegates';
    else show();
  }

  // ---- delegates -------------------------------------------------------------------------

  function delegatesView() {
    main.innerHTML = html`<h1>Delegates</h1><div id="live-delegates" aria-live="off"><p class="muted">Loading…</p></div>`;
    const box = document.getElementById('live-delegates');
    // The heartbeat age changes every poll: it is left out of the fingerprint and
    // updated in place, so the table is redrawn only when something else changed.
    const fingerprint = (d) => JSON.stringify(d.items.map((g) => ({
      ...g,
      instances: g.instances.map(({ heartbeat_age_ms, last_heartbeat_at, ...i }) => i),
    })));
    return live(() => api('GET', '/delegates'), (data) => {
      redraw(box, drawDelegates(data.items));
      for (const cell of box.querySelectorAll('[data-age]')) {
        cell.textContent = age(Number(cell.dataset.age));
      }
    }, (d) => {
      // Ages alone changed: refresh them without a redraw.
      for (const g of d.items) for (const i of g.instances) {
        const cell = box.querySelector(`[data-age-of="${i.id}"]`);
        if (cell) cell.textContent = age(i.heartbeat_age_ms);
      }
      return fingerprint(d);
    });
  }

  function drawDelegates(groups) {
    const all = groups.flatMap((g) => g.instances);
    const count = (s) => all.filter((i) => i.state === s).length;
    if (groups.length === 0) {
      return html`<p>No delegates are registered in what this key may see. Create a token under
        <a href="#/credentials">Tokens &amp; keys</a> and start a delegate with it.</p>`;
    }
    const counts = html`<p class="counts" id="delegate-counts">
      <span>${groups.length} delegate${groups.length === 1 ? '' : 's'}, ${all.length} instance${all.length === 1 ? '' : 's'}:</span>
      ${badge('connected', `${count('connected')} connected`)}
      ${badge('stale', `${count('stale')} stale`)}
      ${badge('disconnected', `${count('disconnected')} disconnected`)}</p>`;
    return counts + groups.map(drawGroup).join('');
  }

  function drawGroup(g) {
    const edit = may('delegates:edit');
    const actions = [];
    if (edit) {
      actions.push(g.disabled
        ? html`<button type="button" class="secondary" data-act="enable" data-id="${g.id}" id="enable-${g.id}">Enable</button>`
        : html`<button type="button" class="secondary" data-act="disable" data-id="${g.id}" id="disable-${g.id}">Disable</button>`);
    }
    if (may('delegates:delete')) {
      actions.push(html`<button type="button" class="danger" data-act="delete" data-id="${g.id}" id="delete-${g.id}">Delete</button>`);
    }
    const rows = g.instances.map((i) => html`
      <tr data-instance="${i.id}">
        <td><span class="mono">${i.hostname}</span><br><small class="muted mono">${i.id}</small></td>
        <td>${badge(i.state)}<br>${raw(taking(g, i, edit))}</td>
        <td data-age="${i.heartbeat_age_ms}" data-age-of="${i.id}"></td>
        <td>${i.version} <small class="muted">${i.flavour}</small></td>
        <td><meter min="0" max="${i.capacity}" value="${i.load}" aria-hidden="true"></meter> ${i.load}/${i.capacity}</td>
        <td>${tags(i.tags)}</td>
        <td>${tags(i.selectors)}</td>
        <td>${tags(i.task_types)}</td>
        <td>${i.token_name ?? raw('<span class="muted">deleted</span>')}</td>
      </tr>`).join('');
    const pauseForm = edit && !g.paused ? html`
      <form class="inline" data-pause="${g.id}">
        <label>Pause note <input name="note" id="pause-note-${g.id}" size="24" required maxlength="500"></label>
        <label>for <input name="for" id="pause-for-${g.id}" size="5" placeholder="until resumed"></label>
        <button type="submit" class="secondary" id="pause-${g.id}">Pause</button>
      </form>` : '';
    const tagForm = edit ? html`
      <form class="inline" data-tags="${g.id}">
        <label>Group tags (comma-separated)
          <input name="tags" id="tags-${g.id}" value="${g.tags.join(', ')}" size="30"></label>
        <button type="submit" class="secondary" id="save-tags-${g.id}">Save tags</button>
      </form>` : '';
    return html`
      <section class="card" aria-labelledby="g-${g.id}" data-group="${g.name}">
        <div class="card-head">
          <h2 id="g-${g.id}">${g.name}</h2>
          <span class="badge s-scope">${scopeText(g)}</span>
          ${g.disabled ? badge('disabled') : ''}
          ${raw(g.paused ? html`<span class="paused" id="paused-${g.id}">${badge('paused')} ${pauseText(g.paused)}</span>` : '')}
          ${raw(g.paused && edit ? html`<button type="button" class="secondary" data-act="resume" data-id="${g.id}" id="resume-${g.id}">Resume</button>` : '')}
          <span>Tags: ${tags(g.tags)}</span>
          <div class="actions">${raw(actions.join(''))}</div>
        </div>
        <div class="table-wrap"><table>
          <caption class="muted">${g.instances.length} instance${g.instances.length === 1 ? '' : 's'}</caption>
          <thead><tr><th scope="col">Host</th><th scope="col">State</th><th scope="col">Heartbeat</th>
            <th scope="col">Version</th><th scope="col">Load</th><th scope="col">Tags</th>
            <th scope="col">Selectors</th><th scope="col">Task types</th><th scope="col">Token</th></tr></thead>
          <tbody>${raw(rows || '<tr><td colspan="9" class="muted">No instances.</td></tr>')}</tbody>
        </table></div>
        ${raw(pauseForm)}
        ${raw(tagForm)}
      </section>`;
  }

  /** `until 14:00: kernel upgrade`, or `until resumed: ...`. */
  function pauseText(p) {
    return `${p.until ? `until ${when(p.until)}` : 'until resumed'}: ${p.note}`;
  }

  /** Whether an instance takes new tasks, and why not; with a resume button for its own pause. */
  function taking(g, i, edit) {
    if (i.draining) return badge('draining');
    if (i.max_tasks && i.tasks_taken >= i.max_tasks) return badge('spent', 'single-use, done');
    if (i.paused) {
      const resume = edit ? html` <button type="button" class="secondary" data-act="resume-instance" data-id="${g.id}" data-instance="${i.id}">Resume</button>` : '';
      return html`${badge('paused')} <small>${pauseText(i.paused)}</small>` + resume;
    }
    if (!i.accepting) return '';
    return i.max_tasks ? badge('single_use', `single-use ${i.tasks_taken}/${i.max_tasks}`) : '';
  }

  main.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-act]');
    if (!button) return;
    const { act: what, id } = button.dataset;
    if (what === 'enable') await act(button, 'Delegate enabled.', () => api('POST', `/delegates/${id}/enable`));
    if (what === 'disable') await act(button, 'Delegate disabled: it gets no new tasks.', () => api('POST', `/delegates/${id}/disable`));
    if (what === 'delete' && confirmed(button)) await act(button, 'Delegate deleted.', () => api('DELETE', `/delegates/${id}`));
    if (what === 'resume') await act(button, 'Delegate resumed: it takes tasks again.', () => api('POST', `/delegates/${id}/resume`));
    if (what === 'resume-instance') {
      await act(button, 'Instance resumed.', () => api('POST', `/delegates/${id}/instances/${button.dataset.instance}/resume`));
    }
    if (what === 'revoke-token' && confirmed(button)) {
      if (await act(button, 'Token revoked: its delegates are disconnected.', () => api('POST', `/delegate-tokens/${id}/revoke`))) reloadCredentials();
    }
    if (what === 'revoke-key' && confirmed(button)) {
      if (await act(button, 'API key revoked.', () => api('POST', `/api-keys/${id}/revoke`))) reloadCredentials();
    }
    if (what === 'install-file') {
      try {
        const file = await api('GET', `/delegate-tokens/${id}/install?format=${button.dataset.format}`);
        const box = document.getElementById('install-box');
        document.getElementById('install-title').textContent = `Install file: ${file.filename}`;
        document.getElementById('install-steps').innerHTML = file.instructions.map((i) => html`<li><code>${i}</code></li>`).join('');
        document.getElementById('install-content').textContent = file.content;
        const link = document.getElementById('install-download');
        link.href = URL.createObjectURL(new Blob([file.content], { type: 'text/plain' }));
        link.download = file.filename;
        box.hidden = false;
        box.scrollIntoView();
      } catch (e) {
        say(`Could not make the install file: ${e.message}`, true);
      }
    }
    if (what === 'cancel-task' && confirmed(button)) await act(button, 'Task cancelled.', () => api('POST', `/tasks/${id}/cancel`));
  });

  main.addEventListener('submit', async (event) => {
    const form = event.target;
    if (form.dataset.pause) {
      event.preventDefault();
      const body = { note: form.elements.note.value };
      if (form.elements.for.value.trim()) body.for = form.elements.for.value.trim();
      await act(form.querySelector('button'), 'Delegate paused: it takes no new task; what runs goes on.',
        () => api('POST', `/delegates/${form.dataset.pause}/pause`, body));
      return;
    }
    if (!form.dataset.tags) return;
    event.preventDefault();
    const list = form.elements.tags.value.split(',').map((t) => t.trim()).filter(Boolean);
    await act(form.querySelector('button'), 'Tags saved.', () => api('PUT', `/delegates/${form.dataset.tags}/tags`, { tags: list }));
  });

  // ---- tasks -----------------------------------------------------------------------------

  function tasksView(query) {
    const q = (k) => query.get(k) || '';
    const stateOptions = ['', ...STATES].map((s) => html`<option value="${s}" ${raw(s === q('state') ? 'selected' : '')}>${s || 'any'}</option>`).join('');
    main.innerHTML = html`
      <h1>Tasks</h1>
      <form class="filters card" id="task-filters" aria-label="Filter tasks">
        <label>State <select name="state">${raw(stateOptions)}</select></label>
        <label>Account <input name="account" value="${q('account')}" size="12"></label>
        <label>Org <input name="org" value="${q('org')}" size="10"></label>
        <label>Project <input name="project" value="${q('project')}" size="10"></label>
        <label>Type <input name="type" value="${q('type')}" size="12"></label>
        <label>Connector <input name="connector" value="${q('connector')}" size="14"></label>
        <button type="submit">Filter</button>
        <a href="#/tasks">Clear</a>
      </form>
      <div id="live-tasks"><p class="muted">Loading…</p></div>`;
    document.getElementById('task-filters').addEventListener('submit', (event) => {
      event.preventDefault();
      const params = new URLSearchParams();
      for (const [k, v] of new FormData(event.target)) if (v.trim()) params.set(k, v.trim());
      location.hash = `#/tasks?${params}`;
    });
    const params = new URLSearchParams(query);
    if (!params.has('limit')) params.set('limit', '25');
    const box = document.getElementById('live-tasks');
    return live(() => api('GET', `/tasks?${params}`), (page) => {
      const rows = page.items.map((t) => html`
        <tr data-task="${t.id}">
          <td>${when(t.created_at)}</td>
          <td><a class="mono" href="#/tasks/${t.id}">${t.id}</a></td>
          <td>${t.type}</td>
          <td>${badge(t.state)}</td>
          <td>${scopeText(t)}</td>
          <td>${tags(t.selectors)}</td>
          <td>${t.runs}/${t.max_attempts}</td>
          <td class="mono">${t.instance_id ?? ''}</td>
          <td>${t.failure ? `${t.failure.reason}: ${t.failure.detail}` : ''}</td>
        </tr>`).join('');
      const next = new URLSearchParams(query);
      if (page.next) next.set('before', page.next);
      box.innerHTML = html`
        <div class="table-wrap"><table>
          <caption class="muted">Newest first${query.get('before') ? ' (older page)' : ''}</caption>
          <thead><tr><th scope="col">Created</th><th scope="col">Task</th><th scope="col">Type</th>
            <th scope="col">State</th><th scope="col">Scope</th><th scope="col">Selectors</th>
            <th scope="col">Runs</th><th scope="col">Instance</th><th scope="col">Failure</th></tr></thead>
          <tbody>${raw(rows || '<tr><td colspan="9" class="muted">No tasks match.</td></tr>')}</tbody>
        </table></div>
        <nav class="pager" aria-label="Pages">
          ${raw(query.get('before') ? html`<a href="#/tasks?${withoutBefore(query)}">Newest</a>` : '')}
          ${raw(page.next ? html`<a href="#/tasks?${next}">Older</a>` : '')}
        </nav>`;
    });
  }

  function withoutBefore(query) {
    const q = new URLSearchParams(query);
    q.delete('before');
    return q.toString();
  }

  // ---- one task --------------------------------------------------------------------------

  function taskView(id) {
    main.innerHTML = html`<div id="live-task"><p class="muted">Loading…</p></div>
      <section class="card" aria-labelledby="h-output"><h2 id="h-output">Log <span class="muted" id="task-log-state">(following)</span></h2>
        <pre class="task-log" id="task-log" tabindex="0" aria-live="polite"></pre></section>`;
    const box = document.getElementById('live-task');
    followLog(id);
    return live(async () => {
      const path = `/tasks/${encodeURIComponent(id)}`;
      const [task, log, attempts] = await Promise.all([
        api('GET', path), api('GET', `${path}/selection-log`), api('GET', `${path}/attempts`),
      ]);
      return { task, log: log.items, attempts: attempts.items };
    }, ({ task, log, attempts }) => redraw(box, drawTask(task, log, attempts)));
  }

  function drawTask(t, log, attempts) {
    const decisions = log.filter((e) => e.kind === 'decision');
    const lastDecision = decisions[decisions.length - 1];
    const assigned = log.filter((e) => e.kind === 'assigned').pop();
    const runs = `${t.runs} run${t.runs === 1 ? '' : 's'}`;
    let headline;
    if (t.failure) headline = `${t.state.replace('_', ' ')}: ${t.failure.reason}: ${t.failure.detail}`;
    else if (t.state === 'succeeded') headline = `Succeeded${assigned ? ` on instance ${assigned.detail.instance_id}` : ''} after ${runs}.`;
    else if (ENDED.has(t.state)) headline = `${t.state.replace('_', ' ')} after ${runs}.`;
    else if (t.state !== 'queued' && assigned) headline = `${t.state} on instance ${assigned.detail.instance_id} (attempt ${t.attempt}).`;
    else headline = lastDecision ? lastDecision.summary : 'Waiting for the first decision.';
    const cancel = !ENDED.has(t.state) && may('pipelines:execute')
      ? html`<button type="button" class="danger" data-act="cancel-task" data-id="${t.id}" id="cancel-task">Cancel</button>` : '';
    const facts = [
      ['Type', t.type], ['Scope', scopeText(t)], ['Selectors', tags(t.selectors)],
      ['Connector', t.connector ?? '—'], ['Capabilities', t.capabilities.length ? t.capabilities.map(capText).join(', ') : '—'],
      ['Priority', t.priority], ['Attempt', `${t.attempt} (${t.runs} of ${t.max_attempts} runs used)`],
      ['Instance', t.instance_id ?? '—'], ['Waits for a delegate', t.wait_for_delegate ? 'yes' : 'no'],
      ['Assign timeout', age(t.assign_timeout_ms)], ['Execution timeout', age(t.execution_timeout_ms)],
      ['Concurrency key', t.concurrency_key ? `${t.concurrency_key} (limit ${t.concurrency_limit}, ${t.concurrency_strategy.replace('_', ' ')})` : '—'],
      ['Retries', retryText(t.retry)],
      ['Secrets', t.secrets && t.secrets.length ? t.secrets.join(', ') : '—'],
      ...(t.retry_at ? [['Next attempt due', when(t.retry_at)]] : []),
    ].map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`).join('');
    return html`
      <div class="card-head">
        <h1>Task <span class="mono">${t.id}</span></h1>
        <span id="task-state">${badge(t.state)}</span>
        <div class="actions">${raw(cancel)}</div>
      </div>
      <p class="summary-line" id="task-summary">${headline}</p>
      <div class="grid">
        <section class="card" aria-labelledby="h-facts"><h2 id="h-facts">Details</h2><dl class="facts">${raw(facts)}</dl></section>
        <section class="card" aria-labelledby="h-timeline"><h2 id="h-timeline">Timeline</h2>${raw(drawTimeline(t, log))}</section>
      </div>
      <section class="card" aria-labelledby="h-attempts"><h2 id="h-attempts">Attempts</h2>${raw(drawAttempts(t, attempts))}</section>
      <section class="card" aria-labelledby="h-result"><h2 id="h-result">Result</h2>${raw(drawResult(t))}</section>
      <section class="card" aria-labelledby="h-log"><h2 id="h-log">Selection log</h2>${raw(drawLog(log))}</section>`;
  }

  // Follows the task's log (GET /tasks/{id}/logs?follow=true) into the page until the
  // task ends or the view changes; a stream that breaks is reopened from the last chunk.
  function followLog(id, from = { attempt: 1, offset: 0 }, pause = 1000) {
    const mine = generation;
    const out = document.getElementById('task-log');
    const state = document.getElementById('task-log-state');
    const controller = new AbortController();
    const watchdog = setInterval(() => { if (mine !== generation) { controller.abort(); clearInterval(watchdog); } }, 500);
    let at = from;
    let lastAttempt = null;
    const print = (chunk) => {
      if (lastAttempt !== null && chunk.attempt !== lastAttempt) out.append(`--- attempt ${chunk.attempt} ---\n`);
      lastAttempt = chunk.attempt;
      const stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.append(chunk.cut_bytes != null ? `[... ${chunk.cut_bytes} bytes cut to keep this log within its bound ...]\n` : chunk.text);
      if (stick) out.scrollTop = out.scrollHeight;
    };
    (async () => {
      const q = `follow=true&attempt=${at.attempt}&offset=${at.offset}`;
      const response = await fetch(`/api/v1/tasks/${encodeURIComponent(id)}/logs?${q}`, {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ''}` },
        signal: controller.signal,
      });
      if (!response.ok || !response.body) throw new Error(`logs: ${response.status}`);
      state.textContent = '(following)';
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const lines = buffer.slice(0, end).split('\n');
          buffer = buffer.slice(end + 2);
          const kind = (lines.find((l) => l.startsWith('event: ')) || '').slice(7);
          const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('');
          if (kind === 'chunk') {
            const chunk = JSON.parse(data);
            print(chunk);
            at = chunk.cut_bytes != null
              ? { attempt: chunk.attempt, offset: chunk.offset + 1 }
              : { attempt: chunk.attempt, offset: chunk.offset + new TextEncoder().encode(chunk.text).length };
          } else if (kind === 'end') {
            return true;
          }
        }
      }
    })().then((ended) => {
      clearInterval(watchdog);
      if (mine !== generation) return;
      if (ended) {
        state.textContent = out.textContent ? '(complete)' : '(empty)';
        return;
      }
      setTimeout(() => { if (mine === generation) followLog(id, at, pause); }, pause);
    }, () => {
      clearInterval(watchdog);
      if (mine !== generation) return;
      state.textContent = '(reconnecting)';
      setTimeout(() => { if (mine === generation) followLog(id, at, Math.min(pause * 2, 30000)); }, pause);
    });
  }

  function capText(c) {
    if (typeof c === 'string') return c;
    return Object.values(c).join(' ');
  }

  function drawTimeline(t, log) {
    const events = [{ at: t.created_at, text: 'submitted' }];
    for (const e of log) events.push({ at: e.at, text: `${e.kind.replace('_', ' ')} (attempt ${e.attempt}): ${e.summary}` });
    if (t.started_at) events.push({ at: t.started_at, text: 'started running' });
    if (t.finished_at) events.push({ at: t.finished_at, text: `ended: ${t.state.replace('_', ' ')}` });
    events.sort((a, b) => new Date(a.at) - new Date(b.at));
    return html`<ol class="timeline" id="timeline">${raw(events.map((e) => html`<li><time datetime="${e.at}">${when(e.at)}</time>${e.text}</li>`).join(''))}</ol>`;
  }

  /** `on failed [exit:137], delegate lost; 1 s then x2 up to 5 min; another instance first`. */
  function retryText(r) {
    if (!r || r.on.length === 0) return 'never';
    const codes = r.error_codes && r.error_codes.length ? ` [${r.error_codes.join(', ')}]` : '';
    const on = r.on.map((e) => (e === 'failed' ? `failed${codes}` : e.replace('_', ' '))).join(', ');
    const wait = r.initial_delay_ms ? `${age(r.initial_delay_ms)} then x${r.backoff_factor} up to ${age(r.max_delay_ms)}` : 'at once';
    return `on ${on}; ${wait}; ${r.prefer_different_instance ? 'another instance first' : 'any instance'}`;
  }

  function drawAttempts(t, attempts) {
    if (attempts.length === 0) return '<p class="muted">Not assigned yet.</p>';
    const ended = (a) => {
      if (!a.ended_at) return t.attempt === a.attempt ? `${t.state} now` : '—';
      const why = a.failure ? `: ${a.failure.reason}${a.failure.code ? ` [${a.failure.code}]` : ''}: ${a.failure.detail}` : '';
      const next = a.retry_at ? `; retried, next due ${when(a.retry_at)}` : '';
      return `${(a.outcome ?? 'ended').replace('_', ' ')}${why}${next}`;
    };
    const rows = attempts.map((a) => html`<tr><td>${a.attempt}</td><td class="mono">${a.instance_id}</td><td>${when(a.assigned_at)}</td><td>${ended(a)}</td></tr>`).join('');
    return html`<div class="table-wrap"><table><thead><tr><th scope="col">Attempt</th><th scope="col">Instance</th>
      <th scope="col">Assigned</th><th scope="col">How it ended</th></tr></thead><tbody>${raw(rows)}</tbody></table></div>`;
  }

  function drawResult(t) {
    const parts = [];
    if (t.failure) parts.push(html`<p><strong>${t.failure.reason}</strong>: ${t.failure.detail}</p>`);
    if (t.result !== undefined) parts.push(html`<pre id="task-result">${JSON.stringify(t.result, null, 2)}</pre>`);
    if (t.progress !== undefined) parts.push(html`<h3>Last progress</h3><pre>${JSON.stringify(t.progress, null, 2)}</pre>`);
    return parts.join('') || '<p class="muted">No result yet.</p>';
  }

  function drawLog(log) {
    if (log.length === 0) return '<p class="muted">Nothing logged yet.</p>';
    // Newest first: what explains the task's state now is on top.
    return [...log].reverse().map((e) => {
      const verdicts = e.kind === 'decision' && e.detail && Array.isArray(e.detail.verdicts) ? e.detail.verdicts : null;
      return html`
        <article class="log-entry" data-kind="${e.kind}">
          <h3><time datetime="${e.at}">${when(e.at)}</time> · ${e.kind} · attempt ${e.attempt}</h3>
          <p class="summary-line">${e.summary}</p>
          ${raw(verdicts ? verdictTable(verdicts) : '')}
        </article>`;
    }).join('');
  }

  // One row per instance: the rule that kept or rejected it, and why.
  function verdictTable(verdicts) {
    if (verdicts.length === 0) return '<p class="muted">No instance in the task\'s account.</p>';
    const rows = verdicts.map((v) => html`
      <tr data-verdict="${v.verdict}">
        <td>${v.delegate}</td>
        <td class="mono">${v.hostname}</td>
        <td>${badge(v.verdict === 'eligible' ? 'eligible' : 'rejected', v.verdict === 'eligible' ? `eligible #${v.rank}` : 'rejected')}</td>
        <td>${v.rule ?? 'all rules passed'}</td>
        <td>${why(v)}</td>
      </tr>`).join('');
    return html`<div class="table-wrap"><table class="verdicts"><thead><tr><th scope="col">Delegate</th><th scope="col">Host</th>
      <th scope="col">Verdict</th><th scope="col">Rule</th><th scope="col">Why</th></tr></thead><tbody>${raw(rows)}</tbody></table></div>`;
  }

  function why(v) {
    if (v.verdict === 'eligible') {
      const bits = [];
      if (v.preferred && v.preferred.length) bits.push(`preferred: ${v.preferred.join(', ')}`);
      if (v.ahead_by) bits.push(`ahead by ${v.ahead_by}`);
      if (v.load) bits.push(`load ${v.load.active ?? ''}/${v.load.capacity ?? ''}`);
      if (v.unchecked && v.unchecked.length) bits.push(`must validate ${v.unchecked.map(capText).join(', ')}`);
      return bits.join('; ');
    }
    const d = v.detail || {};
    switch (d.reason) {
      case 'disabled': return 'its delegate is disabled';
      case 'out_of_scope': return `serves ${scopeText(d.delegate_scope || {})}, not the task's scope`;
      case 'lacks_selectors': return `lacks selectors ${(d.missing || []).join(', ')}`;
      case 'unsupported_task_type': return `does not run tasks of type ${d.task_type}`;
      case 'disconnected': return `disconnected (last heartbeat ${d.heartbeat_age_secs} s ago)`;
      case 'stale_heartbeat': return `heartbeat stale (${d.heartbeat_age_secs} s old)`;
      case 'paused': return `${d.whole_delegate ? 'its delegate is paused' : 'paused'} ${d.until ? `until ${when(d.until)}` : 'until resumed'}: ${d.note}`;
      case 'draining': return 'draining: the delegate is stopping';
      case 'spent': return `single-use: has taken its ${d.max_tasks} task(s)`;
      case 'at_capacity': return `at capacity (${d.active}/${d.capacity})`;
      case 'already_tried': return 'already tried this task';
      case 'capability_unreachable': return `cannot reach ${capText(d.capability)}: ${d.detail}`;
      default: return JSON.stringify(d);
    }
  }

  // ---- explain ---------------------------------------------------------------------------

  const SAMPLE = { account: 'acme', type: 'echo', payload: {}, selectors: [], wait_for_delegate: true };

  function explainView() {
    const account = me.caller.kind === 'api_key' ? me.caller.account : 'acme';
    const body = JSON.stringify({ ...SAMPLE, account }, null, 2);
    main.innerHTML = html`
      <h1>Explain</h1>
      <p>Which delegates would take this task now, and why the others would not. Nothing is
        submitted until you press <em>Submit task</em>.</p>
      <form class="card" id="build" aria-label="Build a task body">
        <div class="filters">
          <label>Account <input name="account" value="${account}" size="12"></label>
          <label>Org <input name="org" size="10"></label>
          <label>Project <input name="project" size="10"></label>
          <label>Type <input name="type" value="echo" size="12"></label>
          <label>Selectors (comma-separated) <input name="selectors" size="24"></label>
          <label>Connector <input name="connector" size="14"></label>
          <label class="check"><input type="checkbox" name="wait" checked> wait for a delegate</label>
          <button type="submit" class="secondary">Build body</button>
        </div>
      </form>
      <form class="card" id="explain-form">
        <label for="task-body">Task body (JSON, as for POST /api/v1/tasks)</label>
        <textarea id="task-body" spellcheck="false">${body}</textarea>
        <p class="actions">
          <button type="submit" id="explain-run">Explain</button>
          ${raw(may('pipelines:execute') ? '<button type="button" class="secondary" id="submit-task">Submit task</button>' : '')}
        </p>
      </form>
      <div id="explain-answer" aria-live="polite"></div>`;
    // One Idempotency-Key per body as it stands: a double click or a retry submits it once.
    let idempotency = null;

    document.getElementById('build').addEventListener('submit', (event) => {
      idempotency = null;
      event.preventDefault();
      const f = new FormData(event.target);
      const built = { account: f.get('account').trim(), type: f.get('type').trim(), payload: {} };
      for (const k of ['org', 'project', 'connector']) if (f.get(k).trim()) built[k] = f.get(k).trim();
      built.selectors = f.get('selectors').split(',').map((s) => s.trim()).filter(Boolean);
      built.wait_for_delegate = f.get('wait') === 'on';
      document.getElementById('task-body').value = JSON.stringify(built, null, 2);
    });
    document.getElementById('explain-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const out = document.getElementById('explain-answer');
      try {
        const answer = await api('POST', '/tasks/explain', document.getElementById('task-body').value);
        out.innerHTML = html`
          <p class="summary-line" id="explain-summary">${answer.explanation}</p>
          ${raw(verdictTable(answer.verdicts || []))}`;
        say('');
      } catch (e) {
        out.innerHTML = html`<p class="summary-line" role="alert">The body was refused: ${e.message}</p>`;
      }
    });
    const submit = document.getElementById('submit-task');
    if (submit) {
      document.getElementById('task-body').addEventListener('input', () => { idempotency = null; });
      submit.addEventListener('click', async () => {
        idempotency = idempotency || crypto.randomUUID();
        submit.disabled = true;
        try {
          const task = await api('POST', '/tasks', document.getElementById('task-body').value, { 'Idempotency-Key': idempotency });
          say(task.explanation ? `Submitted; ${task.explanation}` : 'Submitted.');
          location.hash = `#/tasks/${task.id}`;
        } catch (e) {
          say(`Not submitted: ${e.message}`, true);
        } finally {
          submit.disabled = false;
        }
      });
    }
  }

  // ---- tokens and keys -------------------------------------------------------------------

  function reloadCredentials(secret) {
    credentialsView(secret).catch((e) => say(e.message, true));
  }

  async function credentialsView(secret) {
    const mine = generation;
    if (!secret) main.innerHTML = html`<h1>Tokens &amp; keys</h1><p class="muted">Loading…</p>`;
    const [tokens, keys] = await Promise.all([api('GET', '/delegate-tokens'), api('GET', '/api-keys')]);
    if (mine !== generation) return;
    const account = me.caller.kind === 'api_key' ? me.caller.account : '';
    const edit = may('delegates:edit');
    const tokenRows = tokens.items.map((t) => html`
      <tr data-token="${t.name}">
        <td>${t.name}</td><td>${scopeText(t)}</td><td>${badge(t.status)}</td>
        <td>${when(t.created_at)}</td><td>${when(t.revoked_at)}</td>
        <td>${raw(edit && t.status === 'active' ? html`<button type="button" class="danger" data-act="revoke-token" data-id="${t.id}" id="revoke-token-${t.id}">Revoke</button>` : '')}
          ${raw(t.status === 'active' ? ['kubernetes', 'compose', 'systemd'].map((f) => html`<button type="button" data-act="install-file" data-id="${t.id}" data-format="${f}" id="install-${f}-${t.id}">${f}</button>`).join(' ') : '')}</td>
      </tr>`).join('');
    const keyRows = keys.items.map((k) => html`
      <tr data-key="${k.name}">
        <td>${k.name}</td><td>${scopeText(k)}</td><td>${tags(k.permissions)}</td>
        <td>${when(k.created_at)}</td><td>${k.revoked_at ? badge('revoked') : badge('active')}</td>
        <td>${raw(!k.revoked_at ? html`<button type="button" class="danger" data-act="revoke-key" data-id="${k.id}" id="revoke-key-${k.id}">Revoke</button>` : '')}</td>
      </tr>`).join('');
    const checks = PERMISSIONS.map((p) => html`<label class="check"><input type="checkbox" name="perm" value="${p}" ${raw(p === 'delegates:view' ? 'checked disabled' : '')}> ${p}</label>`).join('');
    main.innerHTML = html`
      <h1>Tokens &amp; keys</h1>
      ${raw(secret ? html`<div class="secret" id="secret" tabindex="-1"><strong>${secret.what} created.</strong> Copy it now; it is not shown again:<br><code id="secret-value">${secret.value}</code></div>` : '')}
      <section class="card" aria-labelledby="h-tokens">
        <div class="card-head"><h2 id="h-tokens">Delegate tokens</h2></div>
        <div class="table-wrap"><table><thead><tr><th scope="col">Name</th><th scope="col">Scope</th><th scope="col">Status</th>
          <th scope="col">Created</th><th scope="col">Revoked</th><th scope="col"><span class="muted">Action</span></th></tr></thead>
          <tbody>${raw(tokenRows || '<tr><td colspan="6" class="muted">No tokens.</td></tr>')}</tbody></table></div>
        <div id="install-box" hidden><h3 id="install-title">Install file</h3>
          <ol id="install-steps"></ol><p><a id="install-download" download>Download</a></p>
          <pre class="task-log" id="install-content" tabindex="0"></pre></div>
        ${raw(edit ? html`<h3>New token</h3><form class="inline" id="new-token">
          <label>Name <input name="name" required size="14"></label>
          <label>Account <input name="account" value="${account}" required size="12"></label>
          <label>Org <input name="org" size="10"></label><label>Project <input name="project" size="10"></label>
          <button type="submit">Create token</button></form>` : '')}
      </section>
      <section class="card" aria-labelledby="h-keys">
        <div class="card-head"><h2 id="h-keys">API keys</h2></div>
        <div class="table-wrap"><table><thead><tr><th scope="col">Name</th><th scope="col">Scope</th><th scope="col">Permissions</th>
          <th scope="col">Created</th><th scope="col">Status</th><th scope="col"><span class="muted">Action</span></th></tr></thead>
          <tbody>${raw(keyRows || '<tr><td colspan="6" class="muted">No API keys.</td></tr>')}</tbody></table></div>
        <h3>New API key</h3><form id="new-key">
          <div class="filters"><label>Name <input name="name" required size="14"></label>
          <label>Account <input name="account" value="${account}" required size="12"></label>
          <label>Org <input name="org" size="10"></label><label>Project <input name="project" size="10"></label></div>
          <fieldset><legend>Permissions</legend>${raw(checks)}</fieldset>
          <p><button type="submit">Create API key</button></p></form>
      </section>`;
    const shown = document.getElementById('secret');
    if (shown) shown.focus();
    const scopeOf = (f) => {
      const body = { name: f.get('name').trim(), account: f.get('account').trim() };
      for (const k of ['org', 'project']) if (f.get(k).trim()) body[k] = f.get(k).trim();
      return body;
    };
    const newToken = document.getElementById('new-token');
    if (newToken) {
      newToken.addEventListener('submit', async (event) => {
        event.preventDefault();
        try {
          const made = await api('POST', '/delegate-tokens', scopeOf(new FormData(newToken)));
          say('');
          reloadCredentials({ what: `Token ${made.name}`, value: made.token });
        } catch (e) { say(e.message, true); }
      });
    }
    const newKey = document.getElementById('new-key');
    newKey.addEventListener('submit', async (event) => {
      event.preventDefault();
      const f = new FormData(newKey);
      try {
        const made = await api('POST', '/api-keys', { ...scopeOf(f), permissions: f.getAll('perm') });
        say('');
        reloadCredentials({ what: `API key ${made.name}`, value: made.key });
      } catch (e) { say(e.message, true); }
    });
  }

  // ---- queue -----------------------------------------------------------------------------

  // The waiting tasks as a whole, by what holds them (GET /api/v1/queue), kept current.
  // `query`: the scope to look at (account, org, project), from the URL, as the task
  // list keeps its filters.
  function queueView(query) {
    const q = (k) => query.get(k) || '';
    main.innerHTML = html`
      <h1>Queue</h1>
      <form class="filters card" id="queue-filters" aria-label="The scope to look at">
        <label>Account <input name="account" value="${q('account')}" size="12"></label>
        <label>Org <input name="org" value="${q('org')}" size="10"></label>
        <label>Project <input name="project" value="${q('project')}" size="10"></label>
        <button type="submit">Show</button>
        <a href="#/queue">Everything this key sees</a>
      </form>
      <div id="live-queue" aria-live="off"><p class="muted">Loading…</p></div>`;
    document.getElementById('queue-filters').addEventListener('submit', (event) => {
      event.preventDefault();
      const f = new FormData(event.target);
      const wanted = new URLSearchParams([...f.entries()].filter(([, v]) => String(v).trim()));
      location.hash = `#/queue${wanted.toString() ? `?${wanted}` : ''}`;
    });
    const scope = new URLSearchParams(['account', 'org', 'project'].filter((k) => q(k)).map((k) => [k, q(k)])).toString();
    const suffix = scope ? `?${scope}` : '';
    const box = document.getElementById('live-queue');
    // Ages move every poll; the rest decides whether the table is redrawn.
    const fingerprint = (q) => JSON.stringify({ ...q, reasons: q.reasons.map(({ oldest_queued_age_ms, ...r }) => r) });
    const load = async () => {
      const [queue, history] = await Promise.all([api('GET', `/queue${suffix}`), api('GET', `/queue/history${suffix}`)]);
      return { ...queue, history };
    };
    return live(load, (q) => redraw(box, drawQueue(q) + drawHistory(q.history)), (q) => {
      for (const r of q.reasons) {
        const cell = box.querySelector(`[data-queue-age="${r.reason}:${r.delegates.join(',')}:${r.listed.join(',')}"]`);
        if (cell) cell.textContent = age(r.oldest_queued_age_ms);
      }
      return fingerprint(q);
    });
  }

  function drawQueue(q) {
    const head = html`<p id="queue-summary" class="counts">${q.summary}</p>`;
    if (q.reasons.length === 0) return head;
    const rows = q.reasons.map((r) => html`
      <tr data-reason="${r.reason}">
        <td>${badge(r.reason)}</td>
        <td class="num">${r.tasks}</td>
        <td data-queue-age="${r.reason}:${r.delegates.join(',')}:${r.listed.join(',')}">${age(r.oldest_queued_age_ms)}</td>
        <td>${r.line}<br><small class="muted">${r.explanation}</small></td>
        <td>${raw(r.sample_task_ids.map((id) => html`<a class="mono" href="#/tasks/${id}">${id.slice(-8)}</a>`).join(' '))}</td>
      </tr>`).join('');
    const more = q.shapes_truncated ? html`<p class="muted">Only the largest groups of tasks are explained; the rest count in the total.</p>` : '';
    return head + html`
      <div class="table-wrap"><table id="queue-reasons">
        <thead><tr><th scope="col">Reason</th><th scope="col">Tasks</th><th scope="col">Oldest</th>
          <th scope="col">What holds them</th><th scope="col">Sample</th></tr></thead>
        <tbody>${raw(rows)}</tbody>
      </table></div>` + more;
  }

  // The last hour as two charts, drawn here as SVG: tasks queued and running, and how
  // long the tasks assigned in each interval had waited (p50, p95, p99).
  function drawHistory(h) {
    const points = h.points || [];
    if (points.length === 0) return html`<p class="muted" id="history-empty">No history yet: the manager samples the queue every ${Math.round(h.interval_ms / 1000)} s.</p>`;
    const counts = chart('history-counts', 'Queued and running, last hour', points, [
      { key: 'queued', label: 'queued', cls: 'line-a' },
      { key: 'running', label: 'assigned or running', cls: 'line-b' },
    ], (v) => String(Math.round(v)));
    const waits = chart('history-waits', 'Time to assignment, last hour', points, [
      { key: 'wait_p50_ms', label: 'p50', cls: 'line-a' },
      { key: 'wait_p95_ms', label: 'p95', cls: 'line-b' },
      { key: 'wait_p99_ms', label: 'p99', cls: 'line-c' },
    ], (v) => age(v));
    return html`<h2>The last hour</h2><div class="charts">${raw(counts)}${raw(waits)}</div>`;
  }

  // One chart of `series` (keys of the points), over the points' times; a missing value
  // breaks its line.
  function chart(id, title, points, series, label) {
    const [w, h, left, bottom] = [560, 160, 48, 20];
    const t0 = Date.parse(points[0].at);
    const t1 = Math.max(Date.parse(points[points.length - 1].at), t0 + 1);
    const values = points.flatMap((p) => series.map((s) => p[s.key]).filter((v) => v != null));
    const top = Math.max(1, ...values);
    const x = (p) => left + ((Date.parse(p.at) - t0) / (t1 - t0)) * (w - left - 4);
    const y = (v) => 4 + (1 - v / top) * (h - bottom - 8);
    const lines = series.map((s) => {
      const runs = [];
      let run = [];
      for (const p of points) {
        if (p[s.key] == null) { if (run.length) runs.push(run); run = []; continue; }
        run.push(`${x(p).toFixed(1)},${y(p[s.key]).toFixed(1)}`);
      }
      if (run.length) runs.push(run);
      return runs.map((r) => r.length === 1
        ? html`<circle class="${s.cls}" cx="${r[0].split(',')[0]}" cy="${r[0].split(',')[1]}" r="2"></circle>`
        : html`<polyline class="${s.cls}" fill="none" stroke-width="2" points="${r.join(' ')}"></polyline>`).join('');
    }).join('');
    const legend = series.map((s) => html`<span class="key ${s.cls}">${s.label}</span>`).join(' ');
    const span = t1 - t0;
    const since = span < 60000 ? `${Math.round(span / 1000)} s ago` : `${Math.round(span / 60000)} min ago`;
    return html`
      <figure class="chart" id="${id}">
        <figcaption>${title} ${raw(legend)}</figcaption>
        <svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${title}">
          <line class="axis" x1="${left}" y1="${h - bottom}" x2="${w}" y2="${h - bottom}"></line>
          <line class="axis" x1="${left}" y1="0" x2="${left}" y2="${h - bottom}"></line>
          <text class="tick" x="${left - 4}" y="12" text-anchor="end">${label(top)}</text>
          <text class="tick" x="${left - 4}" y="${h - bottom}" text-anchor="end">0</text>
          <text class="tick" x="${left}" y="${h - 4}">${since}</text>
          <text class="tick" x="${w - 4}" y="${h - 4}" text-anchor="end">now</text>
          ${raw(lines)}
        </svg>
      </figure>`;
  }

  // ---- navigation ------------------------------------------------------------------------

  function stop() {
    generation += 1;
    if (poller) clearTimeout(poller);
    poller = null;
    refresh = () => {};
  }

  function show() {
    if (!me) return;
    stop();
    const { parts, query } = route();
    const view = parts[0] || 'delegates';
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (!notice.classList.contains('error')) say('');
    delete notice.dataset.live;
    let shown;
    if (view === 'tasks' && parts[1]) shown = taskView(parts[1]);
    else if (view === 'tasks') shown = tasksView(query);
    else if (view === 'queue') shown = queueView(query);
    else if (view === 'explain') shown = explainView();
    else if (view === 'credentials') shown = credentialsView();
    else shown = delegatesView();
    Promise.resolve(shown).catch((e) => say(e.message, true));
    document.title = `Switchboard · ${view}`;
    main.focus({ preventScroll: true });
  }

  window.addEventListener('hashchange', show);
  // The skip link focuses the content without touching the hash the views live in.
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  document.getElementById('sign-out').addEventListener('click', () => signOut('Signed out.'));

  (async () => {
    if (!sessionStorage.getItem(KEY)) return showSignIn();
    try {
      me = await api('GET', '/status');
      enter();
    } catch (e) {
      sessionStorage.removeItem(KEY);
      showSignIn(`Sign in again: ${e.message}`);
    }
  })();
})();
