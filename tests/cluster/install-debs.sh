#!/usr/bin/env bash
# Debian packages the root-only deploy tests need (tests/cluster/test_deploy.py): sshd for the
# test hosts, rsync and ssh for the fleet scripts, ip for the namespaces, shellcheck to lint the
# scripts. Called by `make test`: installs only as root and only what is missing; otherwise it
# says nothing and the tests that need these tools skip themselves.
set -euo pipefail
[[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || exit 0
declare -A need=([/usr/sbin/sshd]=openssh-server [/usr/bin/ssh]=openssh-client [/usr/bin/rsync]=rsync
    [/usr/bin/shellcheck]=shellcheck)
missing=()
for path in "${!need[@]}"; do [[ -x $path ]] || missing+=("${need[$path]}"); done
command -v ip >/dev/null || missing+=(iproute2)
((${#missing[@]})) || exit 0
echo "installing ${missing[*]} for the deploy tests"
# Keep the package scripts from starting a system-wide sshd: the tests run their own.
guard=""
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 755 "$guard"
    trap 'rm -f "$guard"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
