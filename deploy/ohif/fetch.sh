#!/usr/bin/env bash
# Fetches the OHIF viewer's prebuilt distribution (npm package @ohif/app, pinned version and
# checksum) into DEST, for the hub's clinician viewer (`viewer.ohif_dir = "DEST"`).
#
#   deploy/ohif/fetch.sh [DEST]        default DEST: ./ohif
#
# Needs npm (it only downloads the package tarball: `npm pack`, no install scripts run) and
# python3 for the checksum. Idempotent: a DEST that already holds this version is left alone.
set -euo pipefail

VERSION=3.13.2
INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
DEST=${1:-ohif}

if [ -f "$DEST/.ferry-ohif-version" ] && [ "$(cat "$DEST/.ferry-ohif-version")" = "$VERSION" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch.sh: npm is needed (apt install npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tarball="$work/ohif-app-$VERSION.tgz"
got=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
if [ "$got" != "$INTEGRITY" ]; then
  echo "fetch.sh: @ohif/app@$VERSION does not match its pinned checksum (got $got)" >&2
  exit 1
fi
tar xzf "$tarball" -C "$work" package/dist package/LICENSE
rm -rf "$DEST.partial"
mkdir -p "$(dirname "$DEST")"
mv "$work/package/dist" "$DEST.partial"
cp "$work/package/LICENSE" "$DEST.partial/LICENSE.OHIF"
echo "$VERSION" > "$DEST.partial/.ferry-ohif-version"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "OHIF viewer $VERSION in $DEST (set viewer.ohif_dir = \"$(cd "$DEST" && pwd)\")"
