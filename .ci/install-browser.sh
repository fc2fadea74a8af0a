#!/usr/bin/env bash
# Install the headless browser the browser test (tests/test_browser.py) drives: Debian's
# `chromium`, which Playwright starts through `executable_path` (never `playwright install`,
# which downloads its own browsers from a CDN that CI machines cannot reach).
#
# Idempotent and fast when a Chromium is already there. Always exits 0: where it cannot
# install (no apt-get, not root, no registry), it says why and the browser test is skipped
# with that reason. Set NSTLIB_CHROMIUM to use a browser binary elsewhere.
set -u

say() { echo "install-browser: $*"; }

for candidate in "${NSTLIB_CHROMIUM:-}" chromium chromium-browser google-chrome-stable google-chrome; do
    [ -n "$candidate" ] || continue
    if path=$(command -v "$candidate" 2>/dev/null); then
        say "found $path ($("$path" --version 2>/dev/null | head -n1)); nothing to do."
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    say "no Chromium and no apt-get on this machine: install Chromium by hand (or set NSTLIB_CHROMIUM); the browser test will be skipped."
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        say "no Chromium, and installing it needs root (apt-get install chromium): the browser test will be skipped."
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    # --no-install-recommends keeps it to ~80 MB; fonts-liberation so that text renders in screenshots.
    timeout 900 $SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation >/tmp/install-browser.log 2>&1
}
say "installing Debian's chromium (about 80 MB, once)..."
if ! apt_install; then
    say "first try failed; refreshing the package lists and trying again."
    timeout 300 $SUDO apt-get update -q >>/tmp/install-browser.log 2>&1
    if ! apt_install; then
        say "could not install chromium (see /tmp/install-browser.log; last lines below); the browser test will be skipped."
        tail -n 5 /tmp/install-browser.log | sed 's/^/    /'
        exit 0
    fi
fi
say "installed $(command -v chromium) ($(chromium --version 2>/dev/null | head -n1))."
exit 0
