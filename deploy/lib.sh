# shellcheck shell=bash
# lib.sh: the shared code of the Harvester fleet scripts (update-all-nodes.sh, update-plugins.sh,
# update-host.sh, deploy-pizero-native.sh). Sourced, never run. Needs bash >= 4, ssh, rsync and
# Python >= 3.11 (tomllib) on the operator's machine.
#
# A script sets what it ships (HV_WITH: package, config, plugins, unit) and which nodes it
# targets (HV_ROLE, HV_PROFILE), then calls hv_main "$@", which:
#   1. reads the inventory (inventory.py validates it and prints one record per target node);
#   2. checks every node config that will be shipped with `harvester config check`;
#   3. builds the wheel once (version <setup.cfg version>+h<hash of the source>, or --release),
#      and for WASM nodes the plugin sandbox component from the wheel's WIT and guest sources
#      (componentize-py runs here, never on a board);
#   4. for each target node, hub first: probes it over ssh, rsyncs a bundle (wheel, sandbox,
#      node.toml, plugins, systemd unit, node-release.sh) into <prefix>/staging, and runs
#      node-release.sh there. That script installs the release into releases/<version> (and
#      precompiles the sandbox for the board's CPU), switches `current`,
#      restarts the agent, waits for `harvester health` and rolls back on its own when the check
#      fails: the decision is made on the node, so a dropped ssh link cannot leave it half-done;
#   5. prints a summary and exits with the worst outcome (see hv_help).
# Orchestration is bash because every step is an ssh, rsync or systemctl command an operator
# can read and copy from --dry-run; the only parsing, TOML, is done by the small Python helper.

HV_DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HV_REPO=$(dirname "$HV_DEPLOY_DIR")
readonly HV_OK=0 HV_USAGE=2 HV_ROLLED_BACK=3 HV_UNREACHABLE=4 HV_DEAD=5

HV_WITH=${HV_WITH:-package,config,plugins,unit}
HV_ROLE=${HV_ROLE:-}
HV_PROFILE=${HV_PROFILE:-}
HV_WORST=$HV_OK
declare -a HV_RESULTS=()
declare -A N=()

hv_help() {
    cat <<EOF
Usage: $HV_SCRIPT [options]

$HV_SUMMARY

Options:
  -i, --inventory FILE     fleet inventory (default: \$HARVESTER_INVENTORY, else deploy/inventory.toml)
  -n, --node NAME          only this node (repeatable); default: every node this script targets
      --dry-run            print every action; build nothing, contact no host, change nothing
      --keep-going         a failed or unreachable node does not stop the others (the default)
      --fail-fast          stop at the first node that fails or cannot be reached
      --ssh-config FILE    ssh client config (default: \$HARVESTER_SSH_CONFIG, else ~/.ssh/config)
      --health-timeout S   seconds a node gets to become healthy (default: the inventory's, else 90)
EOF
    if hv_with package; then
        cat <<EOF
      --release VERSION    version of the wheel to build (default: <setup.cfg version>+h<source hash>,
                           so the same source is the same release and a re-run changes nothing)
      --source DIR         build from this source tree (default: the repository holding this script)
      --wheel FILE         deploy this wheel instead of building one
      --wheelhouse DIR     ship these wheels too and install offline (pip --no-index --find-links)
EOF
    fi
    cat <<EOF
  -h, --help               this text

Exit status (the worst outcome over all nodes wins; the summary lists each node):
  0  every target node runs what was shipped (or already did) and passed its health check
  2  usage, inventory, config or build error: no node was touched
  3  a node refused the update (nothing changed there) or failed its health check and was
     rolled back to its previous release, which is healthy
  4  a node could not be reached over ssh: nothing changed there
  5  a node is unhealthy even after rollback, or had no release to roll back to: look at it now
     (nodes after a dead hub are skipped and reported with this status too)

Environment: HARVESTER_INVENTORY, HARVESTER_SSH_CONFIG, HARVESTER_PYTHON (the Python that builds
the wheel and reads the inventory; default .venv/bin/python of this repository, else python3).
EOF
}

hv_with() { [[ ",$HV_WITH," == *",$1,"* ]]; }
hv_err() { printf '%s: error: %s\n' "$HV_SCRIPT" "$*" >&2; }
hv_usage_error() {
    hv_err "$*"
    printf 'Try %s --help\n' "$HV_SCRIPT" >&2
    exit "$HV_USAGE"
}
hv_say() { printf '[%s] %s\n' "$1" "$2"; }
hv_prefix() { local line; while IFS= read -r line; do printf '[%s] %s\n' "$1" "$line"; done; }
hv_quote() {  # words quoted for a POSIX shell (the node's login shell parses our ssh commands)
    local a out=()
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:@%+=,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
    done
    printf '%s' "${out[*]}"
}
hv_raise() { ((${1} > HV_WORST)) && HV_WORST=$1; return 0; }

hv_parse_args() {
    HV_INVENTORY=${HARVESTER_INVENTORY:-$HV_DEPLOY_DIR/inventory.toml}
    HV_SSH_CONFIG=${HARVESTER_SSH_CONFIG:-}
    HV_NODES=() HV_DRY_RUN=0 HV_FAIL_FAST=0 HV_RELEASE="" HV_SOURCE=$HV_REPO HV_WHEEL="" HV_WHEELHOUSE=""
    HV_HEALTH_TIMEOUT=""
    local build_opt=""
    while (($#)); do
        case $1 in
            -h | --help) hv_help; exit 0 ;;
            --dry-run) HV_DRY_RUN=1; shift; continue ;;
            --keep-going) HV_FAIL_FAST=0; shift; continue ;;
            --fail-fast) HV_FAIL_FAST=1; shift; continue ;;
            -i | --inventory | -n | --node | --ssh-config | --health-timeout | --release | --source | --wheel | --wheelhouse)
                if (($# < 2)) || [[ -z $2 ]]; then hv_usage_error "$1 needs a value"; fi ;;
            *) hv_usage_error "unknown option: $1" ;;
        esac
        case $1 in
            -i | --inventory) HV_INVENTORY=$2 ;;
            -n | --node) HV_NODES+=("$2") ;;
            --ssh-config) HV_SSH_CONFIG=$2 ;;
            --health-timeout)
                [[ $2 =~ ^[0-9]+$ && $2 -gt 0 ]] || hv_usage_error "--health-timeout needs whole seconds, got $2"
                HV_HEALTH_TIMEOUT=$2 ;;
            --release)
                [[ $2 =~ ^[0-9][A-Za-z0-9.+_-]*$ ]] || hv_usage_error "--release: not a version: $2"
                HV_RELEASE=$2 build_opt=$1 ;;
            --source) HV_SOURCE=$2 build_opt=$1 ;;
            --wheel) HV_WHEEL=$2 build_opt=$1 ;;
            --wheelhouse) HV_WHEELHOUSE=$2 build_opt=$1 ;;
        esac
        shift 2
    done
    if [[ -n $build_opt ]] && ! hv_with package; then
        hv_usage_error "$build_opt: $HV_SCRIPT ships no package"
    fi
    [[ -z $HV_WHEEL || -f $HV_WHEEL ]] || hv_usage_error "--wheel: no such file: $HV_WHEEL"
    [[ -z $HV_WHEELHOUSE || -d $HV_WHEELHOUSE ]] || hv_usage_error "--wheelhouse: no such directory: $HV_WHEELHOUSE"
    [[ -d $HV_SOURCE ]] || hv_usage_error "--source: no such directory: $HV_SOURCE"
    [[ -z $HV_SSH_CONFIG || -f $HV_SSH_CONFIG ]] || hv_usage_error "--ssh-config: no such file: $HV_SSH_CONFIG"
    if [[ -n ${HARVESTER_PYTHON:-} ]]; then
        HV_PY=$HARVESTER_PYTHON
    elif [[ -x $HV_REPO/.venv/bin/python ]]; then
        HV_PY=$HV_REPO/.venv/bin/python
    else
        HV_PY=python3
    fi
}

hv_setup_work() {
    HV_WORK=$(mktemp -d "${TMPDIR:-/tmp}/harvester-deploy.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$HV_WORK'" EXIT
    trap 'exit 130' INT TERM
}

# -- inventory ---------------------------------------------------------------------------------
hv_load_targets() {
    local out args=(select "$HV_INVENTORY") name
    for name in "${HV_NODES[@]}"; do args+=(--node "$name"); done
    [[ -n $HV_ROLE ]] && args+=(--role "$HV_ROLE")
    [[ -n $HV_PROFILE ]] && args+=(--profile "$HV_PROFILE")
    read -r -a HV_FIELDS <<<"$("$HV_PY" "$HV_DEPLOY_DIR/inventory.py" fields)"
    if ! out=$("$HV_PY" "$HV_DEPLOY_DIR/inventory.py" "${args[@]}"); then
        hv_err "no target nodes: see above (nothing was changed)"
        exit "$HV_USAGE"
    fi
    HV_TARGETS=()
    [[ -n $out ]] && mapfile -t HV_TARGETS <<<"$out"
    if ((${#HV_TARGETS[@]} == 0)); then
        hv_err "no node in $HV_INVENTORY is a target of $HV_SCRIPT"
        exit "$HV_USAGE"
    fi
}

# Fill the associative array N with one inventory record.
hv_node_load() {
    local -a vals
    local i
    IFS=$'\x1f' read -r -a vals <<<"$1"
    N=()
    for i in "${!HV_FIELDS[@]}"; do N[${HV_FIELDS[i]}]=${vals[i]-}; done
    [[ -z $HV_HEALTH_TIMEOUT ]] || N[health_timeout]=$HV_HEALTH_TIMEOUT
    [[ -z $HV_WHEELHOUSE ]] || N[wheelhouse]=$HV_WHEELHOUSE
}

hv_check_configs() {
    hv_with config || return 0
    local rec files=()
    for rec in "${HV_TARGETS[@]}"; do
        hv_node_load "$rec"
        files+=("${N[config]}")
    done
    echo "checking ${#files[@]} node config(s) with harvester config check"
    if ! PYTHONPATH=$HV_REPO${PYTHONPATH:+:$PYTHONPATH} "$HV_PY" -m actors.cli config check --remote "${files[@]}" >"$HV_WORK/config-check.log" 2>&1; then
        cat "$HV_WORK/config-check.log" >&2
        hv_err "a node config is invalid (nothing was changed)"
        exit "$HV_USAGE"
    fi
}

# -- build -------------------------------------------------------------------------------------
# Sets HV_VERSION and HV_WHEEL_FILE. The source is copied first (honouring .gitignore) so the
# version can be stamped into setup.cfg without touching the work tree.
hv_build() {
    hv_with package || return 0
    if [[ -n $HV_WHEEL ]]; then
        HV_WHEEL_FILE=$(cd "$(dirname "$HV_WHEEL")" && pwd)/$(basename "$HV_WHEEL")
        HV_VERSION=$(basename "$HV_WHEEL_FILE" | cut -d- -f2)
        echo "deploying the given wheel $(basename "$HV_WHEEL_FILE") (release $HV_VERSION)"
        return 0
    fi
    local src=$HV_WORK/src base hash
    rsync -a --filter=':- .gitignore' --exclude=/.git --exclude=/tests --exclude=/bench --exclude=/deploy \
        --exclude=/.ci --exclude=__pycache__ "$HV_SOURCE/" "$src/"
    base=$(sed -n 's/^version[[:space:]]*=[[:space:]]*//p' "$src/setup.cfg" | head -n 1)
    [[ -n $base ]] || { hv_err "no version in $HV_SOURCE/setup.cfg"; exit "$HV_USAGE"; }
    hash=$(cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-10)
    HV_VERSION=${HV_RELEASE:-${base%%+*}+h$hash}
    sed -i "s/^version[[:space:]]*=.*/version = $HV_VERSION/" "$src/setup.cfg"
    # A fixed timestamp makes the wheel reproducible: the same source gives the same bytes, so a
    # node can tell "already installed" from "same version, different build".
    local pip=(env "SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}"
        "$HV_PY" -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$HV_WORK/dist")
    # Offline and fast when the build tools are already here; otherwise pip fetches them.
    "$HV_PY" -c 'import setuptools, wheel' 2>/dev/null && pip+=(--no-build-isolation)
    if ((HV_DRY_RUN)); then
        echo "would build release $HV_VERSION from $HV_SOURCE:"
        echo "  \$ $(hv_quote "${pip[@]}" "$src")"
        HV_WHEEL_FILE=$HV_WORK/dist/wasi_harvester-$HV_VERSION-py3-none-any.whl
        return 0
    fi
    echo "building release $HV_VERSION from $HV_SOURCE"
    if ! "${pip[@]}" "$src" >"$HV_WORK/build.log" 2>&1; then
        tail -n 30 "$HV_WORK/build.log" >&2
        hv_err "building the wheel failed (nothing was changed)"
        exit "$HV_USAGE"
    fi
    HV_WHEEL_FILE=$(find "$HV_WORK/dist" -name 'wasi_harvester-*.whl' | head -n 1)
    HV_VERSION=$(basename "$HV_WHEEL_FILE" | cut -d- -f2)  # as normalized by the build
    echo "built $(basename "$HV_WHEEL_FILE")"
}

# Sets HV_SANDBOX: the plugin sandbox component for the WASM nodes, built once here with
# componentize-py (7 s and 400 MB on x86-64, far more on a Pi) from the WIT world and guest
# sources inside the wheel, so it matches the release whatever --source or --wheel said. This
# repository's build tool does it and caches it by those sources (plugins/sandbox/build).
hv_build_sandbox() {
    HV_SANDBOX=""
    hv_with package || return 0
    local rec wasm=0
    for rec in "${HV_TARGETS[@]}"; do
        hv_node_load "$rec"
        [[ ${N[profile]} == wasm ]] && wasm=1
    done
    ((wasm)) || return 0
    HV_SANDBOX=$HV_WORK/sandbox
    local src=$HV_WORK/sandbox-src
    local build=(env "PYTHONPATH=$HV_REPO${PYTHONPATH:+:$PYTHONPATH}" "$HV_PY" -m plugins.sandbox.build
        --sources "$src/plugins" --export "$HV_SANDBOX")
    if ((HV_DRY_RUN)); then
        echo "would build the plugin sandbox for the WASM nodes from the wheel's plugins/harvester.wit and plugins/guest/:"
        echo "  \$ $(hv_quote "${build[@]}")"
        return 0
    fi
    # Only the sandbox's inputs come out of the wheel: nothing of it is imported here.
    if ! "$HV_PY" - "$HV_WHEEL_FILE" "$src" <<'PY' >"$HV_WORK/sandbox.log" 2>&1; then
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = [n for n in wheel.namelist() if n == "plugins/harvester.wit" or n.startswith("plugins/guest/")]
    if "plugins/harvester.wit" not in names:
        sys.exit(f"{sys.argv[1]} has no plugins/harvester.wit")
    wheel.extractall(sys.argv[2], names)
PY
        cat "$HV_WORK/sandbox.log" >&2
        hv_err "the wheel holds no sandbox sources (nothing was changed)"
        exit "$HV_USAGE"
    fi
    echo "building the plugin sandbox for the WASM nodes (componentize-py: about 7 s, unless it is cached)"
    if ! "${build[@]}" >"$HV_WORK/sandbox.log" 2>&1; then
        tail -n 30 "$HV_WORK/sandbox.log" >&2
        hv_err "building the plugin sandbox failed (nothing was changed); it needs componentize-py here: pip install -e '.[wasm-build]'"
        exit "$HV_USAGE"
    fi
    echo "plugin sandbox for the WASM nodes: $(tail -n 1 "$HV_WORK/sandbox.log")"
}

# -- one node ----------------------------------------------------------------------------------
hv_ssh_setup() {
    local opts=(-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4
        -p "${N[port]}")
    HV_SSH=(ssh "${opts[@]}")
    HV_RSH="ssh ${opts[*]}"  # rsync -e takes one string; these options hold no spaces
    if [[ -n $HV_SSH_CONFIG ]]; then
        HV_SSH+=(-F "$HV_SSH_CONFIG")
        HV_RSH+=" -F \"$HV_SSH_CONFIG\""
    fi
    HV_SSH+=("${N[user]}@${N[host]}")
    HV_SUDO=()
    ((N[sudo])) && HV_SUDO=(sudo -n)
    return 0
}

# What node-release.sh is told to do, as arguments.
hv_release_args() {
    HV_ARGS=(activate --node "${N[name]}" --with "$HV_WITH" --prefix "${N[prefix]}" --etc "${N[etc]}"
        --service "${N[service]}" --unit "${N[unit]}" --python "${N[python]}"
        --health-timeout "${N[health_timeout]}")
    hv_with package && HV_ARGS+=(--version "$HV_VERSION")
    [[ -z ${N[extras]} ]] || HV_ARGS+=(--extras "${N[extras]}")
    ((N[system_site_packages])) && HV_ARGS+=(--system-site-packages)
    ((N[run_as_root])) && HV_ARGS+=(--run-as-root)
    return 0
}

# Lay out what goes to <prefix>/staging; symlinks are followed by rsync --copy-links.
hv_bundle() {
    local b=$HV_WORK/bundle-${N[name]}
    rm -rf "$b"
    mkdir -p "$b"
    cp "$HV_DEPLOY_DIR/node-release.sh" "$b/"
    if hv_with package; then
        mkdir "$b/wheels"
        ln -s "$HV_WHEEL_FILE" "$b/wheels/"
        [[ -z ${N[wheelhouse]} ]] || ln -s "${N[wheelhouse]}" "$b/wheelhouse"
        [[ -z $HV_SANDBOX || ${N[profile]} != wasm ]] || ln -s "$HV_SANDBOX" "$b/sandbox"
    fi
    hv_with config && cp "${N[config]}" "$b/node.toml"
    if hv_with config && [[ -n ${N[pki]} ]]; then
        mkdir "$b/tls"
        ln -s "${N[pki]}/ca.crt" "$b/tls/ca.crt"
        ln -s "${N[pki]}/nodes/${N[name]}.crt" "${N[pki]}/nodes/${N[name]}.key" "$b/tls/"
    fi
    if hv_with plugins && [[ -n ${N[plugins]} ]]; then ln -s "${N[plugins]}" "$b/plugins"; fi
    if hv_with unit; then
        mkdir "$b/systemd"
        cp "$HV_DEPLOY_DIR/systemd/${N[unit]}" "$b/systemd/"
        cp "$HV_DEPLOY_DIR/systemd/run-as-root.conf" "$b/systemd/"
    fi
    HV_BUNDLE=$b
}

hv_describe() {
    local name=${N[name]} p=${N[prefix]} v=${HV_VERSION:-} parts=()
    hv_with package && parts+=("wheels/$(basename "$HV_WHEEL_FILE")${N[wheelhouse]:+, wheelhouse/ (from ${N[wheelhouse]})}")
    hv_with package && [[ ${N[profile]} == wasm ]] && parts+=("sandbox/ (the plugin sandbox component and its sha256)")
    hv_with config && parts+=("node.toml (from ${N[config]})")
    hv_with config && [[ -n ${N[pki]} ]] && parts+=("tls/ (ca.crt, ${name}.crt, ${name}.key from ${N[pki]})")
    hv_with plugins && [[ -n ${N[plugins]} ]] && parts+=("plugins/ (from ${N[plugins]})")
    hv_with unit && parts+=("systemd/${N[unit]}")
    local joined
    printf -v joined '%s, ' "${parts[@]}"
    hv_say "$name" "  bundle: node-release.sh, ${joined%, }"
    hv_say "$name" "  then on the node, holding $p/.deploy.lock:"
    if hv_with package; then
        hv_say "$name" "    install $v into $p/releases/$v (${N[python]} -m venv; pip install the wheel${N[extras]:+[${N[extras]}]}${N[wheelhouse]:+ --no-index}) unless it is there"
        if [[ ${N[profile]} == wasm ]]; then
            hv_say "$name" "    check the plugin sandbox against the release, install it in $p/releases/$v/share/harvester/sandbox and precompile it for this CPU (wasmtime) unless that is done"
        fi
    fi
    hv_with config && hv_say "$name" "    check node.toml with the new release (harvester config check)"
    hv_with config && [[ -n ${N[pki]} ]] && hv_say "$name" "    install ${N[etc]}/tls (key 0600, readable by the service user only)"
    hv_with unit && [[ ${N[service]} == systemd ]] && hv_say "$name" "    install /etc/systemd/system/${N[unit]}$( ((N[run_as_root])) && echo ' + run-as-root drop-in'), daemon-reload, enable"
    hv_with plugins && [[ -n ${N[plugins]} ]] && hv_say "$name" "    sync ${N[etc]}/plugins (old copy in plugins.previous); the agent hot-reloads them, no restart"
    if hv_with package || hv_with config || hv_with unit; then
        hv_say "$name" "    if anything changed: point $p/current at releases/$v, install ${N[etc]}/node.toml, restart (${N[service]}: ${N[unit]})"
        hv_say "$name" "    harvester health --config ${N[etc]}/node.toml --wait --timeout ${N[health_timeout]} --expect-version $v --watch-pid <agent pid>"
        hv_say "$name" "    unhealthy: switch back to the previous release, config, unit and plugins, restart, check health again"
        hv_say "$name" "    nothing changed: only the health check"
    else
        hv_say "$name" "    harvester health --config ${N[etc]}/node.toml --wait --timeout ${N[health_timeout]}; unhealthy: restore plugins.previous"
    fi
}

# Record one node's outcome: state, exit-code contribution, detail.
hv_result() {
    HV_RESULTS+=("$(printf '%s\x1f%s\x1f%s\x1f%s' "${N[name]}" "$1" "$3" "$((SECONDS - HV_T0))")")
    hv_raise "$2"
}

hv_deploy_node() {
    local name=${N[name]} rc=0 remote
    HV_T0=$SECONDS
    hv_ssh_setup
    hv_release_args
    hv_say "$name" "==> ${N[user]}@${N[host]}:${N[port]} (${N[role]}, ${N[profile]}, ${N[service]})"
    if [[ $HV_WITH == plugins && -z ${N[plugins]} ]]; then
        hv_say "$name" "no plugins folder for this node in the inventory: nothing to ship"
        hv_result "skipped" "$HV_OK" "no plugins folder in the inventory"
        return 0
    fi
    local probe
    probe="command -v rsync >/dev/null 2>&1 || { echo \"rsync is not installed on this node (sudo apt install rsync)\" >&2; exit 97; }; $(hv_quote "${HV_SUDO[@]}" mkdir -p "${N[prefix]}/staging")"
    local rsync=(rsync -rlptL --delete --timeout=60 -e "$HV_RSH")
    ((N[sudo])) && rsync+=(--rsync-path="sudo -n rsync")
    remote=$(hv_quote "${HV_SUDO[@]}" bash "${N[prefix]}/staging/node-release.sh" "${HV_ARGS[@]}")
    if ((HV_DRY_RUN)); then
        hv_say "$name" "would run:"
        hv_say "$name" "  \$ $(hv_quote "${HV_SSH[@]}" -- "$probe")"
        hv_say "$name" "  \$ $(hv_quote "${rsync[@]}" "<bundle>/" "${N[user]}@${N[host]}:${N[prefix]}/staging/")"
        hv_say "$name" "  \$ $(hv_quote "${HV_SSH[@]}" -- "$remote")"
        hv_describe
        hv_result "dry-run" "$HV_OK" "nothing done"
        return 0
    fi
    # 1. reachable, with rsync, and may we write the staging directory?
    "${HV_SSH[@]}" -- "$probe" 2>"$HV_WORK/ssh.err" || rc=$?
    if ((rc == 255)); then
        hv_say "$name" "cannot reach ${N[user]}@${N[host]}:${N[port]} over ssh: $(tail -n 1 "$HV_WORK/ssh.err")"
        hv_result "unreachable" "$HV_UNREACHABLE" "ssh failed: $(tail -n 1 "$HV_WORK/ssh.err")"
        return 0
    elif ((rc != 0)); then
        hv_say "$name" "preflight failed: $(tail -n 1 "$HV_WORK/ssh.err")"
        hv_result "refused" "$HV_ROLLED_BACK" "preflight: $(tail -n 1 "$HV_WORK/ssh.err")"
        return 0
    fi
    # 2. copy the bundle
    hv_bundle
    if ! "${rsync[@]}" "$HV_BUNDLE/" "${N[user]}@${N[host]}:${N[prefix]}/staging/" 2>&1 | hv_prefix "$name"; then
        hv_result "unreachable" "$HV_UNREACHABLE" "rsync to ${N[host]} failed"
        return 0
    fi
    # 3. install, switch, restart, health check, rollback: all on the node
    "${HV_SSH[@]}" -- "$remote" 2>&1 | tee "$HV_WORK/remote.log" | hv_prefix "$name" || rc=${PIPESTATUS[0]}
    case $rc in
        0) if grep -q '^unchanged:' "$HV_WORK/remote.log"; then
               hv_result "unchanged" "$HV_OK" "already up to date; healthy"
           else
               hv_result "ok" "$HV_OK" "${HV_VERSION:+release $HV_VERSION }healthy"
           fi ;;
        2) hv_result "refused" "$HV_ROLLED_BACK" "refused the update, kept what it ran" ;;
        3) hv_result "rolled-back" "$HV_ROLLED_BACK" "unhealthy after the update; back on the previous release" ;;
        255) hv_result "unreachable" "$HV_UNREACHABLE" "ssh dropped; the node finishes (and rolls back) on its own: check $(hv_quote "${N[prefix]}/deploy.log")" ;;
        *) hv_result "DEAD" "$HV_DEAD" "unhealthy and could not roll back (exit $rc): look at it now" ;;
    esac
}

hv_summary() {
    local rec name state detail secs
    echo
    echo "summary ($HV_SCRIPT${HV_VERSION:+, release $HV_VERSION}):"
    for rec in "${HV_RESULTS[@]}"; do
        IFS=$'\x1f' read -r name state detail secs <<<"$rec"
        printf '  %-16s %-12s %4ss  %s\n' "$name" "$state" "$secs" "$detail"
    done
    echo "exit status $HV_WORST"
}

hv_main() {
    hv_parse_args "$@"
    hv_setup_work
    hv_load_targets
    hv_check_configs
    hv_build
    hv_build_sandbox
    ((HV_DRY_RUN)) && echo "dry run: nothing below is executed"
    local rec state stop="" stop_code=$HV_OK
    for rec in "${HV_TARGETS[@]}"; do
        hv_node_load "$rec"
        if [[ -n $stop ]]; then
            HV_T0=$SECONDS
            hv_say "${N[name]}" "skipped: $stop"
            hv_result "skipped" "$stop_code" "$stop"
            continue
        fi
        hv_deploy_node
        state=${HV_RESULTS[-1]#*$'\x1f'}
        state=${state%%$'\x1f'*}
        if [[ ${N[role]} == hub && $state == DEAD ]]; then
            stop="the hub is down, so no spoke could pass its health check" stop_code=$HV_DEAD
        elif ((HV_FAIL_FAST)) && [[ $state != ok && $state != unchanged && $state != dry-run ]]; then
            stop="--fail-fast after ${N[name]} ($state)"
        fi
    done
    hv_summary
    return "$HV_WORST"
}
