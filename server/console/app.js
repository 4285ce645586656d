// airlock console: one page, hash routing, plain DOM. Text from the server only ever reaches the page through
// textContent and attribute values (the h() helper below); nothing is parsed as HTML.

const API = '/api/v1';
const REQUESTS_POLL_MS = 3000;
const STATUS_POLL_MS = 5000;
const AUDIT_ROW_LIMIT = 500;
// REQUESTS_MAX is the most requests the API lists at once.
const REQUESTS_MAX = 5000;
const CONFIRM_MS = 4000;
// API_TIMEOUT_MS bounds every API call, the body included: a stuck call gives up with a message instead of holding one
// of the browser's few connections to airlock for good. Loading the audit log may take longer (AUDIT_TIMEOUT_MS).
const API_TIMEOUT_MS = 15000;
const AUDIT_TIMEOUT_MS = 60000;
// The datetime-local inputs and the API take years up to 9999 (toISOString writes larger ones differently).
const AUDIT_MAX_INPUT = '9999-12-31T23:59';

const state = {
  me: { cn: null, role: null, serial: null },
  screen: '',
  params: new URLSearchParams(),
  generation: 0,
  notes: new Map(),
  requestsKey: '',
  // requestsSeq numbers the requests refreshes: only the newest one started may paint.
  requestsSeq: 0,
  // requestsLimit is how many requests a list asks for: the API's default (500) until an admin asks for more.
  requestsLimit: null,
  metricsSample: null,
  pending: null,
  audit: { events: [], checkpoint: null, since: null, until: '', loadedAt: null },
};

// ---------------------------------------------------------------------------------------------------------------
// DOM helpers

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'required', 'readOnly']);

/** h builds an element; children that are not nodes become text nodes, so server text is never parsed as HTML. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** fill replaces an element's children, skipping absent ones as h() does. */
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false).map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return el;
}

const $ = (selector, root = document) => root.querySelector(selector);
const isAdmin = () => state.me.role === 'admin';

// ---------------------------------------------------------------------------------------------------------------
// Formatting

const pad = (n) => String(n).padStart(2, '0');

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(iso) {
  if (!iso) return '';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (Number.isNaN(s)) return '';
  if (s < 0) return `in ${until(iso)}`;
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** agoText shows how long ago iso was; refreshAgo keeps every such text current between redraws. */
const agoText = (iso) => h('div', { class: 'small muted', dataset: { ago: iso ?? '' } }, ago(iso));

function refreshAgo() {
  for (const el of document.querySelectorAll('[data-ago]')) {
    const text = ago(el.dataset.ago);
    if (el.textContent !== text) el.textContent = text;
  }
}

function until(iso) {
  const s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  if (s < 3600) return `${Math.max(0, Math.floor(s / 60))} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} days`;
}

function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

/** time renders a timestamp with its exact UTC value on hover. */
const time = (iso) => (iso ? h('time', { datetime: iso, title: iso }, fmtTime(iso)) : h('span', { class: 'muted' }, '—'));

/** digest renders a shortened digest; the full value is in the title and selectable by copy. */
function digest(d) {
  if (!d) return h('span', { class: 'muted' }, '—');
  const hex = String(d).replace(/^sha256:/, '');
  return h('code', { class: 'digest', title: d }, `${hex.slice(0, 12)}`);
}

/** repo renders a repository name that may wrap after a slash, never inside a component. */
const repo = (name) => h('div', { class: 'repo' }, String(name).split('/').flatMap((part, i) => (i === 0 ? [part] : [h('wbr'), `/${part}`])));

const muted = (text) => h('span', { class: 'muted' }, text);
const badge = (text, kind) => h('span', { class: `badge ${kind ?? ''}` }, text);

// ---------------------------------------------------------------------------------------------------------------
// Messages

/** say shows a message under key (one per key, replaced on repeat); errors stay until dismissed or cleared. */
function say(key, kind, text) {
  const area = $('#messages');
  let box = area.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!box) {
    box = h('div', { class: `message ${kind}`, dataset: { key } });
    area.append(box);
  }
  box.className = `message ${kind}`;
  fill(box,
    h('span', { class: 'message-text' }, text),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', onclick: () => box.remove() }, '×'),
  );
  if (kind === 'info') {
    const stamp = String(Date.now());
    box.dataset.stamp = stamp;
    setTimeout(() => {
      if (box.dataset.stamp === stamp) box.remove();
    }, 8000);
  }
}

function unsay(key) {
  $('#messages').querySelector(`[data-key="${CSS.escape(key)}"]`)?.remove();
}

function errorText(err) {
  if (err instanceof ApiFailure) return `${err.message} (${err.code}${err.status ? `, HTTP ${err.status}` : ''})`;
  // A body still arriving when the time is up fails with the signal's TimeoutError.
  if (err?.name === 'TimeoutError') return `airlock did not answer in time (TIMEOUT)`;
  return String(err?.message ?? err);
}

// ---------------------------------------------------------------------------------------------------------------
// API

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** api calls airlock; the browser presents the client certificate on the TLS connection. Errors become ApiFailure.
 * A call (reading the body included) gives up after timeoutMs. */
async function api(method, path, body, { raw = false, timeoutMs = API_TIMEOUT_MS } = {}) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store', signal: AbortSignal.timeout(timeoutMs) };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err?.name === 'TimeoutError') throw new ApiFailure(0, 'TIMEOUT', `${method} ${path.split('?')[0]}: airlock did not answer within ${Math.round(timeoutMs / 1000)} s`);
    throw new ApiFailure(0, 'NETWORK', `airlock did not answer: ${err.message}`);
  }
  if (!res.ok) {
    let code = `HTTP_${res.status}`;
    let message = res.statusText || 'request failed';
    try {
      const doc = await res.json();
      if (doc && doc.error) {
        code = String(doc.error.code);
        message = String(doc.error.message);
      }
    } catch {
      // Not a JSON error body: keep the status line.
    }
    throw new ApiFailure(res.status, code, `${method} ${path.split('?')[0]}: ${message}`);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  try {
    return await res.json();
  } catch (err) {
    if (err?.name === 'TimeoutError') throw new ApiFailure(0, 'TIMEOUT', `${method} ${path.split('?')[0]}: airlock did not finish its answer within ${Math.round(timeoutMs / 1000)} s`);
    throw err;
  }
}

/** act runs an admin action from a button: disables it meanwhile, reports success or the API's error. */
async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    const text = await fn();
    unsay('action');
    if (text) say('action', 'info', text);
    return true;
  } catch (err) {
    say('action', 'error', `${what} failed: ${errorText(err)}`);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

/** confirmButton acts on a second click within a few seconds, so a destructive action takes a deliberate double step. */
function confirmButton(label, armedLabel, action) {
  let timer = null;
  const reset = () => {
    clearTimeout(timer);
    timer = null;
    button.textContent = label;
    button.classList.remove('armed');
  };
  const button = h('button', {
    type: 'button',
    class: 'danger',
    onclick: async () => {
      if (timer === null) {
        button.textContent = armedLabel;
        button.classList.add('armed');
        timer = setTimeout(reset, CONFIRM_MS);
        return;
      }
      reset();
      await action(button);
    },
  }, label);
  return button;
}

function download(filename, blob) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

// ---------------------------------------------------------------------------------------------------------------
// Layout pieces

function table(columns, rows, empty) {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
}

function screenHeader(title, description, ...tools) {
  return h('div', { class: 'screen-head' },
    h('div', {}, h('h1', {}, title), h('p', { class: 'lead' }, description)),
    h('div', { class: 'tools' }, tools));
}

function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input, hint ? h('span', { class: 'hint' }, hint) : null);
}

const readOnlyNote = () => (isAdmin() ? null : h('p', { class: 'readonly-note' }, 'Read-only: your certificate has the audit role.'));

// ---------------------------------------------------------------------------------------------------------------
// Requests

const REQUEST_STATUSES = ['pending', 'approved', 'denied', 'all'];

function requestStatusFilter() {
  const s = state.params.get('status') ?? 'pending';
  return REQUEST_STATUSES.includes(s) ? s : 'pending';
}

/** fetchRequests returns the requests of a status (newest activity first, as many as the API's default limit gives)
 * and how many there are in all. */
async function fetchRequests(status, limit = state.requestsLimit) {
  const query = new URLSearchParams();
  if (status !== 'all') query.set('status', status);
  if (limit !== null) query.set('limit', String(limit));
  const res = await api('GET', `${API}/requests${query.toString() ? `?${query}` : ''}`, undefined, { raw: true });
  const { requests } = await res.json();
  const total = Number(res.headers.get('x-total-count') ?? requests.length);
  return { list: requests, total: Number.isFinite(total) ? total : requests.length };
}

function requestActions(r) {
  if (!isAdmin()) return null;
  const note = h('input', {
    type: 'text',
    class: 'note',
    placeholder: 'note (optional)',
    'aria-label': `Note for request ${r.id}`,
    maxlength: '1000',
    value: state.notes.get(r.id) ?? '',
    dataset: { focusKey: `note:${r.id}` },
    oninput: (e) => state.notes.set(r.id, e.target.value),
  });
  const text = () => note.value.trim();
  const approve = h('button', {
    type: 'button',
    class: 'primary',
    dataset: { focusKey: `approve:${r.id}` },
    onclick: async () => {
      const ok = await act(approve, `Approving request ${r.id}`, async () => {
        const body = text() ? { note: text() } : {};
        const done = await api('POST', `${API}/requests/${r.id}/approve`, body);
        return `Approved ${done.repository}@${done.digest.slice(0, 19)}: it is pinned and signed with the mirror key.`;
      });
      if (ok) {
        state.notes.delete(r.id);
        await refreshRequests(true);
      }
    },
  }, 'Approve');
  const deny = h('button', {
    type: 'button',
    class: 'danger',
    dataset: { focusKey: `deny:${r.id}` },
    onclick: async () => {
      const ok = await act(deny, `Denying request ${r.id}`, async () => {
        const reason = text() || `denied in the console by ${state.me.cn ?? 'an admin'}`;
        const done = await api('POST', `${API}/requests/${r.id}/deny`, { reason });
        return `Denied ${done.repository}@${done.digest.slice(0, 19)}: later pulls keep being refused.`;
      });
      if (ok) {
        state.notes.delete(r.id);
        await refreshRequests(true);
      }
    },
  }, 'Deny');
  const buttons = r.status === 'pending' ? [approve, deny] : r.status === 'denied' ? [approve] : [deny];
  return h('div', { class: 'row-actions' }, note, buttons);
}

function requestRow(r) {
  const statusKind = { pending: 'warn', approved: 'ok', denied: 'bad' }[r.status] ?? '';
  const decision = r.decidedBy || r.decidedAt || r.note
    ? h('div', { class: 'small' }, r.decidedBy ? `${r.status} by ${r.decidedBy}` : '', r.decidedAt ? h('div', { class: 'muted' }, fmtTime(r.decidedAt)) : null, r.note ? h('div', { class: 'note-text' }, `“${r.note}”`) : null)
    : null;
  return h('tr', { dataset: { request: String(r.id) } },
    h('td', { class: 'num' }, String(r.id)),
    h('td', {}, repo(r.repository), r.tag ? h('div', { class: 'small muted' }, `tag ${r.tag}`) : null),
    h('td', {}, digest(r.digest)),
    h('td', {}, r.requestedBy ?? muted('—')),
    h('td', { class: 'num' }, String(r.count)),
    h('td', {}, time(r.lastSeen), agoText(r.lastSeen), r.firstSeen !== r.lastSeen ? h('div', { class: 'small muted' }, 'first ', time(r.firstSeen)) : null),
    h('td', {}, badge(r.status, statusKind), decision),
    isAdmin() ? h('td', {}, requestActions(r)) : null);
}

function requestsTable({ list, total }, status) {
  const columns = ['#', 'Repository', 'Digest', 'Requested by', 'Refusals', 'Last refused', 'Status'];
  if (isAdmin()) columns.push('Decide');
  const empty = status === 'pending' ? 'No pending requests. A pull of an image that policy does not admit creates one.' : `No ${status === 'all' ? '' : `${status} `}requests.`;
  const more = total > list.length
    ? h('p', { class: 'small muted' }, `Showing the ${list.length} with the newest activity of ${total}. `,
      list.length < REQUESTS_MAX
        ? h('button', { type: 'button', dataset: { focusKey: 'show-all' }, onclick: () => { state.requestsLimit = Math.min(total, REQUESTS_MAX); void route(); } }, total > REQUESTS_MAX ? `Show ${REQUESTS_MAX}` : `Show all ${total}`)
        : null)
    : null;
  return h('div', {}, more, table(columns, list.map(requestRow), empty));
}

async function renderRequests(view, gen) {
  const status = requestStatusFilter();
  const select = h('select', {
    'aria-label': 'Request status',
    onchange: (e) => {
      location.hash = `#/requests?status=${e.target.value}`;
    },
  }, REQUEST_STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)));
  const list = await fetchRequests(status);
  if (gen !== state.generation) return;
  state.requestsKey = JSON.stringify(list);
  fill(view,
    screenHeader('Requests', 'Pulls that policy refused wait here. Approving pins the digest and signs it with the mirror key; denying keeps it refused.',
      field('Status', select), h('span', { id: 'requests-updated', class: 'small muted live' }, `live · ${fmtTime(new Date().toISOString())}`)),
    readOnlyNote(),
    h('div', { id: 'requests-table' }, requestsTable(list, status)));
}

/** refreshRequests polls the pending count (the tab badge) and, on the Requests screen, redraws the table when it
 * changed. Only the newest refresh started paints, and only onto the screen and filter it was started for: an older,
 * slower answer (another filter's rows) is dropped. */
async function refreshRequests(force = false) {
  const seq = ++state.requestsSeq;
  const gen = state.generation;
  const onScreen = state.screen === 'requests';
  const status = requestStatusFilter();
  const newest = () => seq === state.requestsSeq;
  const sameView = () => gen === state.generation && state.screen === 'requests' && requestStatusFilter() === status;
  try {
    // The badge needs only the count; the list of pending requests is fetched in full when it is on screen.
    const pending = await fetchRequests('pending', onScreen && status === 'pending' ? state.requestsLimit : 1);
    if (!newest()) return;
    state.pending = pending.total;
    const count = $('#pending-count');
    count.textContent = String(pending.total);
    count.hidden = pending.total === 0;
    if (onScreen) {
      const list = status === 'pending' ? pending : await fetchRequests(status);
      if (!newest() || !sameView()) return;
      const key = JSON.stringify(list);
      const holder = $('#requests-table');
      if (holder && (force || key !== state.requestsKey)) {
        state.requestsKey = key;
        redrawKeepingFocus(holder, () => requestsTable(list, status));
      }
      const stamp = $('#requests-updated');
      if (stamp) stamp.textContent = `live · ${fmtTime(new Date().toISOString())}`;
    }
    unsay('poll-requests');
  } catch (err) {
    if (newest()) say('poll-requests', 'error', `Could not refresh requests: ${errorText(err)}`);
  }
}

/** redrawKeepingFocus replaces holder's content; a focused control (a note, a row's button) that has a counterpart
 * with the same data-focus-key in the new content gets the focus back, a text field its selection too. */
function redrawKeepingFocus(holder, content) {
  const active = document.activeElement;
  const focusKey = active && holder.contains(active) ? active.dataset?.focusKey : undefined;
  const selection = focusKey && typeof active.selectionStart === 'number' ? [active.selectionStart, active.selectionEnd] : null;
  fill(holder, content());
  if (!focusKey) return;
  const again = holder.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
  if (!again) return;
  again.focus();
  if (selection && typeof again.setSelectionRange === 'function') {
    const end = again.value.length;
    again.setSelectionRange(Math.min(selection[0], end), Math.min(selection[1], end));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Images

function admissionCell(img) {
  const how = { pin: 'pinned', approval: 'approved', publisher: 'publisher signature', index: 'in an admitted index' }[img.admission] ?? img.admission;
  return h('td', {},
    badge(how, img.admission),
    img.approvedBy ? h('div', { class: 'small' }, `by ${img.approvedBy}`) : null,
    img.publisherKey ? h('div', { class: 'small' }, 'key ', h('code', { title: img.publisherKey }, img.publisherKey.slice(0, 16))) : null,
    h('div', { class: 'small muted' }, fmtTime(img.admittedAt)));
}

function signatureCell(img) {
  if (!img.signature) return h('td', {}, badge('not signed', 'bad'));
  return h('td', {},
    badge('signed', 'ok'),
    h('div', { class: 'small' }, time(img.signedAt)),
    img.signingKey ? h('div', { class: 'small' }, 'key ', h('code', { title: img.signingKey }, img.signingKey.slice(0, 16))) : null);
}

function imageActions(img) {
  const reason = h('input', { type: 'text', class: 'note', placeholder: 'reason (required)', 'aria-label': `Reason to revoke ${img.repository}@${img.digest}`, maxlength: '1000' });
  const revoke = confirmButton('Revoke', 'Confirm revoke', async (button) => {
    if (!reason.value.trim()) {
      say('action', 'error', 'A revocation needs a reason.');
      reason.focus();
      return;
    }
    const ok = await act(button, `Revoking ${img.repository}@${img.digest.slice(0, 19)}`, async () => {
      const r = await api('POST', `${API}/images/revoke`, { repository: img.repository, digest: img.digest, reason: reason.value.trim() });
      return `Revoked ${r.repository}@${r.digest.slice(0, 19)}: no longer served, signature dropped, ${r.removedBlobs} cached blobs (${bytes(r.removedBytes)}) removed.`;
    });
    if (ok) await route();
  });
  return h('div', { class: 'row-actions' }, reason, revoke);
}

async function renderImages(view, gen) {
  const { images } = await api('GET', `${API}/images`);
  if (gen !== state.generation) return;
  const columns = ['Repository', 'Digest', 'Tags', 'Admitted', 'Signature', 'Size'];
  if (isAdmin()) columns.push('Revoke');
  const rows = images.map((img) => h('tr', {},
    h('td', {}, repo(img.repository)),
    h('td', {}, digest(img.digest)),
    h('td', {}, img.tags.length ? img.tags.map((t) => h('span', { class: 'chip' }, t)) : muted('—')),
    admissionCell(img),
    signatureCell(img),
    h('td', { class: 'num' }, bytes(img.sizeBytes), h('div', { class: 'small muted' }, `${bytes(img.cachedBytes)} cached`)),
    isAdmin() ? h('td', {}, imageActions(img)) : null));
  fill(view,
    screenHeader('Images', 'Digests that policy admits and that were pulled or approved at least once, each signed with the mirror key.',
      h('button', { type: 'button', onclick: () => route() }, 'Refresh')),
    readOnlyNote(),
    table(columns, rows, 'No admitted images yet.'));
}

// ---------------------------------------------------------------------------------------------------------------
// Pins

function pinForm() {
  const repository = h('input', { type: 'text', name: 'repository', required: true, placeholder: 'docker.io/library/alpine', size: '32' });
  const dig = h('input', { type: 'text', name: 'digest', required: true, placeholder: 'sha256:…', size: '40', pattern: 'sha256:[a-f0-9]{64}' });
  const tag = h('input', { type: 'text', name: 'tag', placeholder: 'optional', size: '10' });
  const note = h('input', { type: 'text', name: 'note', placeholder: 'optional', size: '24' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add pin');
  return h('form', {
    class: 'card form-row',
    'aria-label': 'Add a pin',
    onsubmit: async (e) => {
      e.preventDefault();
      const body = { repository: repository.value.trim(), digest: dig.value.trim() };
      if (tag.value.trim()) body.tag = tag.value.trim();
      if (note.value.trim()) body.note = note.value.trim();
      const ok = await act(submit, 'Adding the pin', async () => {
        const p = await api('POST', `${API}/pins`, body);
        return `Pinned ${p.repository}${p.tag ? `:${p.tag}` : ''}@${p.digest.slice(0, 19)} (pin ${p.id}).`;
      });
      if (ok) await route();
    },
  }, h('h2', {}, 'Add a pin'), field('Repository', repository), field('Digest', dig), field('Tag', tag), field('Note', note), submit);
}

async function renderPins(view, gen) {
  const { pins } = await api('GET', `${API}/pins`);
  if (gen !== state.generation) return;
  const columns = ['#', 'Repository', 'Tag', 'Digest', 'Source', 'Note', 'Created'];
  if (isAdmin()) columns.push('');
  const rows = pins.map((p) => h('tr', {},
    h('td', { class: 'num' }, String(p.id)),
    h('td', {}, repo(p.repository)),
    h('td', {}, p.tag ? h('span', { class: 'chip' }, p.tag) : muted('digest only')),
    h('td', {}, digest(p.digest)),
    h('td', {}, badge(p.source, p.source)),
    h('td', {}, p.note ?? muted('—')),
    h('td', {}, time(p.createdAt), p.createdBy ? h('div', { class: 'small muted' }, `by ${p.createdBy}`) : null),
    isAdmin()
      ? h('td', {}, p.source === 'config'
        ? muted('in the config file')
        : confirmButton('Delete', 'Confirm delete', async (button) => {
          const ok = await act(button, `Deleting pin ${p.id}`, async () => {
            await api('DELETE', `${API}/pins/${p.id}`);
            return `Deleted pin ${p.id} (${p.repository}${p.tag ? `:${p.tag}` : ''}).`;
          });
          if (ok) await route();
        }))
      : null));
  fill(view,
    screenHeader('Pins', 'A pin admits a digest by name; a tag pin serves the tag from that digest without asking the upstream.'),
    isAdmin() ? pinForm() : readOnlyNote(),
    table(columns, rows, 'No pins.'));
}

// ---------------------------------------------------------------------------------------------------------------
// Publishers

function publisherForm() {
  const name = h('input', { type: 'text', name: 'name', required: true, placeholder: 'acme', size: '16' });
  const repositories = h('input', { type: 'text', name: 'repositories', required: true, placeholder: 'ghcr.io/acme/*, docker.io/acme/*', size: '40' });
  const key = h('textarea', { name: 'publicKey', required: true, rows: '5', cols: '64', placeholder: '-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----', spellcheck: 'false' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add publisher');
  return h('form', {
    class: 'card form-grid',
    'aria-label': 'Add a publisher',
    onsubmit: async (e) => {
      e.preventDefault();
      const body = {
        name: name.value.trim(),
        publicKey: key.value.trim(),
        repositories: repositories.value.split(',').map((g) => g.trim()).filter((g) => g !== ''),
      };
      const ok = await act(submit, 'Adding the publisher', async () => {
        const p = await api('POST', `${API}/publishers`, body);
        return `Added publisher ${p.name} for ${p.repositories.join(', ')}.`;
      });
      if (ok) await route();
    },
  },
  h('h2', {}, 'Add a publisher'),
  field('Name', name),
  field('Repositories', repositories, 'comma-separated globs on canonical names'),
  field('Public key (PEM)', key, 'cosign.pub or any PEM PUBLIC KEY'),
  h('div', {}, submit));
}

async function renderPublishers(view, gen) {
  const { publishers } = await api('GET', `${API}/publishers`);
  if (gen !== state.generation) return;
  const columns = ['Name', 'Repositories', 'Key', 'Source', 'Created'];
  if (isAdmin()) columns.push('');
  const rows = publishers.map((p) => h('tr', {},
    h('td', {}, h('strong', {}, p.name)),
    h('td', {}, p.repositories.map((g) => h('span', { class: 'chip' }, g))),
    h('td', {},
      p.fingerprints.map((f) => h('div', {}, h('code', { title: f }, f.slice(0, 24)))),
      h('details', {}, h('summary', { class: 'small' }, 'PEM'), h('pre', { class: 'pem' }, p.publicKey))),
    h('td', {}, badge(p.source, p.source)),
    h('td', {}, time(p.createdAt), p.createdBy ? h('div', { class: 'small muted' }, `by ${p.createdBy}`) : null),
    isAdmin()
      ? h('td', {}, p.source === 'config'
        ? muted('in the config file')
        : confirmButton('Delete', 'Confirm delete', async (button) => {
          const ok = await act(button, `Deleting publisher ${p.name}`, async () => {
            await api('DELETE', `${API}/publishers/${encodeURIComponent(p.name)}`);
            return `Deleted publisher ${p.name}.`;
          });
          if (ok) await route();
        }))
      : null));
  fill(view,
    screenHeader('Publishers', 'Trusted signers: a cosign signature by one of these keys admits images in the matching repositories.'),
    isAdmin() ? publisherForm() : readOnlyNote(),
    table(columns, rows, 'No publishers.'));
}

// ---------------------------------------------------------------------------------------------------------------
// Drift

async function renderDrift(view, gen) {
  const { drift } = await api('GET', `${API}/drift`);
  if (gen !== state.generation) return;
  const rows = drift.map((d) => h('tr', {},
    h('td', {}, repo(d.repository)),
    h('td', {}, h('span', { class: 'chip' }, d.tag)),
    h('td', {}, digest(d.pinnedDigest)),
    h('td', {}, digest(d.upstreamDigest)),
    h('td', {}, time(d.firstSeen)),
    h('td', {}, time(d.lastSeen), agoText(d.lastSeen))));
  fill(view,
    screenHeader('Drift', 'Pinned tags whose upstream now points at another digest. The pin keeps being served; to follow the upstream, pin the new digest.',
      h('button', { type: 'button', onclick: () => route() }, 'Refresh')),
    table(['Repository', 'Tag', 'Pinned digest', 'Upstream digest', 'First seen', 'Last seen'], rows, 'No drift: every pinned tag still matches its upstream.'));
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates

function pemBundle(c) {
  return [
    `# airlock client certificate ${c.name} (role ${c.role}), serial ${c.serial}, valid until ${c.notAfter}`,
    '# For Docker/containerd certs.d, split it into client.cert, client.key and ca.crt (in this order below).',
    c.certificate.trim(),
    c.privateKey.trim(),
    c.ca.trim(),
    '',
  ].join('\n');
}

function certForm() {
  const name = h('input', { type: 'text', name: 'name', required: true, placeholder: 'ci-runner-1', size: '20', pattern: '[A-Za-z0-9][A-Za-z0-9._@\\-]{0,63}' });
  const role = h('select', { name: 'role' }, ['pull', 'audit', 'admin'].map((r) => h('option', { value: r }, r)));
  const days = h('input', { type: 'number', name: 'days', min: '1', max: '3650', value: '365', size: '6' });
  const password = h('input', { type: 'password', name: 'p12Password', placeholder: 'empty', size: '12', autocomplete: 'new-password' });
  // An empty Days means the default, 365; anything else is sent as given, after the form's checks (1 to 3650).
  const body = () => ({ name: name.value.trim(), role: role.value, days: days.value.trim() === '' ? 365 : Number(days.value) });
  const pem = h('button', { type: 'submit', class: 'primary' }, 'Issue PEM bundle');
  const p12 = h('button', {
    type: 'button',
    onclick: async () => {
      // The same checks as the PEM button's submit: the whole form, Days included.
      if (!form.reportValidity()) return;
      const ok = await act(p12, 'Issuing the certificate', async () => {
        const res = await api('POST', `${API}/certs?format=p12`, { ...body(), p12Password: password.value }, { raw: true });
        const serial = res.headers.get('x-airlock-serial') ?? '?';
        download(`${body().name}.p12`, await res.blob());
        return `Issued ${body().name} (${body().role}), serial ${serial}: ${body().name}.p12 downloaded. airlock keeps no copy of the key.`;
      });
      if (ok) await route();
    },
  }, 'Issue PKCS#12');
  const form = h('form', {
    class: 'card form-row',
    'aria-label': 'Issue a certificate',
    onsubmit: async (e) => {
      e.preventDefault();
      // A password asks for the encrypted file: Enter in the password field, or the PEM button with one filled in,
      // must not hand out an unencrypted key.
      if (password.value !== '') {
        p12.click();
        return;
      }
      const ok = await act(pem, 'Issuing the certificate', async () => {
        const c = await api('POST', `${API}/certs`, body());
        download(`${c.name}.pem`, new Blob([pemBundle(c)], { type: 'application/x-pem-file' }));
        return `Issued ${c.name} (${c.role}), serial ${c.serial}, valid until ${fmtTime(c.notAfter)}: ${c.name}.pem downloaded. airlock keeps no copy of the key.`;
      });
      if (ok) await route();
    },
  }, h('h2', {}, 'Issue a certificate'), field('Name (CN)', name), field('Role', role), field('Days', days), field('PKCS#12 password', password), pem, p12);
  return form;
}

function certStatus(c) {
  if (c.revokedAt) return h('td', {}, badge('revoked', 'bad'), h('div', { class: 'small' }, fmtTime(c.revokedAt)), c.revokeReason ? h('div', { class: 'note-text small' }, `“${c.revokeReason}”`) : null);
  if (new Date(c.notAfter).getTime() < Date.now()) return h('td', {}, badge('expired', 'bad'));
  return h('td', {}, badge('valid', 'ok'));
}

function certActions(c) {
  if (c.revokedAt || new Date(c.notAfter).getTime() < Date.now()) return h('td', {});
  const mine = c.serial === state.me.serial;
  const reason = h('input', { type: 'text', class: 'note', placeholder: 'reason (optional)', 'aria-label': `Reason to revoke ${c.name}`, maxlength: '1000' });
  const revoke = confirmButton(mine ? 'Revoke (yours!)' : 'Revoke', 'Confirm revoke', async (button) => {
    const ok = await act(button, `Revoking ${c.name}`, async () => {
      const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
      const r = await api('POST', `${API}/certs/${encodeURIComponent(c.serial)}/revoke`, body);
      return `Revoked ${r.name} (serial ${r.serial}); airlock refuses it from now on.`;
    });
    if (ok) await route();
  });
  return h('td', {}, h('div', { class: 'row-actions' }, reason, revoke));
}

async function renderCerts(view, gen) {
  const head = screenHeader('Certificates', 'Client certificates issued by this airlock. The role travels in the certificate: pull, audit or admin.');
  if (!isAdmin()) {
    fill(view, head, h('p', { class: 'empty' }, 'Listing and issuing client certificates needs the admin role; your certificate has the audit role.'));
    return;
  }
  const { certs } = await api('GET', `${API}/certs`);
  if (gen !== state.generation) return;
  const rows = certs.map((c) => h('tr', { class: c.revokedAt ? 'dim' : '' },
    h('td', {}, h('strong', {}, c.name), c.serial === state.me.serial ? h('div', { class: 'small muted' }, 'this browser') : null),
    h('td', {}, badge(c.role, c.role)),
    h('td', {}, h('code', { class: 'serial', title: c.serial }, c.serial.length > 20 ? `${c.serial.slice(0, 20)}…` : c.serial)),
    h('td', {}, time(c.issuedAt), c.issuedBy ? h('div', { class: 'small muted' }, `by ${c.issuedBy}`) : null),
    h('td', {}, time(c.notAfter), new Date(c.notAfter).getTime() > Date.now() ? h('div', { class: 'small muted' }, `in ${until(c.notAfter)}`) : null),
    certStatus(c),
    certActions(c)));
  fill(view, head, certForm(), table(['Name', 'Role', 'Serial', 'Issued', 'Expires', 'Status', 'Revoke'], rows, 'No certificates issued yet.'));
}

// ---------------------------------------------------------------------------------------------------------------
// Audit

const toLocalInput = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;

// localTime reads a datetime-local value: null when empty, undefined when it is no time the API takes (a year past
// 9999, which toISOString cannot write as the API expects, or a value the input could not parse).
function localTime(value, bad) {
  if (bad) return undefined;
  if (!value) return null;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(value)) return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

// auditRange is the query of the range the inputs show, or the error that keeps it from being loaded or downloaded.
// From starts as the last 24 hours, written into its input; an empty From means from the first event.
function auditRange() {
  const a = state.audit;
  if (a.since === null) a.since = toLocalInput(new Date(Date.now() - 24 * 3600 * 1000));
  const query = new URLSearchParams();
  const since = localTime(a.since, a.sinceBad);
  const until = localTime(a.until, a.untilBad);
  if (since === undefined) return { query, error: 'From is not a valid time (years up to 9999).' };
  if (until === undefined) return { query, error: 'To is not a valid time (years up to 9999).' };
  if (since && until && until.getTime() < since.getTime()) return { query, error: 'To is before From.' };
  if (since) query.set('since', since.toISOString());
  if (until) query.set('until', until.toISOString());
  return { query, error: null };
}

async function loadAudit() {
  const { query, error } = auditRange();
  if (error) throw new Error(error);
  query.set('format', 'jsonl');
  const res = await api('GET', `${API}/audit?${query}`, undefined, { raw: true, timeoutMs: AUDIT_TIMEOUT_MS });
  const events = [];
  let checkpoint = null;
  for (const line of (await res.text()).split('\n')) {
    if (line.trim() === '') continue;
    const e = JSON.parse(line);
    if (e.type === 'checkpoint') checkpoint = e;
    else events.push(e);
  }
  events.reverse();
  state.audit.events = events;
  state.audit.checkpoint = checkpoint;
  state.audit.loadedAt = new Date();
  unsay('audit-load');
}

function clearAudit() {
  state.audit.events = [];
  state.audit.checkpoint = null;
  state.audit.loadedAt = null;
}

function auditRows(filters) {
  const actor = filters.actor.value.trim().toLowerCase();
  const repoText = filters.repository.value.trim().toLowerCase();
  const decision = filters.decision.value;
  const matching = state.audit.events.filter((e) =>
    (!actor || String(e.actor ?? '').toLowerCase().includes(actor)) &&
    (!repoText || String(e.repository ?? '').toLowerCase().includes(repoText)) &&
    (!decision || e.decision === decision));
  const rows = matching.slice(0, AUDIT_ROW_LIMIT).map((e) => h('tr', { class: e.decision === 'deny' ? 'deny' : '' },
    h('td', { class: 'num' }, String(e.seq)),
    h('td', {}, time(e.time)),
    h('td', { class: 'actor' }, e.actor ?? muted('—'), e.role ? h('div', { class: 'small muted' }, e.role) : null),
    h('td', {}, h('code', {}, e.action)),
    h('td', {}, e.repository ? repo(e.repository) : muted('—'), e.reference && e.reference !== e.digest ? h('div', { class: 'small muted' }, /^sha256:/.test(e.reference) ? digest(e.reference) : e.reference) : null),
    h('td', {}, digest(e.digest)),
    h('td', {}, e.decision ? badge(e.decision, e.decision === 'allow' ? 'ok' : 'bad') : muted('—')),
    h('td', { class: 'reason' }, e.reason ?? muted('—')),
    h('td', { class: 'num' }, e.status === null || e.status === undefined ? muted('—') : String(e.status)),
    h('td', { class: 'num' }, e.bytes === null || e.bytes === undefined ? muted('—') : bytes(e.bytes))));
  const loaded = state.audit.loadedAt ? ` Loaded at ${fmtTime(state.audit.loadedAt.toISOString())}.` : '';
  const summary = matching.length > AUDIT_ROW_LIMIT
    ? `Showing the newest ${AUDIT_ROW_LIMIT} of ${matching.length} matching events (${state.audit.events.length} in range). Download the export for all of them.`
    : `${matching.length} matching events (${state.audit.events.length} in range), newest first.`;
  return [h('p', { class: 'small muted' }, summary + loaded), table(['Seq', 'Time', 'Actor', 'Action', 'Repository', 'Digest', 'Decision', 'Reason', 'Status', 'Bytes'], rows, 'No events match.')];
}

async function renderAudit(view, gen) {
  const a = state.audit;
  auditRange();
  // The download links follow the inputs at once: they export what the inputs say, loaded or not, and are disabled,
  // with the reason next to them and under the form, while the inputs hold no range (a bad time, To before From).
  const rangeError = h('p', { class: 'form-error', id: 'audit-range-error', role: 'alert', hidden: true });
  const exportLinks = h('span', { class: 'exports' });
  const drawRange = () => {
    const { query: q, error } = auditRange();
    rangeError.hidden = !error;
    rangeError.textContent = error ?? '';
    const link = (format) => {
      const label = `Download ${format.toUpperCase()}`;
      if (error) return h('a', { class: 'button disabled', role: 'link', 'aria-disabled': 'true', title: error }, label);
      q.set('format', format);
      return h('a', { href: `${API}/audit?${q}`, download: `airlock-audit.${format}`, class: 'button' }, label);
    };
    fill(exportLinks, error ? h('span', { class: 'small exports-note' }, error) : null, link('jsonl'), link('csv'));
    return error;
  };
  const rangeInput = (key) => {
    const input = h('input', { type: 'datetime-local', max: AUDIT_MAX_INPUT, value: a[key] });
    const read = () => {
      a[key] = input.value;
      a[`${key}Bad`] = input.validity.badInput;
      drawRange();
    };
    input.addEventListener('input', read);
    input.addEventListener('change', read);
    return input;
  };
  const since = rangeInput('since');
  const until = rangeInput('until');
  const filters = {
    actor: h('input', { type: 'search', placeholder: 'CN contains…', size: '14' }),
    repository: h('input', { type: 'search', placeholder: 'name contains…', size: '22' }),
    decision: h('select', {}, h('option', { value: '' }, 'any'), h('option', { value: 'allow' }, 'allow'), h('option', { value: 'deny' }, 'deny')),
  };
  const results = h('div', { id: 'audit-results' });
  const checkpointHolder = h('div', {});
  const drawCheckpoint = () => {
    const cp = a.checkpoint;
    fill(checkpointHolder, cp
      ? h('p', { class: 'small muted' }, `The export ends with a checkpoint over event ${cp.seq}, signed by the mirror key `, h('code', { title: cp.keyId }, String(cp.keyId).slice(0, 16)), ' — verify a download with ', h('code', {}, 'airlock audit verify'), '.')
      : null);
  };
  const draw = () => fill(results, ...auditRows(filters));
  for (const input of Object.values(filters)) input.addEventListener('input', draw);
  const load = h('button', { type: 'submit', class: 'primary' }, 'Load');
  const form = h('form', {
    class: 'card form-row',
    'aria-label': 'Audit filters',
    onsubmit: async (e) => {
      e.preventDefault();
      a.since = since.value;
      a.sinceBad = since.validity.badInput;
      a.until = until.value;
      a.untilBad = until.validity.badInput;
      if (drawRange()) return;
      // A failed load is reported once, under its own key, as entering the screen reports it.
      load.disabled = true;
      try {
        await loadAudit();
        drawCheckpoint();
        draw();
      } catch (err) {
        say('audit-load', 'error', `Loading the audit log failed: ${errorText(err)}`);
      } finally {
        load.disabled = false;
      }
    },
  }, field('From', since, 'empty: the first event'), field('To', until, 'empty: now'), load, field('Actor', filters.actor), field('Repository', filters.repository), field('Decision', filters.decision), rangeError);
  // Entering the screen loads the range again: events keep coming. A range the inputs cannot express loads nothing and
  // says why under the form; a failed load leaves the form on screen, with the message, to be put right.
  let failure = null;
  if (drawRange()) {
    clearAudit();
    unsay('audit-load');
  } else {
    try {
      await loadAudit();
    } catch (err) {
      failure = err;
      clearAudit();
    }
  }
  if (gen !== state.generation) return;
  if (failure) say('audit-load', 'error', `Loading the audit log failed: ${errorText(failure)}`);
  drawCheckpoint();
  fill(view,
    screenHeader('Audit', 'Every pull, refusal, admission and admin action, hash-chained. Loading the log is itself an audited export.', exportLinks),
    form,
    checkpointHolder,
    results);
  draw();
}

// ---------------------------------------------------------------------------------------------------------------
// Status strip

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function stat(label, value, kind, title) {
  return h('span', { class: `stat ${kind ?? ''}`, title }, h('span', { class: 'stat-label' }, label), ' ', h('span', { class: 'stat-value' }, value));
}

async function refreshStatus() {
  const strip = $('#status');
  const items = [];
  try {
    const health = await api('GET', '/healthz');
    const up = (Date.now() - new Date(health.startedAt).getTime()) / 1000;
    items.push(stat('airlock', health.status === 'ok' ? '● healthy' : `● ${health.status}`, health.status === 'ok' ? 'ok' : 'bad', `started ${health.startedAt}`));
    items.push(stat('up', duration(Math.max(0, up))));
  } catch (err) {
    items.push(stat('airlock', '● unreachable', 'bad', errorText(err)));
  }
  try {
    const res = await api('GET', '/metrics', undefined, { raw: true });
    const samples = parseMetrics(await res.text());
    const open = samples.filter((s) => s.name === 'airlock_upstream_breaker_open' && s.value > 0).map((s) => s.labels.upstream ?? '?');
    const upstreams = samples.filter((s) => s.name === 'airlock_upstream_breaker_open').length;
    items.push(open.length
      ? stat('breaker open', open.join(', '), 'bad', 'these upstreams are failing; cached content is still served')
      : stat('upstreams', upstreams ? `${upstreams} ok` : 'ok', 'ok'));
    const cache = samples.find((s) => s.name === 'airlock_blob_cache_bytes');
    items.push(stat('cache', cache ? bytes(cache.value) : '—'));
    const total = samples.filter((s) => s.name === 'airlock_requests_total').reduce((sum, s) => sum + s.value, 0);
    const now = Date.now();
    const prev = state.metricsSample;
    state.metricsSample = { total, at: now };
    const rate = prev && now > prev.at ? ((total - prev.total) / (now - prev.at)) * 60000 : null;
    items.push(stat('requests', rate === null ? '… /min' : `${rate < 10 ? rate.toFixed(1) : Math.round(rate)} /min`, '', 'all HTTP requests, from two samples of airlock_requests_total'));
    unsay('poll-status');
  } catch (err) {
    say('poll-status', 'error', `Could not read /metrics: ${errorText(err)}`);
  }
  if (state.pending !== null) items.push(stat('pending', String(state.pending), state.pending > 0 ? 'warn' : ''));
  fill(strip, ...items);
}

// ---------------------------------------------------------------------------------------------------------------
// Routing

const SCREENS = {
  requests: renderRequests,
  images: renderImages,
  pins: renderPins,
  publishers: renderPublishers,
  drift: renderDrift,
  certs: renderCerts,
  audit: renderAudit,
};

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [name, query] = raw.split('?');
  return { name: Object.hasOwn(SCREENS, name) ? name : 'requests', params: new URLSearchParams(query ?? '') };
}

/** route draws the screen the hash names. */
async function route() {
  const { name, params } = parseHash();
  const gen = ++state.generation;
  const changed = name !== state.screen;
  state.screen = name;
  state.params = params;
  for (const a of document.querySelectorAll('#tabs a')) {
    const active = a.dataset.screen === name;
    a.classList.toggle('active', active);
    if (active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = $('#view');
  view.dataset.screen = name;
  if (changed) fill(view, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await SCREENS[name](view, gen);
    if (gen !== state.generation) return;
    unsay('screen');
  } catch (err) {
    if (gen !== state.generation) return;
    say('screen', 'error', `Could not load ${name}: ${errorText(err)}`);
    if (changed || view.dataset.failed === name) {
      // Retry draws the screen again in place; the hash has not changed, so nothing else would.
      const retry = h('button', { type: 'button', class: 'primary', dataset: { focusKey: 'retry' }, onclick: () => { retry.disabled = true; void route(); } }, 'Retry');
      fill(view, h('div', { class: 'empty failed' }, h('p', {}, 'This screen could not be loaded; see the message above.'), retry));
      view.dataset.failed = name;
      if (!changed) retry.focus();
    }
    return;
  }
  delete view.dataset.failed;
}

async function start() {
  try {
    state.me = await api('GET', '/ui/whoami');
  } catch (err) {
    say('whoami', 'error', `Could not tell who you are: ${errorText(err)}`);
  }
  const who = $('#who');
  fill(who,
    h('span', { class: 'who-cn', title: `serial ${state.me.serial ?? '?'}` }, state.me.cn ?? 'unknown'),
    badge(state.me.role ?? 'no role', state.me.role ?? 'bad'),
    isAdmin() ? null : badge('read-only', 'muted'));
  document.body.dataset.role = state.me.role ?? '';
  window.addEventListener('hashchange', () => route());
  await route();
  poll(refreshStatus, STATUS_POLL_MS);
  poll(() => {
    refreshAgo();
    return refreshRequests();
  }, REQUESTS_POLL_MS);
}

/** poll runs fn now and again ms after each run ends, so a slow answer never has a second call of its kind started
 * beside it (each would hold one of the browser's few connections to airlock). */
function poll(fn, ms) {
  const tick = async () => {
    try {
      await fn();
    } catch (err) {
      console.error(err);
    } finally {
      setTimeout(tick, ms);
    }
  };
  void tick();
}

start();
