#!/usr/bin/env bash
# update-plugins.sh: ship plugins only to the hub and the WASM spokes; the agents hot-reload them.
set -euo pipefail
HV_SCRIPT=$(basename "$0")
HV_SUMMARY="Syncs each node's plugin folder (the inventory's \`plugins\`) into <etc>/plugins on the hub and
the WASM spokes. No restart: the agent hot-reloads changed plugins. The previous set is kept in
<etc>/plugins.previous and restored when the node is not healthy afterwards. Native spokes are
updated with deploy-pizero-native.sh."
HV_WITH=plugins
HV_PROFILE=wasm
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"
hv_main "$@"
