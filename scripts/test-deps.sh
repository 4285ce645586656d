#!/usr/bin/env bash
# test-deps.sh: install the system tools the test suite drives (only those missing), then fetch
# Debian 13's cosign into .cache/cosign. Idempotent; takes well under 2 s when all is present.
# As root with apt-get it installs; otherwise it prints what is missing and carries on, and the
# tests that need a missing tool fail with a message naming it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian package -> a file it installs, to check presence without dpkg.
declare -A PROBE=(
  [docker-registry]=/usr/bin/docker-registry
  [skopeo]=/usr/bin/skopeo
  [umoci]=/usr/bin/umoci
  [openssl]=/usr/bin/openssl
  [jq]=/usr/bin/jq
  [busybox-static]=/bin/busybox
  [podman]=/usr/bin/podman
  [buildah]=/usr/bin/buildah
  [containerd]=/usr/bin/containerd
  [runc]=/usr/sbin/runc
  [docker.io]=/usr/sbin/dockerd
  [nginx-light]=/usr/sbin/nginx
  [chromium]=/usr/bin/chromium
  [iproute2]=/usr/sbin/ip
  [uidmap]=/usr/bin/newuidmap
  [apache2-utils]=/usr/bin/htpasswd
  [curl]=/usr/bin/curl
  [python3]=/usr/bin/python3
)
PACKAGES=(docker-registry skopeo umoci openssl jq busybox-static podman buildah containerd runc
  docker.io nginx-light chromium iproute2 uidmap apache2-utils curl python3)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for pkg in "${PACKAGES[@]}"; do
    if ! grep -qx "$pkg installed" <<<"$installed" || [[ ! -e "${PROBE[$pkg]}" ]]; then
      missing+=("$pkg")
    fi
  done
else
  for pkg in "${PACKAGES[@]}"; do
    [[ -e "${PROBE[$pkg]}" ]] || missing+=("$pkg")
  done
fi

if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get -qq update
    apt-get -qq install -y "${missing[@]}" >/dev/null
  else
    echo "test-deps: missing (need root and apt-get to install): ${missing[*]}" >&2
    echo "test-deps: tests that need these tools will fail naming the tool" >&2
  fi
fi

COSIGN="$ROOT/.cache/cosign/usr/bin/cosign"
if ! { [[ -x "$COSIGN" ]] && "$COSIGN" version >/dev/null 2>&1; }; then
  echo "test-deps: fetching cosign into .cache/cosign"
  if ! bash "$ROOT/scripts/fetch-cosign.sh" "$ROOT/.cache/cosign"; then
    echo "test-deps: could not fetch cosign; signature tests that run cosign will fail" >&2
  fi
fi
