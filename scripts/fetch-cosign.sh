#!/usr/bin/env bash
# fetch-cosign.sh DEST: unpack Debian 13's cosign .deb into DEST (binary at DEST/usr/bin/cosign).
# Debian 12 has no cosign, and Debian 12's skopeo/podman have sigstore compiled out; trixie's
# cosign needs only libc6 >= 2.34. It is downloaded with a private apt state (its own sources,
# lists and cache under DEST/.apt) and unpacked with dpkg -x, so the system's apt is untouched.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
mkdir -p "$1"
DEST=$(cd "$1" && pwd)
BIN="$DEST/usr/bin/cosign"

if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  exit 0
fi

for tool in apt-get dpkg; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch-cosign: $tool is not available; cannot fetch cosign" >&2
    exit 1
  fi
done

# The archive URI the machine's apt already uses (deb822 first, then one-line format).
uri=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
  uri=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
if [[ -z "$uri" ]]; then
  echo "fetch-cosign: cannot find the Debian archive URI in the apt sources" >&2
  exit 1
fi

A="$DEST/.apt"
rm -rf "$A" "$DEST/deb"
mkdir -p "$A/parts" "$A/lists/partial" "$A/cache/archives/partial" "$DEST/deb"
printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$uri" >"$A/parts/trixie.sources"
O=(
  -o Dir::Etc::SourceList=/dev/null
  -o Dir::Etc::SourceParts="$A/parts"
  -o Dir::State::Lists="$A/lists"
  -o Dir::Cache="$A/cache"
  -o APT::Sandbox::User=root
)

apt-get "${O[@]}" -qq update
(cd "$DEST/deb" && apt-get "${O[@]}" -qq download cosign)

debs=("$DEST"/deb/cosign_*.deb)
if [[ ! -f "${debs[0]}" ]]; then
  echo "fetch-cosign: apt-get download produced no cosign .deb" >&2
  exit 1
fi
dpkg -x "${debs[0]}" "$DEST"
deb_name=$(basename "${debs[0]}")
rm -rf "$A"

if ! "$BIN" version >/dev/null 2>&1; then
  echo "fetch-cosign: $BIN was unpacked but does not run" >&2
  exit 1
fi
echo "fetch-cosign: unpacked $deb_name to $BIN"
