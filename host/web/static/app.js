// evse dashboard: a small single-page app on the REST API, no build step, no dependencies.
// Views render from API data; live events (Server-Sent Events) patch what is on screen.
'use strict';

const $ = (selector, root = document) => root.querySelector(selector);
const esc = (value) => String(value ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const enc = encodeURIComponent;
const time = (iso) => (iso ? new Date(iso).toLocaleString() : '');
// A time as a datetime-local input holds it: local, as it shows and as `new Date()` reads it
// back (toISOString's UTC, read back as local, moved it by the zone's offset at each save).
const localInput = (iso) => {
  const moment = new Date(iso);
  return new Date(moment - moment.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
};
const kwh = (wh) => (wh == null ? '' : (wh / 1000).toFixed(2));

let me = null; // {name, role}
// The current view's live-event handler; events that arrive while it loads wait in `missed`.
let view = { onEvent: null, missed: [] };
let events = null;

class ApiFailure extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body ?? {});
  }
  const response = await fetch(path, options);
  const data = (response.headers.get('Content-Type') || '').includes('json')
    ? await response.json() : await response.text();
  if (response.status === 401 && path !== '/api/login') showLogin();
  if (!response.ok) throw new ApiFailure(data.error || response.statusText, response.status);
  return data;
}

const operator = () => me && me.role === 'operator';

// ---- routing -------------------------------------------------------------------------------

function parseHash() {
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  const [page, ...rest] = path.split('/');
  return { page: page || 'stations', arg: rest.map(decodeURIComponent).join('/'),
    params: new URLSearchParams(query || '') };
}

function go(page, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null));
  location.hash = `#/${page}${query.toString() ? '?' + query : ''}`;
}

const VIEWS = {};

async function render() {
  if (!me) return;
  const { page, arg, params } = parseHash();
  document.querySelectorAll('[data-nav]').forEach((a) => {
    a.classList.toggle('current', a.dataset.nav.replace(/s$/, '') === page.replace(/s$/, ''));
  });
  const main = $('#view');
  const current = { onEvent: null, missed: [] };
  view = current;
  try {
    await (VIEWS[page] || VIEWS.stations)(main, arg, params);
    // Replaying is safe: handlers apply state or refetch, and the data may predate the events.
    if (current.onEvent) current.missed.forEach(current.onEvent);
    current.missed = null;
  } catch (error) {
    if (error.status !== 401) main.innerHTML = `<p class="error">${esc(error.message)}</p>`;
  }
}

// ---- login and live events -----------------------------------------------------------------

function showLogin() {
  me = null;
  if (events) { events.close(); events = null; }
  $('#top').hidden = true;
  $('#view').innerHTML = '';
  $('#login').hidden = false;
}

function started(user) {
  me = user;
  $('#login').hidden = true;
  $('#top').hidden = false;
  $('#who').textContent = `${me.name} (${me.role})`;
  document.body.classList.toggle('read-only', !operator());
  connectEvents(); // renders the view once the live stream is open
}

function connectEvents() {
  events = new EventSource('/api/events');
  const fallback = setTimeout(render, 2000); // show data even if the stream cannot open
  events.onopen = () => {
    clearTimeout(fallback);
    $('#live').classList.add('on');
    // Render now, synchronously from here up to its first fetch, so that no event falls between
    // the stream (re)opening and the view listening; on a reopen this shows what was missed.
    render();
  };
  events.onerror = () => $('#live').classList.remove('on');
  events.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (view.missed) view.missed.push(event);
    else if (view.onEvent) view.onEvent(event);
  };
}

// Calls fn at most once per `ms`, always after the last request.
function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

// ---- shared pieces ---------------------------------------------------------------------------

function statusBadge(status, extra = '') {
  const name = status || 'unknown';
  return `<span class="badge s-${esc(name)}"${extra}>${esc(name)}</span>`;
}

function connectorBadge(c) {
  const error = c.error_code && c.error_code !== 'NoError' ? ` ${c.error_code}` : '';
  return `<span class="badge s-${esc(c.status || 'unknown')}" data-connector="${c.connector_id}"`
    + ` title="${esc(c.info || '')}">${c.connector_id}: ${esc(c.status || 'unknown')}${esc(error)}</span>`;
}

function pager(page, params, onPage) {
  const end = page.offset + page.items.length;
  const total = page.total != null ? ` of ${page.total}` : '';
  const div = document.createElement('div');
  div.className = 'pager';
  div.innerHTML = `<button class="secondary" data-prev ${page.offset ? '' : 'disabled'}>‹ Previous</button>`
    + `<span>${page.items.length ? page.offset + 1 : 0}–${end}${total}</span>`
    + `<button class="secondary" data-next ${page.next_offset != null ? '' : 'disabled'}>Next ›</button>`;
  div.querySelector('[data-prev]').onclick = () => onPage(Math.max(0, page.offset - page.limit));
  div.querySelector('[data-next]').onclick = () => onPage(page.next_offset);
  return div;
}

function filterForm(fields, params, onSubmit) {
  const form = document.createElement('form');
  form.className = 'filters';
  form.innerHTML = fields.map(([name, label, kind, choices]) => {
    const value = params.get(name) || '';
    if (kind === 'select') {
      const options = choices.map(([v, text]) =>
        `<option value="${esc(v)}" ${v === value ? 'selected' : ''}>${esc(text)}</option>`).join('');
      return `<label>${label}<select name="${name}">${options}</select></label>`;
    }
    return `<label>${label}<input name="${name}" value="${esc(value)}" type="${kind || 'text'}"></label>`;
  }).join('') + '<button type="submit">Show</button>';
  form.onsubmit = (e) => {
    e.preventDefault();
    onSubmit(Object.fromEntries(new FormData(form)));
  };
  return form;
}

function table(head, rows) {
  return `<div class="table"><table><thead><tr>${head.map((h) =>
    `<th${h.startsWith('~') ? ' class="wide"' : ''}>${esc(h.replace('~', ''))}</th>`).join('')}</tr></thead>`
    + `<tbody>${rows.join('') || `<tr><td colspan="${head.length}">Nothing here.</td></tr>`}</tbody></table></div>`;
}

// ---- stations ----------------------------------------------------------------------------------

const STATION_FILTERS = [['', 'All stations'], ['online', 'Online'], ['offline', 'Offline'],
  ['problems', 'Offline or faulted']];

function stationFaulted(s) { return s.connectors.some((c) => c.faulted); }

function stationCard(s) {
  const classes = ['card', 'station', s.online ? 'online' : 'offline'];
  if (stationFaulted(s)) classes.push('faulted');
  return `<div class="${classes.join(' ')}" data-station="${esc(s.id)}">`
    + `<div class="head"><span class="dot ${s.online ? 'online' : ''}" title="${s.online ? 'online' : 'offline'}"></span>`
    + `<a class="id" href="#/station/${enc(s.id)}">${esc(s.id)}</a>`
    + `<span class="meta state">${s.online ? 'online' : 'offline'}</span></div>`
    + `<div class="meta">${esc([s.vendor, s.model].filter(Boolean).join(' ') || 'not booted yet')}`
    + `${s.last_seen ? ' · seen ' + esc(time(s.last_seen)) : ''}</div>`
    + `<div class="connectors">${s.connectors.filter((c) => c.connector_id > 0).map(connectorBadge).join('')}</div></div>`;
}

function applyStationEvent(station, event) {
  if (event.type === 'online') {
    station.online = event.online;
    station.last_seen = new Date().toISOString();
  } else if (event.type === 'status') {
    let c = station.connectors.find((x) => x.connector_id === event.connector);
    if (!c) { c = { connector_id: event.connector }; station.connectors.push(c); }
    Object.assign(c, { status: event.status, error_code: event.error_code, info: event.info,
      faulted: event.status === 'Faulted' || event.error_code !== 'NoError' });
    station.connectors.sort((a, b) => a.connector_id - b.connector_id);
  } else {
    return false;
  }
  return true;
}

VIEWS.stations = async (main, arg, params) => {
  const filter = params.get('filter') || '';
  const q = params.get('q') || '';
  const offset = Number(params.get('offset') || 0);
  const query = new URLSearchParams({ limit: 60, offset });
  if (q) query.set('q', q);
  if (filter === 'online' || filter === 'offline') query.set('online', filter === 'online');
  if (filter === 'problems') query.set('problems', 'true');
  const [summary, page] = await Promise.all([api('GET', '/api/summary'),
    api('GET', `/api/stations?${query}`)]);
  main.innerHTML = `<h1>Stations</h1><div class="summary" id="summary"></div>`
    + '<div id="problems"></div><div id="filters"></div><div class="grid" id="stations"></div><div id="pager"></div>';
  const showSummary = (s) => {
    $('#summary').innerHTML = `<a class="ok" href="#/stations?filter=online"><b>${s.online}</b>online</a>`
      + `<a class="off" href="#/stations?filter=offline"><b>${s.offline}</b>offline</a>`
      + `<a class="bad" href="#/stations?filter=problems"><b>${s.faulted_connectors}</b>faulted connectors</a>`
      + `<a href="#/transactions?active=true"><b>${s.active_transactions}</b>charging sessions</a>`
      + `<span><b>${s.queued_commands}</b>queued commands</span>`;
  };
  showSummary(summary);
  $('#filters').append(filterForm([['q', 'Station id', 'search'],
    ['filter', 'Show', 'select', STATION_FILTERS]], params, (f) => go('stations', f)));
  const byId = new Map(page.items.map((s) => [s.id, s]));
  const showProblems = () => {
    const offline = page.items.filter((s) => !s.online);
    const faulted = page.items.filter(stationFaulted);
    $('#problems').innerHTML = offline.length || faulted.length
      ? `<div class="card problems"><b>Needs attention on this page</b><ul>`
        + faulted.map((s) => `<li><a href="#/station/${enc(s.id)}">${esc(s.id)}</a>: `
          + s.connectors.filter((c) => c.faulted).map((c) =>
            `connector ${c.connector_id} ${esc(c.status)} ${esc(c.error_code)}`).join(', ') + '</li>').join('')
        + (offline.length ? `<li>Offline: ${offline.slice(0, 20).map((s) =>
          `<a href="#/station/${enc(s.id)}">${esc(s.id)}</a>`).join(', ')}${offline.length > 20 ? ' …' : ''}</li>` : '')
        + '</ul></div>' : '';
  };
  const grid = $('#stations');
  grid.innerHTML = page.items.map(stationCard).join('') || '<p>No stations match.</p>';
  showProblems();
  $('#pager').append(pager(page, params, (o) => go('stations', { q, filter, offset: o })));
  const refreshSummary = debounce(async () => showSummary(await api('GET', '/api/summary')), 500);
  const reload = debounce(render, 1000);
  const redraw = (station) => {
    grid.querySelector(`[data-station="${CSS.escape(station.id)}"]`).outerHTML = stationCard(station);
    showProblems();
  };
  view.onEvent = async (event) => {
    const station = byId.get(event.station);
    if (station && applyStationEvent(station, event)) {
      redraw(station);
    } else if (station && event.type === 'boot') { // vendor, model, firmware may have changed
      // Connectors and online state come from their own events: a status that arrives while
      // this answer is on its way is newer than the answer.
      const { connectors, online, ...described } = await api('GET', `/api/stations/${enc(station.id)}`);
      Object.assign(station, described);
      redraw(station);
    } else if (!station && event.type === 'online' && !offset) {
      reload(); // a station we have not listed yet
    }
    if (['online', 'status', 'transaction'].includes(event.type)) refreshSummary();
  };
};

// ---- one station ---------------------------------------------------------------------------------

function operationForms(station) {
  const connectors = station.connectors.filter((c) => c.connector_id > 0);
  const connectorOptions = (withZero) => (withZero ? '<option value="0">0: whole station</option>' : '')
    + connectors.map((c) => `<option value="${c.connector_id}">${c.connector_id}</option>`).join('')
    + (connectors.length ? '' : '<option value="1">1</option>');
  const form = (name, title, fields, button = 'Send') => `<form class="card" data-op="${name}">`
    + `<h3>${title}</h3>${fields}<button type="submit">${button}</button><pre class="result"></pre></form>`;
  return '<div class="forms">'
    + form('remote-start', 'Start charging', `<div class="row"><label>Connector<select name="connectorId">${connectorOptions(false)}</select></label>`
      + '<label>Id tag<input name="idTag" required maxlength="20"></label></div>', 'Start')
    + form('remote-stop', 'Stop charging', '<label>Transaction<select name="transactionId" required></select></label>', 'Stop')
    + form('reset', 'Reset', '<label>Type<select name="type"><option>Soft</option><option>Hard</option></select></label>', 'Reset')
    + form('unlock', 'Unlock connector', `<label>Connector<select name="connectorId">${connectorOptions(false)}</select></label>`, 'Unlock')
    + form('availability', 'Availability', `<div class="row"><label>Connector<select name="connectorId">${connectorOptions(true)}</select></label>`
      + '<label>Set<select name="type"><option>Operative</option><option>Inoperative</option></select></label></div>')
    + form('get-config', 'Read configuration', '<label>Keys (comma-separated, empty = all)<input name="key"></label>', 'Read')
    + form('change-config', 'Change configuration', '<div class="row"><label>Key<input name="key" required maxlength="50"></label>'
      + '<label>Value<input name="value" required maxlength="500"></label></div>', 'Change')
    + form('limit', 'Charging limit', `<div class="row"><label>Connector<select name="connectorId">${connectorOptions(true)}</select></label>`
      + '<label>Limit<input name="limit" type="number" min="0" step="0.1" required></label>'
      + '<label>Unit<select name="unit"><option>A</option><option>W</option></select></label></div>'
      + '<label><span><input type="checkbox" name="clear"> remove limits instead</span></label>', 'Apply')
    + form('firmware', 'Update firmware', '<label>Firmware URL<input name="location" type="url" required></label>'
      + '<label>Retrieve at (empty = now)<input name="retrieveDate" type="datetime-local"></label>', 'Update')
    + form('other', 'Other operation', '<label>Operation<select name="action"></select></label>'
      + '<label>Payload (JSON)<textarea name="payload" rows="3">{}</textarea></label>')
    + '</div>';
}

// Builds [action, payload] from a form's fields.
const OPERATIONS = {
  'remote-start': (f) => ['RemoteStartTransaction', { connectorId: Number(f.connectorId), idTag: f.idTag }],
  'remote-stop': (f) => ['RemoteStopTransaction', { transactionId: Number(f.transactionId) }],
  reset: (f) => ['Reset', { type: f.type }],
  unlock: (f) => ['UnlockConnector', { connectorId: Number(f.connectorId) }],
  availability: (f) => ['ChangeAvailability', { connectorId: Number(f.connectorId), type: f.type }],
  'get-config': (f) => ['GetConfiguration', f.key.trim()
    ? { key: f.key.split(',').map((k) => k.trim()).filter(Boolean) } : {}],
  'change-config': (f) => ['ChangeConfiguration', { key: f.key, value: f.value }],
  limit: (f) => (f.clear
    ? ['ClearChargingProfile', { connectorId: Number(f.connectorId), chargingProfilePurpose: 'TxDefaultProfile' }]
    : ['SetChargingProfile', {
      connectorId: Number(f.connectorId),
      csChargingProfiles: {
        chargingProfileId: 1, stackLevel: 0, chargingProfilePurpose: 'TxDefaultProfile',
        chargingProfileKind: 'Relative',
        chargingSchedule: { chargingRateUnit: f.unit,
          chargingSchedulePeriod: [{ startPeriod: 0, limit: Number(f.limit) }] },
      },
    }]),
  firmware: (f) => ['UpdateFirmware', { location: f.location,
    retrieveDate: (f.retrieveDate ? new Date(f.retrieveDate) : new Date()).toISOString() }],
  other: (f) => [f.action, JSON.parse(f.payload || '{}')],
};

function describeCommand(c) {
  let text = `${c.action}: ${c.state}`;
  if (c.response != null) text += `\n${JSON.stringify(c.response)}`;
  if (c.error) text += `\n${c.error}`;
  if (c.state === 'queued') text += '\n(the station is offline: it gets the command when it returns)';
  return text;
}

VIEWS.station = async (main, id) => {
  const station = await api('GET', `/api/stations/${enc(id)}`);
  main.innerHTML = `<h1><span class="dot" id="st-dot"></span> ${esc(station.id)} <small class="meta" id="st-state"></small></h1>`
    + '<div class="card"><dl class="details" id="st-details"></dl></div>'
    + '<h2>Connectors</h2><div id="st-connectors"></div>'
    + `<h2>Operations</h2><div id="st-ops">${operator() ? operationForms(station) : '<p class="meta">Read-only role: operations need an operator.</p>'}</div>`
    + '<h2>Recent commands</h2><div id="st-commands"></div>'
    + `<h2>Recent transactions</h2><div id="st-transactions"></div>`
    + `<p><a href="#/log?station=${enc(station.id)}">Message log of ${esc(station.id)}</a> · `
    + `<a href="#/transactions?station=${enc(station.id)}">All its transactions</a></p>`;
  const showHead = () => {
    $('#st-dot').className = `dot ${station.online ? 'online' : ''}`;
    $('#st-state').textContent = station.online ? 'online' : 'offline';
    // a change the station takes at its reboot (RebootRequired); its key is never shown
    const pending = [station.pending_security_profile != null && `profile ${station.pending_security_profile}`,
      station.auth_key_pending && 'a new key'].filter(Boolean).join(' and ');
    const rows = [['Approval', station.approval], ['Registration', station.registration],
      ['Vendor / model', [station.vendor, station.model].filter(Boolean).join(' ')],
      ['Serial', station.serial], ['Firmware', station.firmware], ['Meter', station.meter_type],
      ['Security profile', pending ? `${station.security_profile} (pending: ${pending})` : station.security_profile],
      ['Last boot', time(station.boot_at)],
      ['Last seen', time(station.last_seen)]];
    $('#st-details').innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${esc(v)}</dd>`).join('');
    if (operator() && station.approval !== 'accepted') {
      $('#st-details').insertAdjacentHTML('beforeend', '<dt>Decide</dt><dd><button data-approve="accepted">Accept</button> '
        + '<button class="danger" data-approve="rejected">Reject</button></dd>');
      main.querySelectorAll('[data-approve]').forEach((b) => {
        b.onclick = async () => {
          Object.assign(station, await api('PATCH', `/api/stations/${enc(id)}`, { approval: b.dataset.approve }));
          showHead();
        };
      });
    }
    $('#st-connectors').innerHTML = table(['Connector', 'Status', 'Error', '~Info', '~Since'],
      station.connectors.map((c) => `<tr data-connector-row="${c.connector_id}"><td>${c.connector_id}</td>`
        + `<td>${statusBadge(c.status, ' data-status')}</td><td>${esc(c.error_code)}</td>`
        + `<td class="wide">${esc(c.info)}</td><td class="wide">${esc(time(c.timestamp))}</td></tr>`));
  };
  const showCommands = async () => {
    const page = await api('GET', `/api/stations/${enc(id)}/commands?limit=10`);
    $('#st-commands').innerHTML = table(['#', 'Operation', 'State', '~Sent', 'Answer'],
      page.items.map((c) => `<tr><td>${c.id}</td><td>${esc(c.action)}</td><td>${statusBadge(c.state)}</td>`
        + `<td class="wide">${esc(time(c.sent_at))}</td><td class="frame">${esc(c.error || JSON.stringify(c.response ?? ''))}</td></tr>`));
  };
  const showTransactions = async () => {
    const page = await api('GET', `/api/transactions?station=${enc(id)}&limit=10`);
    $('#st-transactions').innerHTML = transactionTable(page.items);
    const select = main.querySelector('[data-op="remote-stop"] select');
    if (select) {
      const active = page.items.filter((t) => !t.stop_time);
      select.innerHTML = active.map((t) => `<option value="${t.id}">#${t.id} · connector ${t.connector_id} · ${esc(t.id_tag)}</option>`).join('')
        || '<option value="">no active transaction</option>';
    }
  };
  showHead();
  await Promise.all([showCommands(), showTransactions()]);
  if (operator()) {
    const operations = await api('GET', '/api/operations');
    main.querySelector('[data-op="other"] select').innerHTML = operations.map((o) =>
      `<option>${esc(o.action)}</option>`).join('');
    main.querySelectorAll('form[data-op]').forEach((form) => {
      form.onsubmit = async (e) => {
        e.preventDefault();
        const out = form.querySelector('.result');
        const button = form.querySelector('button');
        out.className = 'result';
        let action, payload;
        try {
          [action, payload] = OPERATIONS[form.dataset.op](Object.fromEntries(new FormData(form)));
        } catch (error) {
          out.textContent = `payload: ${error.message}`;
          out.className = 'result bad';
          return;
        }
        out.textContent = `${action}: sending…`;
        button.disabled = true;
        try {
          const command = await api('POST', `/api/stations/${enc(id)}/commands`, { action, payload, wait_s: 30 });
          out.textContent = describeCommand(command);
          if (command.transaction_id) {
            out.innerHTML = `${esc(out.textContent)}\n<a href="#/transaction/${command.transaction_id}">Transaction ${command.transaction_id}</a>`;
          }
          if (command.state === 'failed' || command.state === 'expired'
            || (command.response && ['Rejected', 'Failed'].includes(command.response.status))) out.className = 'result bad';
        } catch (error) {
          out.textContent = error.message;
          out.className = 'result bad';
        } finally {
          button.disabled = false;
        }
        showCommands();
      };
    });
  }
  const refreshTransactions = debounce(showTransactions, 300);
  view.onEvent = (event) => {
    if (event.station !== station.id) return;
    if (applyStationEvent(station, event)) showHead();
    if (event.type === 'boot') api('GET', `/api/stations/${enc(id)}`).then((s) => { Object.assign(station, s); showHead(); });
    if (event.type === 'command') showCommands();
    if (event.type === 'transaction') refreshTransactions();
  };
};

// ---- transactions ------------------------------------------------------------------------------

function transactionTable(items) {
  return table(['#', 'Station', 'Conn.', 'Id tag', 'Started', '~Stopped', 'kWh', '~Reason'],
    items.map((t) => `<tr data-transaction="${t.id}"><td><a href="#/transaction/${t.id}">${t.id}</a></td>`
      + `<td><a href="#/station/${enc(t.station)}">${esc(t.station)}</a></td><td>${t.connector_id}</td>`
      + `<td>${esc(t.id_tag)}</td><td>${esc(time(t.start_time))}</td>`
      + `<td class="wide">${t.stop_time ? esc(time(t.stop_time)) : statusBadge('Charging')}</td>`
      + `<td class="num">${kwh(t.energy_wh)}</td><td class="wide">${esc(t.stop_reason)}</td></tr>`));
}

VIEWS.transactions = async (main, arg, params) => {
  const query = new URLSearchParams({ limit: 50, offset: params.get('offset') || 0 });
  for (const name of ['station', 'id_tag', 'active']) if (params.get(name)) query.set(name, params.get(name));
  const page = await api('GET', `/api/transactions?${query}`);
  main.innerHTML = '<h1>Transactions</h1><div id="filters"></div><div id="list"></div><div id="pager"></div>';
  $('#filters').append(filterForm([['station', 'Station'], ['id_tag', 'Id tag'],
    ['active', 'Show', 'select', [['', 'All'], ['true', 'Active'], ['false', 'Finished']]]],
  params, (f) => go('transactions', f)));
  $('#list').innerHTML = transactionTable(page.items);
  const current = Object.fromEntries(params);
  $('#pager').append(pager(page, params, (o) => go('transactions', { ...current, offset: o })));
  const reload = debounce(render, 500);
  view.onEvent = (event) => { if (event.type === 'transaction' && !page.offset) reload(); };
};

// An SVG chart of power (kW, left axis) and energy (kWh, right axis) over time.
function chart(series) {
  const W = 800; const H = 300; const L = 52; const R = 56; const T = 24; const B = 34;
  const points = series.filter((p) => p.power_w != null || p.energy_wh != null)
    .map((p) => ({ t: Date.parse(p.timestamp), kw: p.power_w == null ? null : p.power_w / 1000,
      kwh: p.energy_wh == null ? null : p.energy_wh / 1000 }));
  if (points.length === 0) return '<p class="meta" data-points="0">No meter values yet.</p>';
  const t0 = points[0].t; const t1 = Math.max(points[points.length - 1].t, t0 + 1000);
  const top = (values) => { const m = Math.max(0, ...values); return m > 0 ? m * 1.1 : 1; };
  const kwMax = top(points.map((p) => p.kw ?? 0)); const kwhMax = top(points.map((p) => p.kwh ?? 0));
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v, max) => H - B - (v / max) * (H - T - B);
  const line = (key, max) => points.filter((p) => p[key] != null)
    .map((p) => `${x(p.t).toFixed(1)},${y(p[key], max).toFixed(1)}`).join(' ');
  let grid = '';
  for (let i = 0; i <= 4; i += 1) {
    const gy = y((kwMax * i) / 4, kwMax);
    grid += `<line class="axis" x1="${L}" x2="${W - R}" y1="${gy}" y2="${gy}"/>`
      + `<text x="${L - 6}" y="${gy + 4}" text-anchor="end">${((kwMax * i) / 4).toFixed(1)}</text>`
      + `<text x="${W - R + 6}" y="${gy + 4}">${((kwhMax * i) / 4).toFixed(2)}</text>`;
  }
  for (let i = 0; i <= 4; i += 1) {
    const t = t0 + ((t1 - t0) * i) / 4;
    grid += `<text x="${x(t)}" y="${H - B + 16}" text-anchor="middle">${new Date(t).toLocaleTimeString()}</text>`;
  }
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="power and energy over time" data-points="${points.length}">`
    + grid
    + `<text x="${L}" y="14" class="legend-power">■ power kW</text><text x="${W - R}" y="14" text-anchor="end" class="legend-energy">energy kWh ■</text>`
    + `<polyline class="power" points="${line('kw', kwMax)}"/><polyline class="energy" points="${line('kwh', kwhMax)}"/></svg>`;
}

VIEWS.transaction = async (main, id) => {
  main.innerHTML = `<h1>Transaction ${esc(id)}</h1><div class="card"><dl class="details" id="tx-details"></dl></div>`
    + '<h2>Power and energy</h2><div class="card chart" id="tx-chart"></div><div id="tx-stop"></div>'
    + '<h2>Meter values</h2><div id="tx-values"></div>';
  let tx;
  const show = async () => {
    tx = await api('GET', `/api/transactions/${enc(id)}`);
    const last = tx.series.length ? tx.series[tx.series.length - 1] : {};
    const rows = [['Station', `<a href="#/station/${enc(tx.station)}">${esc(tx.station)}</a>`],
      ['Connector', esc(tx.connector_id)], ['Id tag', esc(tx.id_tag)],
      ['State', tx.stop_time ? 'finished' : statusBadge('Charging')],
      ['Started', esc(time(tx.start_time))], ['Stopped', esc(time(tx.stop_time))],
      ['Stop reason', esc(tx.stop_reason)], ['Meter start', `${esc(tx.meter_start)} Wh`],
      ['Energy', `${kwh(tx.energy_wh ?? last.energy_wh)} kWh`],
      ['Power now', tx.stop_time || last.power_w == null ? '' : `${(last.power_w / 1000).toFixed(2)} kW`]];
    $('#tx-details').innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('');
    $('#tx-chart').innerHTML = chart(tx.series);
    $('#tx-stop').innerHTML = operator() && !tx.stop_time
      ? '<p><button class="danger" id="stop">Stop charging</button> '
        + '<button id="close" title="For a transaction its station will never stop">Close here</button> '
        + '<span class="result" id="stop-result"></span></p>' : '';
    const stop = $('#stop');
    if (stop) {
      stop.onclick = async () => {
        stop.disabled = true;
        try {
          const c = await api('POST', `/api/stations/${enc(tx.station)}/commands`,
            { action: 'RemoteStopTransaction', payload: { transactionId: tx.id }, wait_s: 30 });
          $('#stop-result').textContent = describeCommand(c);
        } catch (error) { $('#stop-result').textContent = error.message; stop.disabled = false; }
      };
    }
    const close = $('#close');
    if (close) {  // a station replaced mid-charge never stops it: its tag would count it for ever
      close.onclick = async () => {
        if (!window.confirm(`Close transaction ${tx.id} here, without its station? Only for one`
          + ' its station will never stop: its meter stop stays unknown.')) return;
        close.disabled = true;
        try {
          await api('POST', `/api/transactions/${enc(tx.id)}/close`);
          await show();
        } catch (error) { $('#stop-result').textContent = error.message; close.disabled = false; }
      };
    }
    const values = await api('GET', `/api/transactions/${enc(id)}/meter-values?limit=100&offset=0`);
    $('#tx-values').innerHTML = table(['Time', 'Measurand', 'Phase', 'Value', 'Unit', '~Context'],
      values.items.flatMap((m) => m.sampled.map((v) => `<tr><td>${esc(time(m.timestamp))}</td>`
        + `<td>${esc(v.measurand)}</td><td>${esc(v.phase)}</td><td class="num">${esc(v.value)}</td>`
        + `<td>${esc(v.unit)}</td><td class="wide">${esc(v.context)}</td></tr>`)))
      + (values.next_offset != null ? '<p class="meta">The first 100 samples; all of them through the API.</p>' : '');
  };
  await show();
  const refresh = debounce(show, 250);
  view.onEvent = (event) => {
    if ((event.type === 'meter' || event.type === 'transaction') && event.transaction === tx.id) refresh();
  };
};

// ---- message log --------------------------------------------------------------------------------

VIEWS.log = async (main, arg, params) => {
  const query = new URLSearchParams({ limit: 100, offset: params.get('offset') || 0 });
  for (const name of ['station', 'direction', 'action', 'contains']) if (params.get(name)) query.set(name, params.get(name));
  for (const name of ['since', 'until']) if (params.get(name)) query.set(name, new Date(params.get(name)).toISOString());
  const page = await api('GET', `/api/messages?${query}`);
  main.innerHTML = '<h1>Message log</h1><div id="filters"></div><div id="list"></div><div id="pager"></div>';
  $('#filters').append(filterForm([['station', 'Station'],
    ['direction', 'Direction', 'select', [['', 'Both'], ['in', 'From station'], ['out', 'To station']]],
    ['action', 'Action'], ['contains', 'Text'], ['since', 'Since', 'datetime-local'],
    ['until', 'Until', 'datetime-local']], params, (f) => go('log', f)));
  $('#list').innerHTML = table(['Time', 'Station', '', 'Kind', 'Frame'], page.items.map((m) =>
    `<tr><td>${esc(time(m.ts))}</td><td><a href="#/station/${enc(m.station)}">${esc(m.station)}</a></td>`
    + `<td title="${m.direction === 'in' ? 'from station' : 'to station'}">${m.direction === 'in' ? '→' : '←'}</td>`
    + `<td>${esc(m.action || m.kind)}</td><td class="frame">${esc(m.text)}</td></tr>`));
  const current = Object.fromEntries(params);
  $('#pager').append(pager(page, params, (o) => go('log', { ...current, offset: o })));
};

// ---- id tags ------------------------------------------------------------------------------------

VIEWS.tags = async (main, arg, params) => {
  const query = new URLSearchParams({ limit: 50, offset: params.get('offset') || 0 });
  if (params.get('q')) query.set('q', params.get('q'));
  const page = await api('GET', `/api/id-tags?${query}`);
  main.innerHTML = '<h1>Id tags</h1><div id="tagform"></div><div id="filters"></div><div id="list"></div><div id="pager"></div>';
  if (operator()) {
    $('#tagform').innerHTML = '<form class="card tagform" id="tag-edit"><label>Id tag<input name="id_tag" required maxlength="20"></label>'
      + '<label>Parent<input name="parent" maxlength="20"></label><label>Expires<input name="expiry" type="datetime-local"></label>'
      + '<label>Max. active<input name="max_active" type="number" min="1" value="1"></label>'
      + '<label><span><input type="checkbox" name="blocked"> blocked</span></label>'
      + '<button type="submit">Save</button><span class="error" id="tag-error"></span></form>';
    const form = $('#tag-edit');
    form.onsubmit = async (e) => {
      e.preventDefault();
      const f = Object.fromEntries(new FormData(form));
      try {
        await api('PUT', `/api/id-tags/${enc(f.id_tag)}`, { parent: f.parent || null,
          expiry: f.expiry ? new Date(f.expiry).toISOString() : null,
          blocked: Boolean(f.blocked), max_active: Number(f.max_active || 1) });
        render();
      } catch (error) { $('#tag-error').textContent = error.message; }
    };
  }
  $('#filters').append(filterForm([['q', 'Search', 'search']], params, (f) => go('tags', f)));
  $('#list').innerHTML = table(['Id tag', 'Parent', 'Expires', 'Blocked', 'Max. active', ''],
    page.items.map((t) => `<tr data-tag="${esc(t.id_tag)}"><td>${esc(t.id_tag)}</td><td>${esc(t.parent)}</td>`
      + `<td>${esc(time(t.expiry))}</td><td>${t.blocked ? 'yes' : ''}</td><td>${t.max_active}</td>`
      + `<td>${operator() ? '<button class="secondary" data-edit>Edit</button> <button class="danger" data-delete>Delete</button>' : ''}</td></tr>`));
  const byTag = new Map(page.items.map((t) => [t.id_tag, t]));
  main.querySelectorAll('[data-tag]').forEach((row) => {
    const tag = byTag.get(row.dataset.tag);
    const edit = row.querySelector('[data-edit]');
    if (!edit) return;
    edit.onclick = () => {
      const form = $('#tag-edit');
      const field = form.elements;
      field.id_tag.value = tag.id_tag;
      field.parent.value = tag.parent || '';
      field.expiry.value = tag.expiry ? localInput(tag.expiry) : '';
      field.max_active.value = tag.max_active;
      field.blocked.checked = tag.blocked;
      form.scrollIntoView();
    };
    row.querySelector('[data-delete]').onclick = async () => {
      if (!window.confirm(`Delete id tag ${tag.id_tag}?`)) return;
      await api('DELETE', `/api/id-tags/${enc(tag.id_tag)}`);
      render();
    };
  });
  const current = Object.fromEntries(params);
  $('#pager').append(pager(page, params, (o) => go('tags', { ...current, offset: o })));
};

// ---- start ----------------------------------------------------------------------------------------

$('#login-form').onsubmit = async (e) => {
  e.preventDefault();
  const form = e.target;
  try {
    $('#login-error').textContent = '';
    const fields = Object.fromEntries(new FormData(form));
    const user = await api('POST', '/api/login', { name: fields.name, password: fields.password });
    form.elements.password.value = '';
    started(user);
  } catch (error) {
    $('#login-error').textContent = error.message;
  }
};

$('#logout').onclick = async () => {
  await api('POST', '/api/logout').catch(() => null);
  showLogin();
};

window.addEventListener('hashchange', render);

api('GET', '/api/me').then(started).catch(() => showLogin());
