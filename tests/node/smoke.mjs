// Smoke test of the browser wiring: Debian's /usr/bin/chromium driven by playwright-core (which never
// downloads a browser), against idp.mjs.
//  1. opens the IdP's discovery URL and checks the issuer;
//  2. logs in through the IdP's interaction page (/auth -> login form -> redirect_uri?code=..&state=..);
//     the redirect_uri is an unused 127.0.0.1 port, so only the request to it is observed;
//  3. exchanges the code at the token endpoint (from Node) and checks the ID token's claims.
// Starts its own idp.mjs on a free port unless IDP_ISSUER is set (then IDP_CLIENT_ID,
// IDP_CLIENT_SECRET and IDP_REDIRECT_URI describe the running IdP's client).
// Env: CHROMIUM (default /usr/bin/chromium). Exits 0 on success, 1 on failure.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Spawns idp.mjs and resolves once it printed `ready ISSUER`.
async function startIdp(env) {
  const child = spawn(process.execPath, [join(here, 'idp.mjs')], {
    env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  const issuer = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('idp.mjs not ready after 15 s')), 15000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/^ready (\S+)\n/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`idp.mjs exited with ${code}`)); });
  });
  return { child, issuer };
}

const t0 = performance.now();
const ms = (t) => `${Math.round(performance.now() - t)} ms`;
let idp;
let browser;
let ok = false;
try {
  let issuer = process.env.IDP_ISSUER;
  let clientId = process.env.IDP_CLIENT_ID || 'ferry';
  let clientSecret = process.env.IDP_CLIENT_SECRET || 'ferry-test-secret';
  let redirectUri = process.env.IDP_REDIRECT_URI;
  if (!issuer) {
    const [idpPort, cbPort] = [await freePort(), await freePort()];
    redirectUri = `http://127.0.0.1:${cbPort}/auth/callback`; // nothing listens there
    const tIdp = performance.now();
    idp = await startIdp({
      IDP_PORT: String(idpPort), IDP_CLIENT_ID: clientId, IDP_CLIENT_SECRET: clientSecret, IDP_REDIRECT_URIS: redirectUri,
    });
    issuer = idp.issuer;
    console.log(`idp ready at ${issuer} in ${ms(tIdp)}`);
  }
  if (!redirectUri) throw new Error('IDP_REDIRECT_URI is required with IDP_ISSUER');

  const tLaunch = performance.now();
  browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  console.log(`chromium ${browser.version()} launched in ${ms(tLaunch)}`);
  const context = await browser.newContext();
  const page = await context.newPage();

  // 1. discovery
  const resp = await page.goto(`${issuer}/.well-known/openid-configuration`);
  if (!resp.ok()) throw new Error(`discovery: HTTP ${resp.status()}`);
  const disco = JSON.parse(await page.locator('body').innerText());
  if (disco.issuer !== issuer) throw new Error(`discovery issuer ${disco.issuer} != ${issuer}`);
  console.log('discovery ok');

  // 2. login through the interaction page
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(12).toString('base64url');
  const nonce = randomBytes(12).toString('base64url');
  const auth = new URL(disco.authorization_endpoint);
  auth.search = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: 'openid email profile',
    state, nonce, code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
  }).toString();
  const tLogin = performance.now();
  await page.goto(auth.toString());
  if (!new URL(page.url()).pathname.startsWith('/interaction/')) throw new Error(`not on the login page: ${page.url()}`);
  await page.fill('input[name="login"]', 'alice');
  await page.fill('input[name="password"]', 'secret');
  const [cbRequest] = await Promise.all([
    page.waitForRequest((req) => req.url().startsWith(`${redirectUri}?`), { timeout: 15000 }),
    page.click('button[type="submit"]'),
  ]);
  const cb = new URL(cbRequest.url());
  const code = cb.searchParams.get('code');
  if (!code) throw new Error(`no code in ${cb}`);
  if (cb.searchParams.get('state') !== state) throw new Error(`state mismatch in ${cb}`);
  console.log(`browser login ok in ${ms(tLogin)}: landed on ${cb.origin}${cb.pathname}?code=…&state=…`);

  // 3. token exchange (client_secret_basic) and the ID token's claims
  const tokenResp = await fetch(disco.token_endpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }),
  });
  if (!tokenResp.ok) throw new Error(`token: HTTP ${tokenResp.status} ${await tokenResp.text()}`);
  const tokens = await tokenResp.json();
  const claims = JSON.parse(Buffer.from(tokens.id_token.split('.')[1], 'base64url'));
  if (claims.nonce !== nonce || claims.email !== 'alice@example.test' || claims.name !== 'Dr. Alice' || claims.sub !== 'sub-alice') {
    throw new Error(`unexpected ID token claims ${JSON.stringify(claims)}`);
  }
  console.log(`id_token ok: sub=${claims.sub} email=${claims.email} name="${claims.name}"`);
  ok = true;
} catch (err) {
  console.error('smoke failed:', err);
} finally {
  const tClose = performance.now();
  if (browser) await browser.close().catch(() => {});
  if (browser) console.log(`chromium closed in ${ms(tClose)}`);
  if (idp) {
    idp.child.kill('SIGTERM');
    await new Promise((resolve) => (idp.child.exitCode !== null ? resolve() : idp.child.once('exit', resolve)));
  }
}
console.log(`smoke ${ok ? 'passed' : 'FAILED'} in ${ms(t0)}`);
process.exit(ok ? 0 : 1);
