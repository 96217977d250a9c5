#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (`make test-site`) and the PDF
# (`make pdf`). The tests drive /usr/bin/chromium through Playwright and never download a
# browser of their own (that fails on a machine without outside network). Does nothing when
# both are installed; otherwise needs root (CI runs as root) or sudo.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: /usr/bin/chromium or /usr/bin/chromedriver is missing and this is not root;" >&2
        echo "  install them with: apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
fi

echo "install-browser: installing Debian's chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium chromium-driver
/usr/bin/chromium --version
