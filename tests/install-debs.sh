#!/usr/bin/env bash
# Debian packages the test suite needs, installed by `make test` only as root and only what is
# missing; otherwise it does nothing and the tests that need them skip themselves.
#   deploy tests (tests/cluster/test_deploy.py): sshd for the test hosts, ssh and rsync for the
#     fleet scripts, ip for the namespaces, shellcheck to lint the scripts;
#   dashboard tests (tests/e2e, /metrics): chromium driven headless, prometheus for promtool,
#     an emoji font so the page's 🟢/🔴 dots render in screenshots as on a phone;
#   export tests (tests/integration/test_export.py): victoria-metrics, the time-series engine
#     the hub streams its history to;
#   Home Assistant tests (tests/integration/test_mqtt.py): mosquitto, the MQTT broker.
set -euo pipefail
[[ $(id -u) -eq 0 ]] || exit 0
command -v apt-get >/dev/null || exit 0
declare -A need=([/usr/sbin/sshd]=openssh-server [/usr/bin/ssh]=openssh-client [/usr/bin/rsync]=rsync
    [/usr/bin/shellcheck]=shellcheck [/usr/bin/chromium]=chromium [/usr/bin/promtool]=prometheus
    [/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf]=fonts-noto-color-emoji
    [/usr/bin/victoria-metrics]=victoria-metrics [/usr/sbin/mosquitto]=mosquitto)
missing=()
for path in "${!need[@]}"; do [[ -e $path ]] || missing+=("${need[$path]}"); done
command -v ip >/dev/null || missing+=(iproute2)
((${#missing[@]})) || exit 0
echo "installing ${missing[*]} for the test suite"
# Keep package scripts from starting system-wide services (sshd, prometheus, victoria-metrics, mosquitto): tests run their own.
guard=""
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 755 "$guard"
    trap 'rm -f "$guard"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
