#!/usr/bin/env bash
# System tools some tests drive: docker-compose (validates docker-compose.yml; no engine needed)
# and Chromium (opens the HTML report). Installed from Debian's packages when missing.
set -u
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 0
fi
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}" >&2
