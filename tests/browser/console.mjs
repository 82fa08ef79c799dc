// Drives the web console in Debian's Chromium (headless, through playwright-core) for the
// end-to-end test in tests/it/web/console.rs.
//
// Usage: node console.mjs <base-url> [chromium-path]
//
// Protocol: one JSON command per line on stdin, `{"id": 1, "cmd": "login", ...args}`;
// one JSON answer per line on stdout, `{"id": 1, "ok": true, "result": ...}` or
// `{"id": 1, "ok": false, "error": "...", "state": <the page's state>}`. The first line,
// id 0, says the browser is up. Commands run one at a time; every wait is bounded. Logs
// (the page's console, uncaught errors, failed requests) go to stderr. The driver closes
// the browser and exits when stdin ends, on `close`, on SIGTERM (playwright's handler),
// and after DRIVER_MAX_SECONDS whatever happens.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [base, executablePath = '/usr/bin/chromium'] = process.argv.slice(2);
if (!base) {
  console.error('usage: node console.mjs <base-url> [chromium-path]');
  process.exit(2);
}
const WAIT_MS = 15000;
const MAX_SECONDS = Number(process.env.DRIVER_MAX_SECONDS || 120);

const log = (line) => process.stderr.write(`${line}\n`);
const answer = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

// The last resort: the process exits (playwright's exit handler kills the browser).
setTimeout(() => {
  log(`driver: still running after ${MAX_SECONDS} s; exiting`);
  process.exit(3);
}, MAX_SECONDS * 1000).unref();

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 30000,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ baseURL: base });
const page = await context.newPage();
page.setDefaultTimeout(WAIT_MS);

// What the page did wrong, besides what the test checks: uncaught exceptions and
// Content-Security-Policy violations (the console must need no inline script or style
// sheet from elsewhere).
const uncaught = [];
const csp = [];
page.on('pageerror', (e) => {
  uncaught.push(String(e && e.message));
  log(`page: uncaught ${e && e.stack}`);
});
page.on('console', (m) => {
  const text = m.text();
  if (/Content[- ]Security[- ]Policy/i.test(text)) csp.push(text);
  log(`page console.${m.type()}: ${text}`);
});
page.on('requestfailed', (r) => log(`page: ${r.method()} ${redact(r.url())} failed: ${r.failure()?.errorText}`));
page.on('response', (r) => {
  if (r.status() >= 400) log(`page: ${r.request().method()} ${redact(r.url())} -> ${r.status()}`);
});

function redact(url) {
  return url.replace(/accessToken=[^&]*/, 'accessToken=...');
}

/** What the page shows, as data. */
function snapshot() {
  return page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    let session = null;
    try {
      session = JSON.parse(sessionStorage.getItem('activity-hub.console.session'));
    } catch {
      // none
    }
    const result = q('#publish-result');
    return {
      status: q('#status')?.dataset.state ?? null,
      statusText: q('#status')?.textContent ?? null,
      loginVisible: q('#login') ? !q('#login').hidden : null,
      publishVisible: q('#publish') ? !q('#publish').hidden : null,
      feed: [...document.querySelectorAll('#feed li')].map((li) => ({
        seq: Number(li.dataset.seq),
        type: li.dataset.type,
        payload: li.querySelector('.payload')?.textContent ?? null,
        encoding: li.querySelector('.payload')?.dataset.encoding ?? null,
      })),
      acked: Number(q('#acked')?.dataset.seq ?? 0),
      subscribed: q('#subscribed') ? { ...q('#subscribed').dataset, text: q('#subscribed').textContent } : null,
      truncated: q('#truncated') && !q('#truncated').hidden ? q('#truncated').textContent : null,
      errors: [...document.querySelectorAll('#error li')].map((li) => li.textContent),
      publishResult: result
        ? {
            state: result.dataset.state,
            text: result.textContent,
            deliveries: [...result.querySelectorAll('li')].map((li) => ({
              userId: li.dataset.userId,
              seq: li.dataset.seq,
            })),
          }
        : null,
      consumerId: localStorage.getItem('activity-hub.console.consumer'),
      user: session && session.user,
      // The access token's last characters (its signature's): they change when the page
      // refreshes it.
      tokenTail: session && session.accessToken.slice(-12),
    };
  });
}

async function state() {
  return { ...(await snapshot()), uncaught, csp };
}

const timeout = (args) => ({ timeout: Math.min(Number(args.timeoutMs || WAIT_MS), 60000) });

const commands = {
  async open(args) {
    await page.goto(args.path || '/', timeout(args));
    await page.locator('#login-form').waitFor({ state: 'attached', ...timeout(args) });
    return state();
  },

  /** Logs in through the form; waits until the feed is live or an error is shown. */
  async login(args) {
    await page.locator('#email').fill(args.identifier);
    await page.locator('#password').fill(args.password);
    await page.locator('#login-submit').click();
    await page.waitForFunction(
      () => document.querySelector('#status').dataset.state === 'live' || !document.querySelector('#errors').hidden,
      null,
      { polling: 50, ...timeout(args) },
    );
    return state();
  },

  async logout(args) {
    await page.locator('#logout').click();
    await page.locator('#login-form').waitFor({ state: 'visible', ...timeout(args) });
    return state();
  },

  /** Waits until the feed holds at least `count` items. */
  async waitFeed(args) {
    await page.waitForFunction((n) => document.querySelectorAll('#feed li').length >= n, args.count, {
      polling: 50,
      ...timeout(args),
    });
    return state();
  },

  /** Waits until the page shows an ack of at least `seq` confirmed by the hub. */
  async waitAcked(args) {
    await page.waitForFunction((n) => Number(document.querySelector('#acked').dataset.seq) >= n, args.seq, {
      polling: 50,
      ...timeout(args),
    });
    return state();
  },

  /** Waits until the connection state is `status` (e.g. "live"). */
  async waitStatus(args) {
    await page.waitForFunction((s) => document.querySelector('#status').dataset.state === s, args.status, {
      polling: 50,
      ...timeout(args),
    });
    return state();
  },

  /** Publishes through the form; waits for its outcome (deliveries or an error). */
  async publish(args) {
    await page.locator('#recipients').fill(args.recipients);
    await page.locator('#type').fill(args.type);
    await page.locator('#payload').fill(args.payload);
    await page.locator('#publish-submit').click();
    await page.waitForFunction(
      () => ['done', 'error'].includes(document.querySelector('#publish-result').dataset.state),
      null,
      { polling: 50, ...timeout(args) },
    );
    return state();
  },

  state,

  async screenshot(args) {
    await page.screenshot({ path: args.path, fullPage: true });
    return { path: args.path };
  },

  async close() {
    await browser.close();
    return null;
  },
};

async function shutdown(code) {
  await browser.close().catch(() => {});
  process.exit(code);
}

answer({ id: 0, ok: true, result: { ready: true, browser: browser.version() } });

const input = createInterface({ input: process.stdin });
for await (const line of input) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    answer({ id: null, ok: false, error: `not JSON: ${e.message}` });
    continue;
  }
  const run = commands[cmd.cmd];
  if (!run) {
    answer({ id: cmd.id, ok: false, error: `unknown command ${cmd.cmd}` });
    continue;
  }
  try {
    answer({ id: cmd.id, ok: true, result: await run(cmd) });
  } catch (e) {
    const shown = await state().catch((err) => `unavailable: ${err.message}`);
    answer({ id: cmd.id, ok: false, error: String(e && e.message), state: shown });
  }
  if (cmd.cmd === 'close') await shutdown(0);
}
// stdin ended: the test is over (or gone).
await shutdown(0);
