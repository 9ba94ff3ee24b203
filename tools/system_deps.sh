#!/usr/bin/env bash
# Debian packages the test suite drives: headless Chromium + chromedriver (the web page's browser test),
# redis-server (the networked job engine's test) and Tesseract (an independent OCR judge of the domain heads).
# Installed with apt as root or through sudo; elsewhere the tests that need them are skipped with a reason.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v redis-server >/dev/null || need+=(redis-server)
command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then echo "system-deps: no apt-get; install ${need[*]} by hand (their tests are skipped)"; exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo
  else echo "system-deps: not root and no sudo; install ${need[*]} by hand (their tests are skipped)"; exit 0; fi
fi
echo "system-deps: installing ${need[*]} (apt)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
