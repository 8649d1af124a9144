// The referrer → clinic → referrer journey in real Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), against a running hub and OpenID provider. Started by the Rust end-to-end
// test `browser::…`, which prepares the hub, the community, the clinic member and the study folder.
//
// Env: HUB, IDP_LABEL, OUTBOX (the hub's mail folder), STUDY_DIR, MEMBER_EMAIL, PASSWORD,
//      ARTIFACTS (screenshots), PATIENT (display form, e.g. "Jäger, Jörg").
// Exits 0 when every step saw what a person would expect; prints the step that failed otherwise.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`missing env ${k}`); return v; };
const HUB = env('HUB');
const OUTBOX = env('OUTBOX');
const STUDY_DIR = env('STUDY_DIR');
const ARTIFACTS = env('ARTIFACTS');
const PASSWORD = env('PASSWORD');
const MEMBER_EMAIL = env('MEMBER_EMAIL');
const PATIENT = env('PATIENT');
const IDP_LABEL = env('IDP_LABEL');
const REFERRER = `dr.browser.${Date.now()}@example.test`;
fs.mkdirSync(ARTIFACTS, { recursive: true });

let step = 'start';
const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
const expect = (cond, what) => { if (!cond) throw new Error(`expected: ${what}`); };

function mailedLink(to, route) {
  const files = fs.readdirSync(OUTBOX).sort();
  for (const f of files.reverse()) {
    const text = fs.readFileSync(path.join(OUTBOX, f), 'utf8');
    if (!text.split(/\r?\n/).some((l) => l.toLowerCase() === `to: ${to}`)) continue;
    const m = text.match(new RegExp(`${HUB.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}${route}\\?token=[0-9a-f]+`));
    if (m) return m[0];
  }
  throw new Error(`no ${route} link mailed to ${to}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

try {
  // --- the referrer registers, confirms, signs in locally (German browser) ---
  const referrer = await browser.newContext({ locale: 'de-DE', viewport: { width: 1280, height: 900 } });
  const page = await referrer.newPage();
  page.setDefaultTimeout(20000);
  step = 'register';
  await page.goto(`${HUB}/register`);
  expect(await page.locator('h1').innerText() === 'Als Zuweiser registrieren', 'German registration page');
  await page.getByLabel('Name', { exact: true }).fill('Dr. Browser Test');
  await page.getByLabel('Praxis / Einrichtung').fill('Praxis am Markt');
  await page.getByLabel('Anschrift').fill('Markt 1, 66111 Saarbrücken');
  await page.getByLabel('Telefon').fill('0681 4711');
  await page.getByLabel('E-Mail-Adresse').fill(REFERRER);
  await page.getByLabel('Neues Passwort (mind. 10 Zeichen)').fill(PASSWORD);
  await shot(page, '01-register');
  await page.getByRole('button', { name: 'Registrieren' }).click();
  await page.getByText('Fast geschafft').waitFor();

  step = 'verify';
  await page.goto(mailedLink(REFERRER, '/verify'));
  await page.getByText('Ihre E-Mail-Adresse ist bestätigt').waitFor();

  step = 'sign in locally';
  await page.goto(`${HUB}/login`);
  await page.getByLabel('E-Mail-Adresse').fill(REFERRER);
  await page.getByLabel('Passwort', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Anmelden' }).click();
  await page.waitForURL(`${HUB}/app`);
  await page.getByRole('heading', { name: 'Meine Sendungen' }).waitFor();

  // --- search the directory the way people type, pick the clinic ---
  step = 'directory search';
  await page.goto(`${HUB}/send`);
  await page.getByLabel('Einrichtung suchen (Name, Ort oder Code)').fill('saarbruecken');
  await page.getByRole('button', { name: 'Suchen' }).click();
  const hit = page.locator('li[data-code="bM1X"]');
  await hit.waitFor();
  expect((await hit.innerText()).includes('Radiologie Klinikum Saarbrücken'), 'the clinic is found by "saarbruecken"');
  await shot(page, '02-directory');
  await hit.getByRole('link', { name: 'Hierhin senden' }).click();
  await page.waitForURL(`${HUB}/send/bM1X`);

  // --- choose the study folder: the page shows what it found before sending ---
  step = 'scan folder';
  await page.getByLabel('Anlass / Fragestellung').fill('Verlaufskontrolle, bitte Befund');
  await page.locator('#folder').setInputFiles(STUDY_DIR);
  await page.locator('#found').waitFor();
  const found = await page.locator('#found').innerText();
  expect(found.includes(PATIENT), `the summary names the patient (${found})`);
  expect(found.includes('01.01.1970'), 'the summary shows the birth date');
  const skippedText = await page.locator('#summary').innerText();
  expect(skippedText.includes('CD/README.TXT (keine DICOM-Datei)'), `skipped files are named, in German (${skippedText})`);
  await shot(page, '03-send-summary');

  step = 'send';
  // The network breaks during the first upload request: the page retries that batch.
  let aborted = 0;
  await page.route(/\/api\/v1\/transfers\/[^/]+\/files$/, (route) => (aborted++ === 0 ? route.abort('connectionreset') : route.continue()));
  await page.getByRole('button', { name: 'Senden' }).click();
  // One file (no pixel data) is refused by the hub even when retried alone: the page names it
  // and offers to send the rest.
  await page.locator('#send-rest').waitFor({ timeout: 60000 });
  const problem = await page.locator('#summary [role="alert"]').innerText();
  expect(problem.includes('CD/DICOM/IM9999'), `the refused file is named (${problem})`);
  expect(aborted >= 3, `the broken batch was retried and the refused file tried again alone (${aborted} requests)`);
  await shot(page, '04-send-refused-file');
  await page.locator('#send-rest').click();
  // The progress bar fills up and the page says so before it moves on to the transfer.
  await page.waitForFunction(() => document.getElementById('progress').value >= 100 && document.getElementById('status').textContent === 'Gesendet.', null, { timeout: 60000 });
  await shot(page, '04a-progress-done');
  await page.waitForURL(/\/transfers\/[0-9a-f-]{36}$/, { timeout: 60000 });
  const transferUrl = page.url();
  expect((await page.locator('h1 .badge').innerText()) === 'Gesendet', 'state sent');
  await shot(page, '04-sent');

  // --- link the account to the OpenID provider (the referrer's hospital login) ---
  step = 'link OIDC';
  await page.goto(`${HUB}/account`);
  await page.getByRole('link', { name: `Verknüpfen mit ${IDP_LABEL}` }).click();
  await page.locator('input[name="login"]').fill(REFERRER);
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('button[type="submit"]').click();
  await page.waitForURL(`${HUB}/account`);
  step = 'sign out';
  await page.getByRole('button', { name: 'Abmelden' }).click();
  await page.waitForURL(`${HUB}/`);

  // --- the clinic: its admin on a phone sees it in the worklist, opens it, marks it done, and
  //     finds that in the audit trail ---
  step = 'member sign in';
  const clinic = await browser.newContext({ locale: 'en-GB', viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const cp = await clinic.newPage();
  cp.setDefaultTimeout(20000);
  await cp.goto(`${HUB}/login`);
  expect((await cp.locator('h1').innerText()) === 'Sign in', 'English for an English browser');
  await cp.getByLabel('Email address').fill(MEMBER_EMAIL);
  await cp.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await cp.getByRole('button', { name: 'Sign in' }).click();
  await cp.waitForURL(`${HUB}/app`);
  step = 'worklist';
  await cp.goto(`${HUB}/inbound`);
  const row = cp.locator('tr[data-transfer]').first();
  await row.waitFor();
  const rowText = await row.innerText();
  expect(rowText.includes(PATIENT) && rowText.includes('Dr. Browser Test') && rowText.includes('1970-01-01'), `worklist row (${rowText})`);
  await shot(cp, '05-worklist-phone');
  await row.getByRole('link').first().click();
  await cp.waitForURL(transferUrl);

  step = 'viewer';
  await cp.getByRole('link', { name: 'View' }).first().click();
  await cp.waitForFunction(() => { const i = document.getElementById('frame'); return i && i.complete && i.naturalWidth > 0; });
  await cp.getByRole('button', { name: 'Next image' }).click();
  await cp.waitForFunction(() => document.getElementById('position').textContent.startsWith('2 /'));
  await cp.waitForFunction(() => { const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0; });
  await shot(cp, '06-viewer-phone');
  await cp.goBack();
  await cp.waitForURL(transferUrl);

  step = 'mark done';
  await cp.locator('#done-message').fill('Im PACS, Termin steht');
  await cp.getByRole('button', { name: 'Mark done' }).click();
  await cp.waitForURL(transferUrl);
  expect((await cp.locator('h1 .badge').innerText()) === 'Done', 'state done for the clinic');
  await shot(cp, '07-done');

  step = 'audit trail';
  await cp.goto(`${HUB}/audit`);
  await cp.getByLabel('Action').fill('transfer.done');
  await cp.getByRole('button', { name: 'Filter' }).click();
  await cp.waitForURL((u) => u.pathname === '/audit' && u.search.includes('action=transfer.done'));
  const done = cp.locator('tr[data-action="transfer.done"]');
  expect((await done.count()) === 1 && (await done.innerText()).includes('MTA Klinikum'), 'the audit trail shows who marked it done');
  expect(!(await cp.locator('main').innerText()).includes(PATIENT), 'no patient name in the audit trail');
  await shot(cp, '07b-audit-phone');

  // --- the referrer signs in through the OpenID provider and sees the outcome ---
  step = 'referrer OIDC sign in';
  await page.goto(`${HUB}/login`);
  await page.getByRole('link', { name: `Anmelden mit ${IDP_LABEL}` }).click();
  // The provider may still know the browser (its own session); then it answers at once.
  await page.waitForURL((u) => u.href.startsWith(`${HUB}/app`) || u.pathname.startsWith('/interaction/'));
  if (!page.url().startsWith(`${HUB}/app`)) {
    await page.locator('input[name="login"]').fill(REFERRER);
    await page.locator('input[name="password"]').fill('any password');
    await page.locator('button[type="submit"]').click();
    await page.waitForURL(`${HUB}/app`);
  }
  step = 'referrer sees the state';
  const mine = page.locator('tr[data-transfer]').first();
  await mine.waitFor();
  expect((await mine.locator('.badge').innerText()) === 'Erledigt', 'the sender sees "done"');
  await page.goto(transferUrl);
  expect((await page.locator('#state-message').innerText()).includes('Im PACS, Termin steht'), 'the clinic message');
  await shot(page, '08-referrer-sees-done');

  step = 'language switch';
  await page.getByRole('link', { name: 'English' }).click();
  await page.waitForURL(transferUrl);
  expect((await page.locator('h1 .badge').innerText()) === 'Done', 'switched to English');
  console.log('browser journey ok');
} catch (e) {
  console.error(`step "${step}" failed: ${e.message}`);
  for (const ctx of browser.contexts()) for (const p of ctx.pages()) await shot(p, `failed-${step.replace(/\W+/g, '-')}-${ctx.pages().indexOf(p)}`).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
