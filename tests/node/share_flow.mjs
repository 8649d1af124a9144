// The access-code journey in real Chromium (Debian's /usr/bin/chromium driven by playwright-core):
// clinic staff upload a study, create a share and print its sheet; the sheet's QR code (pdftoppm +
// zbarimg) leads a phone to the redeem page; the patient answers with the birth date, scrolls a
// series in the viewer, changes the window, opens the report and downloads the ZIP. Started by the
// Rust end-to-end test `browser::…`, which checks the ZIP with dcmtk, pydicom and Orthanc.
//
// Env: HUB, MEMBER_EMAIL, PASSWORD, STUDY_DIR, REPORT (a PDF), BIRTH (DD.MM.YYYY), ARTIFACTS.
// Prints "share journey ok" when every step saw what a person would expect.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`missing env ${k}`); return v; };
const HUB = env('HUB');
const ARTIFACTS = env('ARTIFACTS');
const STUDY_DIR = env('STUDY_DIR');
fs.mkdirSync(ARTIFACTS, { recursive: true });

let step = 'start';
const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
const expect = (cond, what) => { if (!cond) throw new Error(`expected: ${what}`); };
const loaded = (page, sel) => page.waitForFunction((s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }, sel);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

try {
  // --- clinic staff: upload, share, print the sheet, attach the report ---
  step = 'staff sign in';
  const clinic = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const sp = await clinic.newPage();
  sp.setDefaultTimeout(20000);
  await sp.goto(`${HUB}/login`);
  await sp.getByLabel('Email address').fill(env('MEMBER_EMAIL'));
  await sp.getByLabel('Password', { exact: true }).fill(env('PASSWORD'));
  await sp.getByRole('button', { name: 'Sign in' }).click();
  await sp.waitForURL(`${HUB}/app`);

  step = 'upload for a share';
  await sp.getByRole('link', { name: 'Shares' }).click();
  await sp.waitForURL(`${HUB}/shares`);
  await sp.goto(`${HUB}/shares/new?community=RAD1`);
  const files = fs.readdirSync(STUDY_DIR).map((f) => path.join(STUDY_DIR, f));
  await sp.locator('#files').setInputFiles(files);
  await sp.locator('#upload-form').getByRole('button', { name: 'Upload' }).click();
  await sp.waitForURL(/\/shares\/[0-9a-f-]{36}$/);
  const shareUrl = sp.url();
  expect((await sp.locator('#share-state').innerText()) === 'draft', 'a draft after the upload');

  step = 'create the code';
  await sp.locator('#days').selectOption('84');
  await sp.getByRole('button', { name: 'Create the code' }).click();
  await sp.locator('#code').waitFor();
  const code = (await sp.locator('#code').innerText()).trim();
  expect(/^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$/.test(code), `a grouped code (${code})`);
  await shot(sp, '10-share-issued');

  step = 'print the sheet';
  const sheet = await sp.request.post(`${shareUrl}/sheet.pdf`, { form: { code } });
  expect(sheet.ok() && sheet.headers()['content-type'] === 'application/pdf', 'the sheet is a PDF');
  const sheetPath = path.join(ARTIFACTS, 'sheet.pdf');
  fs.writeFileSync(sheetPath, await sheet.body());
  execFileSync('pdftoppm', ['-r', '150', '-png', '-f', '1', '-l', '1', sheetPath, path.join(ARTIFACTS, '11-sheet')]);
  const png = fs.readdirSync(ARTIFACTS).find((f) => f.startsWith('11-sheet') && f.endsWith('.png'));
  const url = execFileSync('zbarimg', ['--quiet', '--raw', path.join(ARTIFACTS, png)]).toString().trim();
  expect(url === `${HUB}/redeem?token=${code}`, `the QR code holds the redeem link (${url})`);

  step = 'attach the report';
  await sp.goto(shareUrl);
  await sp.locator('#report').setInputFiles(env('REPORT'));
  await sp.locator('#release').fill('0');
  await sp.getByRole('button', { name: 'Upload' }).click();
  await sp.waitForURL(shareUrl);
  expect((await sp.locator('#share-state').innerText()) === 'active', 'the share is active');

  // --- the patient, on a phone, follows the QR code ---
  step = 'redeem on a phone';
  const phone = await browser.newContext({ locale: 'de-DE', viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, acceptDownloads: true });
  const pp = await phone.newPage();
  pp.setDefaultTimeout(20000);
  await pp.goto(url);
  expect((await pp.locator('#token').inputValue()) === code, 'the code arrives from the QR link');
  await shot(pp, '12-redeem-phone');
  await pp.locator('#answer').fill('02.01.1970');
  await pp.getByRole('button', { name: 'Weiter' }).click();
  expect((await pp.locator('p.error').innerText()).includes('stimmen nicht'), 'a wrong birth date is refused');
  await pp.locator('#answer').fill(env('BIRTH'));
  await pp.getByRole('button', { name: 'Weiter' }).click();
  await pp.waitForURL(`${HUB}/s`);
  await loaded(pp, 'li[data-study] img');
  expect((await pp.locator('#expires').innerText()).length >= 10, 'available until is shown');
  await shot(pp, '13-overview-phone');

  step = 'viewer';
  await pp.getByRole('link', { name: 'Ansehen' }).first().click();
  await loaded(pp, '#frame');
  expect((await pp.locator('#position').innerText()).startsWith('1 /'), 'the first image');
  await pp.locator('#next').click();
  await pp.waitForFunction(() => document.getElementById('position').textContent.startsWith('2 /'));
  await loaded(pp, '#frame');
  // Dragging in "scroll" mode pages through the series (pointer events, as a finger does).
  const box = await pp.locator('#stage').boundingBox();
  await pp.mouse.move(box.x + box.width / 2, box.y + 20);
  await pp.mouse.down();
  await pp.mouse.move(box.x + box.width / 2, box.y + 80, { steps: 6 });
  await pp.mouse.up();
  await pp.waitForFunction(() => !document.getElementById('position').textContent.startsWith('2 /'));
  await pp.getByRole('button', { name: 'Lunge' }).click();
  await pp.waitForFunction(() => document.getElementById('frame').src.includes('window=-600,1500'));
  await loaded(pp, '#frame');
  await pp.locator('#zoom-in').click();
  expect((await pp.locator('#zoom-level').innerText()) === '125 %', 'zoomed in');
  expect((await pp.locator('.notice').first().innerText()).includes('Nicht für die Befundung'), 'labelled not for diagnostic use');
  await shot(pp, '14-viewer-phone');

  step = 'report';
  await pp.goto(`${HUB}/s`);
  const href = await pp.getByRole('link', { name: 'Befund öffnen (PDF)' }).getAttribute('href');
  const report = await pp.request.get(`${HUB}${href}`);
  expect(report.ok() && report.headers()['content-type'] === 'application/pdf', 'the report opens as a PDF');

  step = 'download';
  const [download] = await Promise.all([pp.waitForEvent('download'), pp.locator('#download-all').click()]);
  await download.saveAs(path.join(ARTIFACTS, 'share.zip'));
  console.log('share journey ok');
} catch (e) {
  console.error(`step "${step}" failed: ${e.message}`);
  for (const ctx of browser.contexts()) for (const p of ctx.pages()) await shot(p, `failed-share-${step.replace(/\W+/g, '-')}-${ctx.pages().indexOf(p)}`).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
