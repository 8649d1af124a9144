#!/usr/bin/env bash
# Headless authorization-code + PKCE login against idp.mjs with curl alone (no browser), the same
# sequence a Rust test replays with reqwest (cookie store, no automatic redirects). See README.md.
# Usage: curl-flow.sh ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI [LOGIN]
#   TOKEN_AUTH=post sends the secret in the token request body.
# Prints the decoded ID token payload; exits non-zero on any unexpected answer.
set -euo pipefail
ISSUER=${1:?issuer}; CLIENT_ID=${2:?client id}; CLIENT_SECRET=${3:?client secret}
REDIRECT_URI=${4:?redirect uri}; LOGIN=${5:-alice}
JAR=$(mktemp); trap 'rm -f "$JAR"' EXIT
C=(curl -sS -b "$JAR" -c "$JAR" -o /dev/null)
fail() { echo "curl-flow: $*" >&2; exit 1; }
urlenc() { node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"; }

# 1. discovery
DISCO=$(curl -sS -f "$ISSUER/.well-known/openid-configuration")
AUTH_EP=$(node -e 'console.log(JSON.parse(process.argv[1]).authorization_endpoint)' "$DISCO")
TOKEN_EP=$(node -e 'console.log(JSON.parse(process.argv[1]).token_endpoint)' "$DISCO")

# PKCE S256, state, nonce
VERIFIER=$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64url"))')
CHALLENGE=$(node -e 'console.log(require("crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' "$VERIFIER")
STATE=st-$RANDOM$RANDOM; NONCE=n-$RANDOM$RANDOM

# 2. GET /auth -> 303, Location: /interaction/<uid> (relative), sets _interaction + _interaction_resume
Q="response_type=code&client_id=$(urlenc "$CLIENT_ID")&redirect_uri=$(urlenc "$REDIRECT_URI")"
Q+="&scope=openid%20email%20profile&state=$STATE&nonce=$NONCE&code_challenge=$CHALLENGE&code_challenge_method=S256"
read -r CODE LOC < <("${C[@]}" -w '%{http_code} %{redirect_url}\n' "$AUTH_EP?$Q")
[[ $CODE == 303 && $LOC == "$ISSUER/interaction/"* ]] || fail "auth: $CODE $LOC"
UID_=${LOC##*/}

# 3. GET /interaction/<uid> -> 200 HTML login form (action /interaction/<uid>/login)
read -r CODE < <("${C[@]}" -w '%{http_code}\n' "$ISSUER/interaction/$UID_")
[[ $CODE == 200 ]] || fail "interaction: $CODE"

# 4. POST /interaction/<uid>/login  prompt=login&login=..&password=..  -> 303 to /auth/<uid>
read -r CODE LOC < <("${C[@]}" -w '%{http_code} %{redirect_url}\n' \
  --data-urlencode prompt=login --data-urlencode "login=$LOGIN" --data-urlencode password=any \
  "$ISSUER/interaction/$UID_/login")
[[ $CODE == 303 && $LOC == "$ISSUER/auth/$UID_" ]] || fail "login: $CODE $LOC"

# 5. GET /auth/<uid> -> 303 to REDIRECT_URI?code=..&state=..&iss=.. (consent is granted by the IdP)
read -r CODE LOC < <("${C[@]}" -w '%{http_code} %{redirect_url}\n' "$LOC")
[[ $CODE == 303 && $LOC == "$REDIRECT_URI?"* ]] || fail "resume: $CODE $LOC"
AUTH_CODE=$(node -e 'const u=new URL(process.argv[1]); if (u.searchParams.get("state")!==process.argv[2]) process.exit(1); console.log(u.searchParams.get("code"))' "$LOC" "$STATE") \
  || fail "state mismatch in $LOC"

# 6. POST /token (client_secret_basic, or _post) -> 200 JSON {access_token, id_token, ...}
if [[ ${TOKEN_AUTH:-basic} == post ]]; then
  AUTH=(--data-urlencode "client_id=$CLIENT_ID" --data-urlencode "client_secret=$CLIENT_SECRET")
else
  AUTH=(-u "$(urlenc "$CLIENT_ID"):$(urlenc "$CLIENT_SECRET")")
fi
TOKENS=$(curl -sS -f "${AUTH[@]}" \
  --data-urlencode grant_type=authorization_code --data-urlencode "code=$AUTH_CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" --data-urlencode "code_verifier=$VERIFIER" "$TOKEN_EP") \
  || fail "token endpoint"
node -e '
  const t = JSON.parse(process.argv[1]);
  const p = JSON.parse(Buffer.from(t.id_token.split(".")[1], "base64url"));
  for (const k of ["email", "name", "nonce", "sub"]) if (!p[k]) { console.error("missing " + k); process.exit(1); }
  if (p.nonce !== process.argv[2]) { console.error("nonce mismatch"); process.exit(1); }
  console.log(JSON.stringify(p));' "$TOKENS" "$NONCE"
