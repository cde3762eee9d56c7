#!/usr/bin/env bash
# System programs the test suite runs for real, installed from Debian's packages when missing
# (as root, or through sudo). Best effort: a test that needs a missing program fails and says
# which package to install.
#   prometheus, promtool: the metrics tests scrape the server with a real Prometheus and
#   check the shipped alert rules; they start their own on a free port, so the packaged
#   service is stopped if the install starts it.
#   nodejs: the credential form's script is run under Node by its tests (most machines
#   already have Node; Debian's package otherwise).
#   chromium: the browser tests drive JupyterLab in headless Chromium through Playwright,
#   launched from /usr/bin/chromium (Debian's build; no browser is downloaded).
set -uo pipefail

if ! command -v apt-get >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else exit 0; fi
fi

missing=()
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  missing+=(prometheus)
fi
if ! command -v node >/dev/null; then
  missing+=(nodejs)
fi
if ! command -v chromium >/dev/null; then
  missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} (Debian packages) for the tests" >&2
$sudo apt-get update -qq || true
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null || true
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus || true
elif [ -x /etc/init.d/prometheus ]; then # no systemd: the package's init script
  $sudo /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi
exit 0
