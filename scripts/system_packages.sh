#!/usr/bin/env bash
# Installs the Debian packages some tests need, when this machine can (apt-get and root):
# espeak-ng (viseme training data) and chromium (the browser-page test). Without them those tests
# skip and the summary names them; nothing else depends on them. Idempotent and quiet.
set -uo pipefail
want=()
command -v espeak-ng >/dev/null 2>&1 || want+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || want+=(chromium)
/sbin/ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2' || want+=(libportaudio2)  # PortAudio: `syncvid vcam --mic/--play-to` (its tests use a fake)
[ ${#want[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "note: ${want[*]} not installed (needs apt-get as root): their tests will skip"
  exit 0
fi
echo "installing ${want[*]} for their tests (apt-get) ..."
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${want[@]}" >/dev/null 2>&1 \
  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${want[@]}" >/dev/null 2>&1) \
  || echo "note: could not install ${want[*]}: their tests will skip"
exit 0
