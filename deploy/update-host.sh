#!/usr/bin/env bash
# update-host.sh: upgrade the agent package only (and its systemd unit) on the hub and WASM spokes.
set -euo pipefail
HV_SCRIPT=$(basename "$0")
HV_SUMMARY="Upgrades the agent package on the hub and the WASM spokes, keeping each node's config and
plugins: builds the wheel and the plugin sandbox once, installs the wheel into
<prefix>/releases/<version> with the sandbox precompiled for the node's CPU (after checking the
node's current config against it), switches <prefix>/current, restarts, waits for the health
check and rolls back on failure. Native spokes are updated with deploy-pizero-native.sh."
HV_WITH=package,unit
HV_PROFILE=wasm
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"
hv_main "$@"
