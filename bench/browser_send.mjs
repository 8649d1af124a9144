// Sends a folder through the hub's send page in headless Chromium and prints how long scanning
// and sending took. Started by bench/browser_send.py (which prepares hub, account and folder).
// Env: HUB, EMAIL, PASSWORD, FOLDER, CODE.
import { chromium } from '../tests/node/node_modules/playwright-core/index.mjs';

const { HUB, EMAIL, PASSWORD, FOLDER, CODE } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await (await browser.newContext({ locale: 'en-GB' })).newPage();
  page.setDefaultTimeout(600000);
  await page.goto(`${HUB}/login`);
  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${HUB}/app`);
  await page.goto(`${HUB}/send/${CODE}`);
  let t0 = performance.now();
  await page.locator('#folder').setInputFiles(FOLDER);
  await page.locator('#found-total').waitFor();
  const scan = (performance.now() - t0) / 1000;
  const found = await page.locator('#found-total').innerText();
  t0 = performance.now();
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForURL(/\/transfers\/[0-9a-f-]{36}$/);
  const send = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ found, scan_s: +scan.toFixed(2), send_s: +send.toFixed(2), url: page.url() }));
} finally {
  await browser.close();
}
