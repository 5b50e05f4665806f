#!/usr/bin/env bash
# update-all-nodes.sh: upgrade the whole cluster (hub first, then every spoke) to one release:
# wheel, node config, plugins and systemd unit, with a health check and automatic rollback.
set -euo pipefail
HV_SCRIPT=$(basename "$0")
HV_SUMMARY="Upgrades every node in the inventory, the hub first, then the WASM and native spokes: builds
the wheel (and for WASM nodes the plugin sandbox) once, ships it with each node's config, plugins
and systemd unit over ssh (rsync), installs it into <prefix>/releases/<version> (precompiling the
sandbox for the node's CPU), switches <prefix>/current, restarts the agent and
waits until the hub sees the node online on the new version. A node that fails the health check
is switched back to its previous release on its own. Nodes already up to date are left alone."
HV_WITH=package,config,plugins,unit
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"
hv_main "$@"
