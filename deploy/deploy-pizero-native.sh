#!/usr/bin/env bash
# deploy-pizero-native.sh: deploy the native-profile service (Pi Zero spokes): package, config,
# plugins and the harvester-native unit, with a health check and automatic rollback.
set -euo pipefail
HV_SCRIPT=$(basename "$0")
HV_SUMMARY="Deploys the native service to the native-profile spokes (Pi Zero, no WebAssembly runtime):
builds the wheel once, ships it with the node's config, plugins and the harvester-native unit,
installs it into <prefix>/releases/<version>, switches <prefix>/current, restarts, waits until the
hub sees the node online on the new version and rolls back on failure."
HV_WITH=package,config,plugins,unit
HV_PROFILE=native
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"
hv_main "$@"
