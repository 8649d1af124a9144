// The clinician viewer in real Chromium: a community member opens inbound studies in OHIF (served
// by the hub under /ohif/, on the hub's DICOMweb with the member's session cookie), the study list
// shows them and an image is actually drawn in the viewport; a member of another community and an
// anonymous browser get nothing. Started by the Rust end-to-end test `viewer::…`.
//
// Env: HUB, PASSWORD, MEMBER_EMAIL, OTHER_EMAIL, ARTIFACTS (screenshots),
//      STUDIES (JSON: [{uid, name, label}] — the studies the member may see, `name` as OHIF lists
//      the patient).
// Exits 0 when every step saw what a person would expect; prints the step that failed otherwise.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`missing env ${k}`); return v; };
const HUB = env('HUB');
const PASSWORD = env('PASSWORD');
const MEMBER_EMAIL = env('MEMBER_EMAIL');
const OTHER_EMAIL = env('OTHER_EMAIL');
const ARTIFACTS = env('ARTIFACTS');
const STUDIES = JSON.parse(env('STUDIES'));
fs.mkdirSync(ARTIFACTS, { recursive: true });

let step = 'start';
const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
const expect = (cond, what) => { if (!cond) throw new Error(`expected: ${what}`); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// What the page did that a person would not see: failed requests, CSP refusals, script errors.
const thumbnails = [];
function watch(page, log) {
  page.on('response', (r) => { if (r.url().includes('/thumbnail')) thumbnails.push(`${r.status()} ${r.headers()['content-type']}`); });
  page.on('console', (m) => { if (m.type() === 'error') log.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) log.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
}

async function signIn(email) {
  const ctx = await browser.newContext({ locale: 'en-GB', viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(30000);
  await page.goto(`${HUB}/login`);
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${HUB}/app`);
  return { ctx, page };
}

// Pixels drawn into the viewport's canvas: how many are not background, and how many distinct
// grey levels (an image, not a blank or a flat "loading" fill).
async function drawn(page) {
  return page.evaluate(() => {
    const canvases = [...document.querySelectorAll('.cornerstone-viewport-element canvas, canvas.cornerstone-canvas')];
    let best = { lit: 0, levels: 0, w: 0, h: 0 };
    for (const c of canvases) {
      if (!c.width || !c.height) continue;
      const g = c.getContext('2d', { willReadFrequently: true });
      if (!g) continue;
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let lit = 0; const levels = new Set();
      for (let i = 0; i < d.length; i += 4) {
        const v = d[i] + d[i + 1] + d[i + 2];
        if (v > 30) lit++;
        levels.add(d[i] >> 2);
      }
      if (lit > best.lit) best = { lit, levels: levels.size, w: c.width, h: c.height };
    }
    return best;
  });
}

let failures = [];
let current = null;
const log = [];
try {
  // --- a member of the receiving community ---
  step = 'member sign in';
  const { ctx: memberCtx, page } = await signIn(MEMBER_EMAIL);
  current = page;
  watch(page, log);

  step = 'worklist link';
  await page.goto(`${HUB}/inbound`);
  const link = page.getByRole('link', { name: 'Open in viewer' }).first();
  await link.waitFor();
  const href = await link.getAttribute('href');
  expect(href.startsWith('/ohif/viewer?StudyInstanceUIDs='), `worklist links to OHIF (${href})`);

  // "Open in viewer" opens the transfer's studies in OHIF, in a new tab.
  step = 'open in viewer from the worklist';
  const [tab] = await Promise.all([memberCtx.waitForEvent('page'), link.click()]);
  watch(tab, log);
  await tab.waitForLoadState();
  expect(new URL(tab.url()).pathname === '/ohif/viewer', `the link opened OHIF (${tab.url()})`);
  let opened = { lit: 0 };
  for (let i = 0; i < 120 && opened.lit <= 200; i++) {
    await tab.waitForTimeout(500);
    opened = await drawn(tab);
  }
  await shot(tab, '00-opened-from-worklist');
  expect(opened.lit > 200, `an image drawn after "Open in viewer" (${JSON.stringify(opened)})`);
  await tab.close();

  step = 'study list';
  await page.goto(`${HUB}/ohif/`);
  for (const s of STUDIES) {
    await page.getByText(s.name, { exact: false }).first().waitFor({ timeout: 60000 });
  }
  await shot(page, '01-study-list');
  // The list's patient filter searches the hub (case-insensitive, as typed).
  step = 'study list filter';
  const last = STUDIES[STUDIES.length - 1];
  await page.locator('input').first().fill(last.name.split(',')[0].toLowerCase());
  await page.waitForFunction(([keep, drop]) => {
    const t = document.body.innerText;
    return t.includes(keep) && !drop.some((d) => t.includes(d));
  }, [last.name, STUDIES.slice(0, -1).map((s) => s.name)], { timeout: 30000 });
  await shot(page, '01b-study-list-filtered');

  for (const [i, s] of STUDIES.entries()) {
    step = `viewer: ${s.label}`;
    await page.goto(`${HUB}/ohif/viewer?StudyInstanceUIDs=${s.uid}`);
    let seen = { lit: 0, levels: 0 };
    const deadline = Date.now() + 90000;
    while (Date.now() < deadline) {
      seen = await drawn(page);
      if (seen.lit > 200 && seen.levels > 4) break;
      await page.waitForTimeout(500);
    }
    await shot(page, `0${i + 2}-viewer-${s.label}`);
    console.log(`${s.label}: ${seen.lit} lit pixels, ${seen.levels} grey levels on a ${seen.w}x${seen.h} canvas`);
    expect(seen.lit > 200 && seen.levels > 4, `an image drawn in the viewport for ${s.label} (${JSON.stringify(seen)}; ${log.join(' | ')})`);
  }
  // The series thumbnails in the study browser come from the hub's thumbnail endpoint.
  expect(thumbnails.length >= 3 && thumbnails.every((t) => t === '200 image/jpeg'), `thumbnails from the hub (${thumbnails.join(', ')})`);
  step = 'multi-frame: next frame';
  await page.locator('.cornerstone-viewport-element').first().hover();
  await page.mouse.wheel(0, 120);
  await page.getByText('(2/8)').first().waitFor();
  const frame2 = await drawn(page);
  expect(frame2.lit > 200, `frame 2 drawn (${JSON.stringify(frame2)})`);
  await shot(page, '05-viewer-multiframe-frame2');
  const refused = log.filter((l) => /Content Security Policy|^[45]\d\d /.test(l));
  expect(refused.length === 0, `no CSP refusals or failed requests (${refused.join(' | ')})`);
  console.log(`member log: ${log.length ? log.join(' | ') : 'clean'}`);
  await memberCtx.close();

  // --- a member of another community: the same links show nothing ---
  step = 'other community';
  const { ctx: otherCtx, page: op } = await signIn(OTHER_EMAIL);
  current = op;
  await op.goto(`${HUB}/ohif/`);
  await op.getByText(/No studies available/i).first().waitFor({ timeout: 60000 });
  for (const s of STUDIES) {
    expect(await op.getByText(s.name).count() === 0, `another community's member does not see ${s.label}`);
  }
  const qido = await op.request.get(`${HUB}/dicomweb/studies?StudyInstanceUID=${STUDIES[0].uid}`);
  expect(qido.status() === 200 && (await qido.json()).length === 0, 'QIDO with the other member\'s session finds nothing');
  const meta = await op.request.get(`${HUB}/dicomweb/studies/${STUDIES[0].uid}/metadata`);
  expect(meta.status() === 404, `metadata of a study they may not see: 404 (got ${meta.status()})`);
  await op.goto(`${HUB}/ohif/viewer?StudyInstanceUIDs=${STUDIES[0].uid}`);
  await op.waitForTimeout(3000);
  const other = await drawn(op);
  await shot(op, '10-other-community');
  expect(other.lit === 0, `nothing drawn for another community's member (${JSON.stringify(other)})`);
  await otherCtx.close();

  // --- an anonymous browser: sent to sign in; DICOMweb answers 401 ---
  step = 'anonymous';
  const anon = await browser.newContext({ locale: 'en-GB' });
  const ap = await anon.newPage();
  await ap.goto(`${HUB}/ohif/viewer?StudyInstanceUIDs=${STUDIES[0].uid}`);
  expect(new URL(ap.url()).pathname === '/login', `anonymous viewer visit lands on sign-in (${ap.url()})`);
  const aq = await ap.request.get(`${HUB}/dicomweb/studies`);
  expect(aq.status() === 401, `anonymous QIDO: 401 (got ${aq.status()})`);
  await anon.close();

  console.log('ohif journey ok');
} catch (e) {
  console.error(`step "${step}" failed: ${e.message}`);
  console.error(`page log: ${log.join('\n  ')}`);
  if (current) await shot(current, 'failed').catch(() => {});
  failures.push(e);
} finally {
  await browser.close();
}
process.exit(failures.length ? 1 : 0);
