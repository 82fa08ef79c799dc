// The activity-hub web console: log in, follow your own feed live over Server-Sent
// Events with explicit acks, and publish when your roles allow it. Plain browser APIs
// against the hub's REST routes; no framework, no build step, nothing from elsewhere.
//
// Session: the login answer (tokens, expiries, user) lives in sessionStorage; the access
// token is refreshed at 3/4 of its lifetime and on a 401 (one refresh at a time: refresh
// tokens are single use).
// Feed: one EventSource for a consumer id kept in localStorage. EventSource reconnects by
// itself after a dropped stream, sending Last-Event-ID; when it gives up (an error status
// such as 401 or 503), the console re-creates it after a backoff, resuming after the last
// seq it saw. Every received event is rendered, never de-duplicated: a repeat would be
// the server's fault and should be visible. Acks are cumulative and batched.

const SESSION_KEY = 'activity-hub.console.session';
const CONSUMER_KEY = 'activity-hub.console.consumer';
const WINDOW = 64; // events in flight before the server waits for an ack
const ACK_DELAY_MS = 250; // batch acks this long...
const ACK_BATCH = WINDOW / 2; // ...or until this many are unacked
const ACK_RETRY_MS = 1000;
const BACKOFF_MAX_MS = 10000;
const FEED_MAX = 1000; // rendered items kept; older ones are removed from the page
const REFRESH_RETRY_MS = 5000;
const CALL_TIMEOUT_MS = 15000; // a REST call not answered by then has failed
const ROLES_THAT_PUBLISH = ['USER_ROLE_PUBLISHER', 'USER_ROLE_ADMIN'];
const CODE_ABORTED = 10; // a newer stream took over this consumer (another tab)
const CODE_UNAUTHENTICATED = 16;

const $ = (id) => document.getElementById(id);

/** An error answer of the hub (`{code, message, details}`), or a network failure (status 0). */
class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------- errors shown

const errors = new Map(); // source -> message

function showError(source, message) {
  errors.set(source, message);
  renderErrors();
}

function clearError(source) {
  if (errors.delete(source)) renderErrors();
}

function renderErrors() {
  const list = $('error');
  list.replaceChildren(
    ...[...errors].map(([source, message]) => {
      const li = document.createElement('li');
      li.dataset.source = source;
      li.textContent = message;
      return li;
    }),
  );
  $('errors').hidden = errors.size === 0;
}

// ---------------------------------------------------------------- HTTP

let session = null; // {accessToken, expiresAtMs, refreshToken, refreshExpiresAtMs, user}
let refreshing = null; // the refresh in flight, shared by every caller
let refreshTimer = null;

/** A JSON call; with `auth`, carries the access token and refreshes it once on a 401. */
async function api(method, path, body, { auth = true } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let token = null;
    if (auth) {
      if (!session) throw new ApiError(401, 'not logged in', CODE_UNAUTHENTICATED);
      if (stale()) await refresh();
      token = session.accessToken;
      headers.authorization = `Bearer ${token}`;
    }
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    } catch (e) {
      throw new ApiError(0, `the hub cannot be reached (${e.message})`);
    }
    if (res.status === 401 && auth && attempt === 0 && session) {
      // Unless a refresh has replaced the token since this call was sent.
      if (session.accessToken === token) await refresh();
      continue;
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: the status text below says what happened
    }
    if (!res.ok) {
      const message = (json && json.message) || text.trim() || `${res.status} ${res.statusText}`;
      throw new ApiError(res.status, message, json && json.code);
    }
    return json;
  }
}

// ---------------------------------------------------------------- session

function saveSession(answer) {
  session = {
    accessToken: answer.accessToken,
    receivedAtMs: Date.now(),
    expiresAtMs: Date.parse(answer.expiresAt),
    refreshToken: answer.refreshToken,
    refreshExpiresAtMs: Date.parse(answer.refreshExpiresAt),
    user: answer.user || (session && session.user),
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  scheduleRefresh(session.expiresAtMs - Date.now());
}

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (s && s.accessToken && s.refreshToken && s.refreshExpiresAtMs > Date.now()) return s;
  } catch {
    // a damaged entry is the same as none
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

/** Whether the access token is past its refresh point and so near its expiry that a call
 *  should refresh it first (the timer below may have been late: background tabs' timers
 *  are throttled). */
function stale() {
  const lifetime = session.expiresAtMs - (session.receivedAtMs || 0);
  return session.expiresAtMs - Date.now() < Math.min(5000, lifetime / 4);
}

/** Refreshes at about 3/4 of the access token's remaining lifetime. */
function scheduleRefresh(lifetimeMs) {
  clearTimeout(refreshTimer);
  const due = Math.max(0, Math.floor(lifetimeMs * 0.75));
  refreshTimer = setTimeout(() => {
    refresh().catch(() => {
      // A network failure (the hub restarting, say): try again while the session lasts.
      if (session) scheduleRefresh(REFRESH_RETRY_MS / 0.75);
    });
  }, due);
}

function refresh() {
  if (!refreshing) {
    refreshing = doRefresh().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function doRefresh() {
  if (!session) throw new ApiError(401, 'not logged in', CODE_UNAUTHENTICATED);
  try {
    const answer = await api('POST', '/v1/auth/refresh', { refreshToken: session.refreshToken }, { auth: false });
    saveSession(answer);
    clearError('session');
  } catch (e) {
    if (e.status === 401 || e.status === 400) {
      endSession(`Your session has ended (${e.message}). Please log in again.`);
    }
    throw e;
  }
}

async function login(identifier, password) {
  const body = identifier.includes('@') ? { email: identifier, password } : { username: identifier, password };
  const answer = await api('POST', '/v1/auth/login', body, { auth: false });
  saveSession(answer);
  startSession();
}

function logout() {
  const token = session && session.accessToken;
  endSession(null);
  if (token) {
    // Best effort, not awaited: the session has ended here either way.
    fetch('/v1/auth/logout', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    }).catch(() => {});
  }
}

/** Clears everything of the session and shows the login form, with `message` if given. */
function endSession(message) {
  stopStream();
  clearTimeout(refreshTimer);
  clearTimeout(ack.timer);
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  resetFeed(); // the next user of this tab sees nothing of this one's
  errors.clear();
  if (message) errors.set('session', message);
  renderErrors();
  $('whoami').hidden = true;
  $('live').hidden = true;
  $('publish').hidden = true;
  $('login').hidden = false;
  $('password').value = '';
  $('email').focus();
}

function startSession() {
  const user = session.user || {};
  $('user-name').textContent = user.username || user.email || `user ${user.id}`;
  $('user-roles').textContent = (user.roles || []).map((r) => String(r).replace('USER_ROLE_', '').toLowerCase()).join(', ');
  $('whoami').hidden = false;
  $('login').hidden = true;
  $('live').hidden = false;
  $('publish').hidden = !(user.roles || []).some((r) => ROLES_THAT_PUBLISH.includes(r));
  $('consumer').textContent = consumerId();
  resetFeed();
  openStream();
}

// ---------------------------------------------------------------- the feed

/** This browser's durable consumer id, the same across reloads and logins. */
function consumerId() {
  let id = localStorage.getItem(CONSUMER_KEY);
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    id = `console-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
    localStorage.setItem(CONSUMER_KEY, id);
  }
  return id;
}

const stream = {
  source: null, // the EventSource
  generation: 0, // events of a replaced EventSource are ignored
  position: null, // the seq to resume after (null: from the consumer's stored cursor)
  failures: 0, // re-creations since the last `subscribed`, for the backoff
  timer: null,
};

function setState(state, detail) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = detail ? `${state} (${detail})` : state;
}

function streamUrl() {
  const q = new URLSearchParams({
    accessToken: session.accessToken,
    consumerId: consumerId(),
    ackMode: 'ACK_MODE_EXPLICIT',
    window: String(WINDOW),
  });
  if (stream.position !== null) {
    // Not `lastEventId`: the server prefers that parameter to the Last-Event-ID header,
    // which this EventSource's own reconnections would then send in vain. A resume from
    // the header overrides these two.
    q.set('startFrom', 'START_FROM_SEQ');
    q.set('afterSeq', String(stream.position));
  }
  return `/v1/users/0/events/stream?${q}`;
}

function openStream() {
  closeSource();
  const generation = ++stream.generation;
  setState(stream.failures > 0 ? 'reconnecting' : 'connecting');
  const source = new EventSource(streamUrl());
  stream.source = source;
  const mine = (fn) => (e) => {
    if (generation === stream.generation) fn(e);
  };
  source.addEventListener('subscribed', mine((e) => onSubscribed(JSON.parse(e.data))));
  source.addEventListener('message', mine(onEvent));
  source.addEventListener(
    'error',
    mine((e) => {
      if (typeof e.data === 'string') {
        onStreamError(e.data); // the server's `event: error`, sent before it ends the stream
      } else if (source.readyState === EventSource.CLOSED) {
        retryLater(); // refused (401, 503...): EventSource does not retry that by itself
      } else {
        setState('reconnecting'); // EventSource retries by itself, with Last-Event-ID
      }
    }),
  );
}

function closeSource() {
  clearTimeout(stream.timer);
  stream.timer = null;
  if (stream.source) stream.source.close();
  stream.source = null;
  stream.generation++;
}

function stopStream() {
  closeSource();
  setState('idle', 'not connected');
}

function retryLater() {
  closeSource();
  const delay = Math.min(1000 * 2 ** stream.failures, BACKOFF_MAX_MS);
  stream.failures++;
  setState('reconnecting', `retrying in ${Math.round(delay / 1000)} s`);
  stream.timer = setTimeout(reopen, delay);
}

/** EventSource does not tell why it was refused: a cheap authenticated call finds out
 *  (and refreshes the token on a 401) before the stream is opened again. */
async function reopen() {
  stream.timer = null;
  if (!session) return;
  try {
    await api('GET', '/v1/me');
    clearError('stream');
  } catch (e) {
    if (!session) return; // the session ended
    showError('stream', `The feed cannot reconnect: ${e.message}`);
    retryLater();
    return;
  }
  openStream();
}

function onSubscribed(sub) {
  stream.failures = 0;
  clearError('stream');
  $('resume').hidden = true;
  const resumeAfter = Number(sub.resumeAfter || 0);
  const requestedAfter = Number(sub.requestedAfter || 0);
  stream.position = Math.max(stream.position || 0, resumeAfter);
  const el = $('subscribed');
  el.dataset.resumeAfter = String(resumeAfter);
  el.dataset.headSeq = String(sub.headSeq || 0);
  el.dataset.truncated = String(Boolean(sub.truncated));
  el.textContent = `resumed after ${resumeAfter}; head ${sub.headSeq || 0}; earliest retained ${sub.earliestSeq || 0}`;
  const warning = $('truncated');
  if (sub.truncated) {
    const lost = resumeAfter - requestedAfter;
    warning.textContent =
      `${lost} event${lost === 1 ? ' was' : 's were'} lost: seqs ${requestedAfter + 1} to ${resumeAfter} ` +
      'were removed by retention before this console could read them.';
    warning.hidden = false;
  }
  setState('live');
}

function onStreamError(data) {
  let status;
  try {
    status = JSON.parse(data);
  } catch {
    status = { message: data };
  }
  if (status.code === CODE_ABORTED) {
    // Another tab (or client) took over this consumer; reconnecting would take it back,
    // and the two would take turns forever.
    closeSource();
    setState('stopped', 'opened elsewhere');
    $('resume').hidden = false;
    return;
  }
  if (status.code === CODE_UNAUTHENTICATED) {
    closeSource();
    refresh().then(openStream, () => {
      if (session) retryLater();
    });
    return;
  }
  setState('reconnecting', status.message);
}

const feed = { count: 0, trimmed: 0 };

function resetFeed() {
  stream.position = null;
  stream.failures = 0;
  feed.count = 0;
  feed.trimmed = 0;
  ack.highest = 0;
  ack.acked = 0;
  $('feed').replaceChildren();
  $('feed-empty').hidden = false;
  $('feed-trimmed').hidden = true;
  $('truncated').hidden = true;
  $('subscribed').textContent = '-';
  $('acked').dataset.seq = '0';
  $('acked').textContent = '-';
}

function onEvent(message) {
  let ev;
  try {
    ev = JSON.parse(message.data);
  } catch {
    showError('stream', `An event could not be read: ${message.data.slice(0, 80)}`);
    return;
  }
  const seq = Number(ev.seq || message.lastEventId);
  render(ev, seq);
  stream.position = Math.max(stream.position || 0, seq);
  noteForAck(seq);
}

function render(ev, seq) {
  const li = document.createElement('li');
  li.dataset.seq = String(seq);
  li.dataset.type = ev.type || '';
  const cell = (cls, text, tag = 'span') => {
    const el = document.createElement(tag);
    el.className = cls;
    el.textContent = text;
    li.append(el);
    return el;
  };
  cell('seq', `#${seq}`);
  cell('type', ev.type || '(no type)');
  const meta = cell('meta', '');
  if (ev.publishedAt) {
    const time = document.createElement('time');
    time.dateTime = ev.publishedAt;
    time.textContent = new Date(ev.publishedAt).toLocaleString();
    meta.append(time);
  }
  if (ev.publisherId) meta.append(` from user ${ev.publisherId}`);
  const { text, encoding } = payloadText(ev.payload || '', ev.contentType || '');
  const payload = cell('payload', text, 'pre');
  payload.dataset.encoding = encoding;
  if (ev.contentType) payload.title = ev.contentType;

  const list = $('feed');
  list.append(li);
  feed.count++;
  $('feed-empty').hidden = true;
  while (list.childElementCount > FEED_MAX) {
    list.firstElementChild.remove();
    feed.trimmed++;
  }
  if (feed.trimmed > 0) {
    $('feed-trimmed').textContent = `${feed.trimmed} older event(s) removed from this page.`;
    $('feed-trimmed').hidden = false;
  }
}

/** The payload as text when its content type is text or JSON, else as base64. */
function payloadText(base64, contentType) {
  const ct = contentType.toLowerCase();
  const textual = ct.startsWith('text/') || /^application\/([\w.+-]*\+)?json\b/.test(ct);
  if (!textual) return { text: base64 || '(empty)', encoding: 'base64' };
  try {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return { text: new TextDecoder('utf-8').decode(bytes) || '(empty)', encoding: 'utf-8' };
  } catch {
    return { text: base64, encoding: 'base64' };
  }
}

// ---------------------------------------------------------------- acks

const ack = {
  highest: 0, // the highest seq rendered
  acked: 0, // the cursor the hub confirmed
  timer: null,
  inFlight: false,
};

function noteForAck(seq) {
  ack.highest = Math.max(ack.highest, seq);
  if (ack.highest - ack.acked >= ACK_BATCH) {
    flushAcks();
  } else if (!ack.timer) {
    ack.timer = setTimeout(flushAcks, ACK_DELAY_MS);
  }
}

async function flushAcks() {
  clearTimeout(ack.timer);
  ack.timer = null;
  if (ack.inFlight || !session || ack.highest <= ack.acked) return;
  ack.inFlight = true;
  const seq = ack.highest;
  let retryIn = ACK_DELAY_MS;
  try {
    const path = `/v1/users/0/cursors/${encodeURIComponent(consumerId())}/ack`;
    const cursor = await api('POST', path, { seq: String(seq) });
    ack.acked = Math.max(ack.acked, Number(cursor.ackedSeq || seq));
    $('acked').dataset.seq = String(ack.acked);
    $('acked').textContent = String(ack.acked);
    clearError('ack');
  } catch (e) {
    if (session) showError('ack', `Ack of ${seq} failed: ${e.message}`);
    retryIn = ACK_RETRY_MS;
  } finally {
    ack.inFlight = false;
  }
  if (session && ack.highest > ack.acked && !ack.timer) {
    ack.timer = setTimeout(flushAcks, retryIn);
  }
}

// ---------------------------------------------------------------- publish

/** UTF-8 text as base64 (the JSON form of `bytes`). */
function utf8Base64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function publish() {
  const result = $('publish-result');
  const ids = $('recipients')
    .value.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const body = {
    recipientIds: ids,
    type: $('type').value.trim(),
    payload: utf8Base64($('payload').value),
    contentType: 'text/plain',
  };
  result.dataset.state = 'pending';
  result.textContent = 'Publishing…';
  try {
    const answer = await api('POST', '/v1/events', body);
    const list = document.createElement('ul');
    for (const d of answer.deliveries || []) {
      const li = document.createElement('li');
      li.dataset.userId = String(d.userId);
      li.dataset.seq = String(d.seq);
      li.textContent = `user ${d.userId}: seq ${d.seq}`;
      list.append(li);
    }
    const head = document.createElement('p');
    head.textContent = `Event ${answer.eventId}${answer.duplicate ? ' (a duplicate: nothing new stored)' : ''} delivered:`;
    result.replaceChildren(head, list);
    result.dataset.state = 'done';
  } catch (e) {
    result.textContent = `Not published: ${e.message}`;
    result.dataset.state = 'error';
  }
}

// ---------------------------------------------------------------- wiring

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const button = $('login-submit');
  button.disabled = true;
  try {
    await login($('email').value.trim(), $('password').value);
    errors.clear();
    renderErrors();
  } catch (err) {
    showError('session', `Login failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

$('logout').addEventListener('click', logout);

$('resume').addEventListener('click', () => {
  $('resume').hidden = true;
  stream.failures = 0;
  openStream();
});

$('publish-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const button = $('publish-submit');
  button.disabled = true;
  try {
    await publish();
  } finally {
    button.disabled = false;
  }
});

session = loadSession();
if (!session) {
  endSession(null);
} else if (stale()) {
  // A reload after the access token expired. If the hub cannot be reached now, the feed's
  // reconnection refreshes it later; a refused refresh has ended the session.
  refresh()
    .catch(() => {})
    .finally(() => {
      if (session) startSession();
    });
} else {
  scheduleRefresh(session.expiresAtMs - Date.now());
  startSession();
}
