// The admin console at /ui/ in a real Chromium (playwright-core, Debian's chromium) over mutual TLS, against a real
// airlock with a real upstream registry and skopeo as the pulling client.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Page, type Route } from 'playwright-core';
import type { Role } from '../server/pki/ca.js';
import { writeSigningKey } from '../server/signing/key.js';
import { startTestAirlock, type TestAirlock } from './harness/airlock.js';
import { buildImage, inspectDigest, pushImage } from './harness/images.js';
import { run, stopAll, track } from './harness/proc.js';
import { type Registry, startRegistry } from './harness/registry.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'];
const UPSTREAM = 'registry.acme.test';
const ARTIFACTS = path.resolve('test-artifacts/console');
const DOCS_SCREENSHOTS = path.resolve('docs/screenshots');
const VIEWPORT = { width: 1280, height: 800 };
const WAIT_MS = 20_000;

let tmp: string;
let reg: Registry;
let t: TestAirlock;
let browser: Browser;
const contexts: BrowserContext[] = [];
const pageErrors: string[] = [];

interface PendingRequest {
  id: number;
  repository: string;
  digest: string;
  status: string;
}

async function pushNew(repo: string, tag: string): Promise<string> {
  const img = await buildImage(path.join(tmp, 'img', `${repo.replace(/\//g, '_')}-${tag}`), { tag, files: { '/etc/release': `${repo}:${tag} ${crypto.randomUUID()}\n` } });
  await pushImage(img, `${reg.host}/${repo}:${tag}`, { certDir: reg.certDir });
  return inspectDigest(reg, repo, tag);
}

async function pullThrough(repo: string, tag: string): Promise<{ code: number | null; stderr: string }> {
  const out = path.join(tmp, 'out', crypto.randomUUID());
  fs.mkdirSync(out, { recursive: true });
  const r = await run('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-cert-dir', t.bundle('pull').dir, `docker://${t.host}/${UPSTREAM}/${repo}:${tag}`, `dir:${out}`], { timeoutMs: 60_000 });
  return { code: r.code, stderr: r.stderr };
}

async function requestsOf(status: string): Promise<PendingRequest[]> {
  const res = await t.request('admin', `/api/v1/requests?status=${status}`);
  assert.equal(res.status, 200, res.body.toString());
  return (JSON.parse(res.body.toString()) as { requests: PendingRequest[] }).requests;
}

// openConsole opens /ui/ (at hash) in a fresh browser context that presents the client certificate of role.
async function openConsole(role: Role, hash = ''): Promise<{ page: Page; status: number | undefined }> {
  const b = t.bundle(role);
  const context = await browser.newContext({
    clientCertificates: [{ origin: t.url, certPath: b.endpoint.clientCertPath as string, keyPath: b.endpoint.clientKeyPath as string }],
    ignoreHTTPSErrors: true,
    viewport: VIEWPORT,
    acceptDownloads: true,
  });
  contexts.push(context);
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${role}: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of (403|422) /.test(msg.text())) pageErrors.push(`${role}: console: ${msg.text()}`);
  });
  const res = await page.goto(`${t.url}/ui/${hash}`);
  return { page, status: res?.status() };
}

function requestRow(page: Page, repository: string) {
  return page.locator('tr[data-request]', { hasText: repository });
}

async function shoot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

before(async () => {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `chromium is missing at ${CHROMIUM}: run bash scripts/test-deps.sh (as root) to install the test tools, chromium among them`,
  );
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-console-'));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  reg = track(await startRegistry({ dir: path.join(tmp, 'upstream') }));
  const base = await pushNew('library/base', '1.0');
  await pushNew('acme/web', '1.4');
  await pushNew('acme/worker', '2.0');
  const publisher = writeSigningKey(path.join(tmp, 'keys', 'acme-release'), 'publisher-pass');
  t = await startTestAirlock({
    dir: path.join(tmp, 'airlock'),
    upstreams: [{ name: UPSTREAM, url: reg.url, ca: reg.caPath }],
    defaultUpstream: UPSTREAM,
    pins: [`${UPSTREAM}/library/base:1.0@${base}`],
    publishers: [{ name: 'acme-release', key: publisher.pubPath, repositories: [`${UPSTREAM}/acme/signed/*`] }],
    driftCheckMs: 0,
  });
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  } catch (err) {
    throw new Error(`could not start ${CHROMIUM} (${(err as Error).message.split('\n')[0]}): run bash scripts/test-deps.sh (as root) to install chromium`);
  }
  const pinned = await pullThrough('library/base', '1.0');
  assert.equal(pinned.code, 0, `a pinned image pulls: ${pinned.stderr}`);
  // The upstream moves the pinned tag; the next pull still gets the pinned digest and records the drift.
  await pushNew('library/base', '1.0');
  assert.equal((await pullThrough('library/base', '1.0')).code, 0);
});

after(async () => {
  try {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await t?.stop();
  } finally {
    await stopAll();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('a refused pull creates a pending approval request', async () => {
  const refused = await pullThrough('acme/web', '1.4');
  assert.notEqual(refused.code, 0, 'an image nobody admitted is refused');
  assert.match(refused.stderr, /denied/i);
  const pending = await requestsOf('pending');
  assert.ok(pending.some((r) => r.repository === `${UPSTREAM}/acme/web`), `a pending request for acme/web: ${JSON.stringify(pending)}`);
});

test('an admin sees the pending request in the console, approves it with one click, and the same pull then succeeds', async () => {
  const { page, status } = await openConsole('admin');
  assert.equal(status, 200);
  const row = requestRow(page, `${UPSTREAM}/acme/web`);
  await row.waitFor({ timeout: WAIT_MS });
  await row.getByRole('textbox').fill('release 1.4 reviewed');
  await row.getByRole('button', { name: 'Approve' }).click();
  await page.getByText(`Approved ${UPSTREAM}/acme/web@`).waitFor({ timeout: WAIT_MS });
  await row.waitFor({ state: 'detached', timeout: WAIT_MS });
  const [approved] = (await requestsOf('approved')).filter((r) => r.repository === `${UPSTREAM}/acme/web`);
  assert.ok(approved, 'the request is approved');
  const pulled = await pullThrough('acme/web', '1.4');
  assert.equal(pulled.code, 0, `the approved image pulls: ${pulled.stderr}`);
});

test('a new pending request appears in an open console without a reload', async () => {
  const { page } = await openConsole('admin');
  await page.locator('#requests-table').waitFor({ timeout: WAIT_MS });
  const refused = await pullThrough('acme/worker', '2.0');
  assert.notEqual(refused.code, 0);
  await requestRow(page, `${UPSTREAM}/acme/worker`).waitFor({ timeout: WAIT_MS });
  await page.locator('#pending-count', { hasText: '1' }).waitFor({ timeout: WAIT_MS });
});

test('an audit certificate sees every screen read-only, and the API refuses its approval', async () => {
  const { page } = await openConsole('audit');
  await requestRow(page, `${UPSTREAM}/acme/worker`).waitFor({ timeout: WAIT_MS });
  await page.getByText('Read-only: your certificate has the audit role.').waitFor({ timeout: WAIT_MS });
  assert.equal(await page.getByRole('button', { name: 'Approve' }).count(), 0, 'no approve control');
  assert.equal(await page.getByRole('button', { name: 'Deny' }).count(), 0, 'no deny control');
  await shoot(page, 'requests-audit-role');
  for (const [hash, text] of [['#/images', `${UPSTREAM}/acme/web`], ['#/pins', `${UPSTREAM}/library/base`], ['#/publishers', 'acme-release']]) {
    await page.goto(`${t.url}/ui/${hash}`);
    await page.locator('#view td', { hasText: text }).first().waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#view form').count(), 0, `${hash} has no form`);
    assert.equal(await page.getByRole('button', { name: /approve|deny|revoke|delete|add|issue/i }).count(), 0, `${hash} has no change controls`);
  }
  const [pending] = (await requestsOf('pending')).filter((r) => r.repository === `${UPSTREAM}/acme/worker`);
  assert.ok(pending);
  const res = await t.request('audit', `/api/v1/requests/${pending.id}/approve`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(res.status, 403);
  assert.equal((JSON.parse(res.body.toString()) as { error: { code: string } }).error.code, 'FORBIDDEN');
  assert.equal((await requestsOf('pending')).filter((r) => r.id === pending.id).length, 1, 'the request is still pending');
});

test('a pull certificate gets a 403 refusal page that says why, for the console and its assets', async () => {
  const { page, status } = await openConsole('pull');
  assert.equal(status, 403);
  await page.getByText(/your certificate has the pull role; the console needs audit or admin/i).waitFor({ timeout: WAIT_MS });
  await shoot(page, 'refused-pull');
  const asset = await t.request('pull', '/ui/app.js');
  assert.equal(asset.status, 403);
  assert.match(String(asset.headers['content-type']), /^text\/html/);
  assert.match(asset.body.toString(), /the console needs audit or admin/);
});

test('every screen renders for an admin, captured as a screenshot', async () => {
  const { page } = await openConsole('admin');
  const screens: [string, () => Promise<void>][] = [
    ['requests', () => requestRow(page, `${UPSTREAM}/acme/worker`).waitFor({ timeout: WAIT_MS })],
    ['images', () => page.locator('#view td', { hasText: `${UPSTREAM}/acme/web` }).first().waitFor({ timeout: WAIT_MS })],
    ['pins', () => page.locator('#view td', { hasText: 'release 1.4 reviewed' }).first().waitFor({ timeout: WAIT_MS })],
    ['publishers', () => page.locator('#view td', { hasText: 'acme-release' }).first().waitFor({ timeout: WAIT_MS })],
    ['drift', () => page.locator('#view td', { hasText: `${UPSTREAM}/library/base` }).first().waitFor({ timeout: WAIT_MS })],
    ['certs', () => page.locator('#view td', { hasText: 'test-audit' }).first().waitFor({ timeout: WAIT_MS })],
    ['audit', () => page.locator('#view td', { hasText: 'admin.approve' }).first().waitFor({ timeout: WAIT_MS })],
  ];
  await page.locator('.stat', { hasText: '/min' }).filter({ hasNotText: '…' }).waitFor({ timeout: WAIT_MS });
  for (const [name, ready] of screens) {
    await page.goto(`${t.url}/ui/#/${name}`);
    await ready();
    await shoot(page, name);
  }
  // The docs' screenshots are refreshed only when asked (AIRLOCK_UPDATE_SCREENSHOTS=1), so a test run leaves the tree clean.
  if (process.env.AIRLOCK_UPDATE_SCREENSHOTS === '1') {
    fs.mkdirSync(DOCS_SCREENSHOTS, { recursive: true });
    for (const name of ['requests', 'images', 'audit']) {
      fs.copyFileSync(path.join(ARTIFACTS, `${name}.png`), path.join(DOCS_SCREENSHOTS, `console-${name}.png`));
    }
  }
  assert.deepEqual(pageErrors, [], 'no script errors or CSP violations in any page');
});

test('an admin issues, downloads and revokes a certificate, manages pins and publishers, denies a request and downloads the audit export', async () => {
  const { page } = await openConsole('admin', '#/certs');
  const form = page.getByRole('form', { name: 'Issue a certificate' });
  await form.getByLabel('Name (CN)').fill('ci-runner-1');
  const [pem] = await Promise.all([page.waitForEvent('download'), form.getByRole('button', { name: 'Issue PEM bundle' }).click()]);
  assert.equal(pem.suggestedFilename(), 'ci-runner-1.pem');
  const bundle = fs.readFileSync(await pem.path(), 'utf8');
  assert.match(bundle, /BEGIN CERTIFICATE[\s\S]*BEGIN PRIVATE KEY[\s\S]*BEGIN CERTIFICATE/);
  await form.getByLabel('Name (CN)').fill('laptop-browser');
  const [p12] = await Promise.all([page.waitForEvent('download'), form.getByRole('button', { name: 'Issue PKCS#12' }).click()]);
  assert.equal(p12.suggestedFilename(), 'laptop-browser.p12');
  assert.ok(fs.statSync(await p12.path()).size > 1000, 'a PKCS#12 file');
  // Enter in the password field asks for the encrypted file, not an unencrypted PEM key.
  await form.getByLabel('Name (CN)').fill('enter-key');
  await form.getByLabel('PKCS#12 password').fill('s3cret');
  const [entered] = await Promise.all([page.waitForEvent('download'), form.getByLabel('PKCS#12 password').press('Enter')]);
  assert.equal(entered.suggestedFilename(), 'enter-key.p12');
  await form.getByLabel('PKCS#12 password').fill('');
  const certRow = page.locator('tr', { hasText: 'ci-runner-1' });
  await certRow.getByRole('button', { name: 'Revoke' }).click();
  await certRow.getByRole('button', { name: 'Confirm revoke' }).click();
  await certRow.getByText('revoked', { exact: true }).waitFor({ timeout: WAIT_MS });

  const other = await pushNew('acme/cli', '0.9');
  await page.goto(`${t.url}/ui/#/pins`);
  const pinForm = page.getByRole('form', { name: 'Add a pin' });
  await pinForm.getByLabel('Repository').fill(`${UPSTREAM}/acme/cli`);
  await pinForm.getByLabel('Digest').fill(other);
  await pinForm.getByLabel('Tag').fill('0.9');
  await pinForm.getByRole('button', { name: 'Add pin' }).click();
  const pinRow = page.locator('#view tr', { hasText: `${UPSTREAM}/acme/cli` });
  await pinRow.waitFor({ timeout: WAIT_MS });
  assert.equal((await pullThrough('acme/cli', '0.9')).code, 0, 'the pinned tag pulls');
  await pinRow.getByRole('button', { name: 'Delete' }).click();
  await pinRow.getByRole('button', { name: 'Confirm delete' }).click();
  await pinRow.waitFor({ state: 'detached', timeout: WAIT_MS });

  await page.goto(`${t.url}/ui/#/publishers`);
  const pubForm = page.getByRole('form', { name: 'Add a publisher' });
  const key = writeSigningKey(path.join(tmp, 'keys', 'tools'), 'tools-pass');
  await pubForm.getByLabel('Name', { exact: true }).fill('tools-team');
  await pubForm.getByLabel('Repositories').fill(`${UPSTREAM}/tools/*, ${UPSTREAM}/acme/tools-*`);
  await pubForm.getByLabel('Public key (PEM)').fill(fs.readFileSync(key.pubPath, 'utf8'));
  await pubForm.getByRole('button', { name: 'Add publisher' }).click();
  await page.locator('#view td', { hasText: `${UPSTREAM}/acme/tools-*` }).waitFor({ timeout: WAIT_MS });
  await pubForm.getByLabel('Name', { exact: true }).fill('broken');
  await pubForm.getByLabel('Repositories').fill(`${UPSTREAM}/broken/*`);
  await pubForm.getByLabel('Public key (PEM)').fill('-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n');
  await pubForm.getByRole('button', { name: 'Add publisher' }).click();
  await page.locator('.message.error', { hasText: 'UNPROCESSABLE' }).waitFor({ timeout: WAIT_MS });

  await page.goto(`${t.url}/ui/#/requests`);
  const worker = requestRow(page, `${UPSTREAM}/acme/worker`);
  await worker.getByRole('textbox').fill('not on the allow list');
  await worker.getByRole('button', { name: 'Deny' }).click();
  await worker.waitFor({ state: 'detached', timeout: WAIT_MS });
  const [denied] = (await requestsOf('denied')).filter((r) => r.repository === `${UPSTREAM}/acme/worker`);
  assert.ok(denied, 'the request is denied');

  await page.goto(`${t.url}/ui/#/audit`);
  await page.locator('#view td', { hasText: 'admin.deny' }).first().waitFor({ timeout: WAIT_MS });
  const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download CSV' }).click()]);
  assert.match(fs.readFileSync(await csv.path(), 'utf8'), /admin\.deny/);
  // An empty From means from the first event, for the view and the downloads alike.
  await page.getByLabel('From').fill('');
  await page.getByLabel('From').dispatchEvent('change');
  assert.doesNotMatch(String(await page.getByRole('link', { name: 'Download CSV' }).getAttribute('href')), /since=/);
  await page.getByRole('button', { name: 'Load' }).click();
  await page.locator('#view td.num', { hasText: /^1$/ }).first().waitFor({ timeout: WAIT_MS });
  assert.deepEqual(pageErrors, [], 'no script errors or CSP violations in any page');
});

// The checks below hold, fail or fake single API calls in the browser (page.route) to produce the slow and failing
// answers a real airlock gives only under load. A 5XX they fulfil logs "Failed to load resource", which is expected.
const scriptErrors = (): string[] => pageErrors.filter((e) => !/Failed to load resource/.test(e));
const isRequests = (status?: string) => (url: URL): boolean => url.pathname === '/api/v1/requests' && (status === undefined || url.searchParams.get('status') === status);

test('a stuck requests poll is never doubled, gives up after 15 s with a message, and the other screens keep working', async () => {
  const { page } = await openConsole('admin', '#/images');
  await page.locator('#view td', { hasText: `${UPSTREAM}/acme/web` }).first().waitFor({ timeout: WAIT_MS });
  const held: { route: Route; at: number }[] = [];
  await page.route(isRequests(), (route) => {
    held.push({ route, at: Date.now() });
  });
  // The next poll (at most 3 s away) is held: no answer ever comes.
  const deadline = Date.now() + WAIT_MS;
  while (held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(held.length, 1, 'a requests poll is held');
  await page.locator('#tabs a[data-screen="pins"]').click();
  await page.locator('#view td', { hasText: `${UPSTREAM}/library/base` }).first().waitFor({ timeout: WAIT_MS });
  await page.locator('.message.error', { hasText: 'did not answer within 15 s' }).waitFor({ timeout: 30_000 });
  assert.ok(Date.now() - held[0].at >= 14_000, 'the call gave up after its 15 s');
  assert.equal(held.length, 1, 'no second requests poll started while the first one was stuck');
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  for (const h of held) await h.route.abort().catch(() => undefined);
  // The next poll answers and clears the message.
  await page.locator('.message.error', { hasText: 'did not answer within 15 s' }).waitFor({ state: 'detached', timeout: WAIT_MS });
  assert.deepEqual(scriptErrors(), []);
});

test('a slower poll started for another status filter does not paint its rows', async () => {
  const { page } = await openConsole('admin', '#/requests?status=approved');
  await requestRow(page, `${UPSTREAM}/acme/web`).waitFor({ timeout: WAIT_MS });
  const held: Route[] = [];
  const approved = isRequests('approved');
  let holding = true;
  await page.route(approved, (route) => (holding ? held.push(route) : route.continue()));
  const deadline = Date.now() + WAIT_MS;
  while (held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(held.length > 0, 'a poll of the approved requests is held');
  await page.getByLabel('Request status').selectOption('denied');
  await requestRow(page, `${UPSTREAM}/acme/worker`).waitFor({ timeout: WAIT_MS });
  holding = false;
  const answered = page.waitForResponse((res) => approved(new URL(res.url())), { timeout: WAIT_MS });
  for (const route of held) await route.continue();
  await answered;
  // The old answer would be drawn at once; watch the table for a while after it arrived.
  for (let i = 0; i < 20; i++) {
    assert.equal(await requestRow(page, `${UPSTREAM}/acme/web`).count(), 0, 'no approved row in the denied list');
    assert.equal(await requestRow(page, `${UPSTREAM}/acme/worker`).count(), 1, 'the denied row stays');
    await new Promise((r) => setTimeout(r, 75));
  }
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  assert.deepEqual(scriptErrors(), []);
});

test('relative times stay current between redraws, and a redraw keeps the keyboard focus on the same row button', async () => {
  const { page } = await openConsole('admin', '#/requests');
  await page.locator('#requests-table').waitFor({ timeout: WAIT_MS });
  const seen = new Date(Date.now() - 20_000).toISOString();
  let count = 1;
  await page.route(isRequests('pending'), (route) => route.fulfill({
    json: { requests: [{ id: 990001, repository: `${UPSTREAM}/acme/fake`, digest: `sha256:${'ab'.repeat(32)}`, tag: '1', requestedBy: 'test-pull', count, firstSeen: seen, lastSeen: seen, status: 'pending', decidedBy: null, decidedAt: null, note: null }] },
    headers: { 'x-total-count': '1' },
  }));
  const row = page.locator('tr[data-request="990001"]');
  await row.waitFor({ timeout: WAIT_MS });
  // The same answer on every poll: the row is not redrawn, its "… s ago" still moves on.
  await row.evaluate((el) => { el.dataset.marker = 'kept'; });
  const first = await row.locator('[data-ago]').textContent();
  assert.match(String(first), / s ago$/);
  const until = Date.now() + WAIT_MS;
  while ((await row.locator('[data-ago]').textContent()) === first && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
  assert.notEqual(await row.locator('[data-ago]').textContent(), first, 'the relative time moved on');
  assert.equal(await row.getAttribute('data-marker'), 'kept', 'the time changed in place, without a redraw');
  // A changed answer redraws the list; the focused Deny button of the row is focused again.
  await row.getByRole('button', { name: 'Deny' }).focus();
  count = 2;
  await row.locator('td.num', { hasText: /^2$/ }).waitFor({ timeout: WAIT_MS });
  assert.equal(await row.getAttribute('data-marker'), null, 'the row was redrawn');
  const focused = await page.evaluate(`(() => {
    const el = document.activeElement;
    return { key: el?.dataset.focusKey, text: el?.textContent, row: el?.closest('tr')?.dataset.request };
  })()`);
  assert.deepEqual(focused, { key: 'deny:990001', text: 'Deny', row: '990001' });
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  assert.deepEqual(scriptErrors(), []);
});

test('an audit range past the year 9999 or reversed is reported, loads nothing and disables the downloads; a failed load is reported once', async () => {
  const { page } = await openConsole('admin', '#/audit');
  await page.locator('#view td', { hasText: 'admin.deny' }).first().waitFor({ timeout: WAIT_MS });
  const from = page.getByLabel('From');
  const to = page.getByRole('textbox', { name: /^To\b/ });
  assert.equal(await from.getAttribute('max'), '9999-12-31T23:59');
  assert.equal(await to.getAttribute('max'), '9999-12-31T23:59');
  const loads: string[] = [];
  page.on('request', (req) => {
    if (new URL(req.url()).pathname === '/api/v1/audit') loads.push(req.url());
  });
  const csv = page.locator('.exports a', { hasText: 'Download CSV' });
  const rangeError = page.locator('#audit-range-error');

  await from.fill('10000-01-01T00:00');
  await from.dispatchEvent('change');
  await rangeError.filter({ hasText: 'From is not a valid time' }).waitFor({ timeout: WAIT_MS });
  assert.equal(await csv.getAttribute('href'), null, 'no download of a range that is none');
  assert.equal(await csv.getAttribute('aria-disabled'), 'true');
  await page.getByRole('button', { name: 'Load' }).click();
  await from.press('Enter');
  await page.waitForTimeout(500);
  assert.deepEqual(loads, [], 'Load and Enter load nothing');

  await from.fill('2030-01-02T00:00');
  await to.fill('2030-01-01T00:00');
  await to.dispatchEvent('change');
  await rangeError.filter({ hasText: 'To is before From' }).waitFor({ timeout: WAIT_MS });
  await page.locator('.exports-note', { hasText: 'To is before From' }).waitFor({ timeout: WAIT_MS });
  await shoot(page, 'audit-reversed-range');
  assert.equal(await csv.getAttribute('href'), null, 'no download of a reversed range');
  await page.getByRole('button', { name: 'Load' }).click();
  await page.waitForTimeout(500);
  assert.deepEqual(loads, [], 'a reversed range loads nothing');

  await to.fill('');
  await to.dispatchEvent('change');
  await rangeError.waitFor({ state: 'hidden', timeout: WAIT_MS });
  assert.match(String(await csv.getAttribute('href')), /since=2030-01-0[12]T/);
  assert.doesNotMatch(String(await csv.getAttribute('href')), /until=/);
  await page.getByRole('button', { name: 'Load' }).click();
  await page.getByText(/^0 matching events \(0 in range\)/).waitFor({ timeout: WAIT_MS });
  assert.equal(loads.length, 1, 'a valid range loads');

  // A load that fails is reported once, also after leaving the screen and coming back.
  await from.fill('');
  await from.dispatchEvent('change');
  await page.route((url) => url.pathname === '/api/v1/audit', (route) => route.fulfill({ status: 503, json: { error: { code: 'UNAVAILABLE', message: 'held by the test' } } }));
  await page.getByRole('button', { name: 'Load' }).click();
  const failed = page.locator('.message.error', { hasText: 'Loading the audit log failed' });
  await failed.waitFor({ timeout: WAIT_MS });
  await page.locator('#tabs a[data-screen="pins"]').click();
  await page.locator('#view td', { hasText: `${UPSTREAM}/library/base` }).first().waitFor({ timeout: WAIT_MS });
  await page.locator('#tabs a[data-screen="audit"]').click();
  await page.getByRole('form', { name: 'Audit filters' }).waitFor({ timeout: WAIT_MS });
  await page.waitForTimeout(300);
  assert.equal(await failed.count(), 1, 'the failure is reported once');
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  assert.deepEqual(scriptErrors(), []);
});

test('Issue PKCS#12 checks the whole form as the PEM button does: Days 0 issues nothing, an empty Days means 365', async () => {
  const { page } = await openConsole('admin', '#/certs');
  const form = page.getByRole('form', { name: 'Issue a certificate' });
  await form.waitFor({ timeout: WAIT_MS });
  const issues: string[] = [];
  page.on('request', (req) => {
    if (req.method() === 'POST' && new URL(req.url()).pathname === '/api/v1/certs') issues.push(req.url());
  });
  await form.getByLabel('Name (CN)').fill('zero-days');
  await form.getByLabel('Days').fill('0');
  await form.getByRole('button', { name: 'Issue PKCS#12' }).click();
  await form.getByRole('button', { name: 'Issue PEM bundle' }).click();
  await page.waitForTimeout(500);
  assert.deepEqual(issues, [], 'neither button issues a certificate for 0 days');
  assert.equal(await form.getByLabel('Days').evaluate((el) => (el as unknown as { validity: { valid: boolean } }).validity.valid), false);

  await form.getByLabel('Name (CN)').fill('default-days');
  await form.getByLabel('Days').fill('');
  const [p12] = await Promise.all([page.waitForEvent('download'), form.getByRole('button', { name: 'Issue PKCS#12' }).click()]);
  assert.equal(p12.suggestedFilename(), 'default-days.p12');
  const res = await t.request('admin', '/api/v1/certs');
  const cert = (JSON.parse(res.body.toString()) as { certs: { name: string; notAfter: string }[] }).certs.find((c) => c.name === 'default-days');
  assert.ok(cert, 'the certificate is listed');
  const days = (new Date(cert.notAfter).getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 364 && days < 366, `valid for 365 days, not ${days}`);
  assert.deepEqual(scriptErrors(), []);
});

test('a screen that failed to load has a Retry button that loads it in place', async () => {
  const { page } = await openConsole('admin', '#/images');
  await page.locator('#view td', { hasText: `${UPSTREAM}/acme/web` }).first().waitFor({ timeout: WAIT_MS });
  let failures = 1;
  await page.route((url) => url.pathname === '/api/v1/pins', (route) => {
    if (failures-- > 0) return route.fulfill({ status: 503, json: { error: { code: 'UNAVAILABLE', message: 'held by the test' } } });
    return route.continue();
  });
  await page.locator('#tabs a[data-screen="pins"]').click();
  const retry = page.locator('#view').getByRole('button', { name: 'Retry' });
  await retry.waitFor({ timeout: WAIT_MS });
  await shoot(page, 'failed-screen-retry');
  await page.locator('.message.error', { hasText: 'Could not load pins' }).waitFor({ timeout: WAIT_MS });
  await retry.click();
  await page.locator('#view td', { hasText: `${UPSTREAM}/library/base` }).first().waitFor({ timeout: WAIT_MS });
  await page.locator('.message.error', { hasText: 'Could not load pins' }).waitFor({ state: 'detached', timeout: WAIT_MS });
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  assert.deepEqual(scriptErrors(), []);
});
