// A real OpenID Connect provider (oidc-provider) for Ferry's end-to-end tests.
//
// Env: IDP_PORT (required), IDP_CLIENT_ID, IDP_CLIENT_SECRET, IDP_REDIRECT_URIS (comma-separated),
//      IDP_POST_LOGOUT_REDIRECT_URIS (comma-separated, optional).
// Binds 127.0.0.1 only (IDP_BIND overrides it for the demo compose file); issuer
// http://127.0.0.1:PORT (IDP_ISSUER overrides it). Any login name + any non-empty password signs
// in (password "wrong" is refused, to test a failed login); consent is granted automatically.
// stdout gets exactly one line, `ready http://127.0.0.1:PORT`; everything else goes to stderr.
// See README.md for the HTTP sequence of a login.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

// oidc-provider prints its notices with console.info (stdout): keep stdout for the ready line.
console.log = console.info = console.debug = (...args) => console.error(...args);

const { default: Provider } = await import('oidc-provider');

const env = process.env;
const port = Number.parseInt(env.IDP_PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('idp.mjs: IDP_PORT (1-65535) is required');
  process.exit(2);
}
const list = (value, fallback) => (value ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
const clientId = env.IDP_CLIENT_ID || 'ferry';
const clientSecret = env.IDP_CLIENT_SECRET || 'ferry-test-secret';
const redirectUris = list(env.IDP_REDIRECT_URIS, 'http://127.0.0.1:8080/auth/callback');
const postLogoutRedirectUris = list(env.IDP_POST_LOGOUT_REDIRECT_URIS, '');
const issuer = env.IDP_ISSUER || `http://127.0.0.1:${port}`;

// Accounts: accountId (= `sub`) is "sub-<login>"; the interaction below creates it from the login.
const ACCOUNT_PREFIX = 'sub-';
const loginOf = (accountId) => (accountId.startsWith(ACCOUNT_PREFIX) ? accountId.slice(ACCOUNT_PREFIX.length) : accountId);
function claimsFor(login) {
  const email = login.includes('@') ? login : `${login}@example.test`;
  const base = login.includes('@') ? login.slice(0, login.indexOf('@')) : login;
  const display = base.charAt(0).toUpperCase() + base.slice(1);
  return {
    email,
    email_verified: true,
    name: `Dr. ${display}`,
    given_name: display,
    family_name: 'Test',
    preferred_username: login,
  };
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'ferry-test-rs256', alg: 'RS256', use: 'sig' };

const baseClient = {
  client_secret: clientSecret,
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...(postLogoutRedirectUris.length ? { post_logout_redirect_uris: postLogoutRedirectUris } : {}),
};

const provider = new Provider(issuer, {
  // oidc-provider 9 accepts client_secret_basic and client_secret_post alike for such a client.
  clients: [{ ...baseClient, client_id: clientId, token_endpoint_auth_method: 'client_secret_basic' }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  },
  // Put the scope-granted claims (email, name) in the ID token, not only at userinfo.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 offers
  features: {
    devInteractions: { enabled: false }, // own minimal pages below: sub = "sub-<login>"
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const login = loginOf(id);
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...claimsFor(login) };
      },
    };
  },
  // Auto-consent: a first login gets a grant for everything the client asked for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' ') || 'openid');
    if (ctx.oidc.requestParamClaims.size) grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 600, IdToken: 3600, Interaction: 3600, Session: 86400, Grant: 86400,
  },
  clientBasedCORS: () => false,
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oops</title></head><body><h1>oops! something went wrong</h1><pre id="error">${escapeHtml(JSON.stringify(out, null, 2))}</pre></body></html>`;
  },
});

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>${body}</body></html>`);
}

function loginForm(uid, loginHint, error) {
  return `${error ? `<p id="error" style="color:#b00">${escapeHtml(error)}</p>` : ''}
<form id="login" autocomplete="off" action="/interaction/${uid}/login" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" value="${escapeHtml(loginHint ?? '')}" autofocus>
  <input required type="password" name="password" placeholder="and password">
  <button type="submit">Sign-in</button>
</form>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function grantConsent(req, res, details) {
  const { prompt, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  if (prompt.details.missingResourceScopes) {
    for (const [indicator, scope] of Object.entries(prompt.details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
  }
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
}

// GET  /interaction/<uid>        login form (or, for a consent prompt, grants it and redirects at once)
// POST /interaction/<uid>/login  prompt=login&login=..&password=..  -> 303 to /auth/<uid>
// GET  /interaction/<uid>/abort  -> 303 to /auth/<uid> (the client gets error=access_denied)
async function interaction(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?$/);
  if (!m) return false;
  const [, uid, action] = m;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    page(res, 400, 'Sign-in expired', `<p id="error">${escapeHtml(err.message)}</p>`);
    return true;
  }
  if (details.uid !== uid) {
    page(res, 400, 'Sign-in expired', '<p id="error">interaction mismatch</p>');
    return true;
  }
  if (action === 'abort') {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
    return true;
  }
  if (details.prompt.name === 'consent') {
    await grantConsent(req, res, details);
    return true;
  }
  if (details.prompt.name !== 'login') {
    page(res, 501, 'Not implemented', `<p id="error">prompt ${escapeHtml(details.prompt.name)}</p>`);
    return true;
  }
  if (action === 'login' && req.method === 'POST') {
    const form = await readForm(req);
    const login = (form.get('login') ?? '').trim();
    const password = form.get('password') ?? '';
    if (!login || !password || password === 'wrong') {
      page(res, 200, 'Sign-in', loginForm(uid, login, 'Invalid login or password.'));
      return true;
    }
    await provider.interactionFinished(req, res, { login: { accountId: ACCOUNT_PREFIX + login } }, { mergeWithLastSubmission: false });
    return true;
  }
  if (req.method !== 'GET' || action) {
    page(res, 405, 'Method not allowed', '');
    return true;
  }
  page(res, 200, 'Sign-in', loginForm(uid, details.params.login_hint));
  return true;
}

const providerCallback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (await interaction(req, res, url)) return;
    providerCallback(req, res);
  } catch (err) {
    console.error('idp.mjs:', err);
    if (!res.headersSent) page(res, 500, 'Internal error', `<p id="error">${escapeHtml(err.message)}</p>`);
    else res.end();
  }
});

provider.on('server_error', (ctx, err) => console.error('idp.mjs server_error:', err));

server.listen(port, env.IDP_BIND || '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
server.on('error', (err) => {
  console.error('idp.mjs:', err.message);
  process.exit(1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
