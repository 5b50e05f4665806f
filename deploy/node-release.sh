#!/usr/bin/env bash
# node-release.sh: the on-node half of the Harvester fleet scripts. deploy/lib.sh rsyncs it into
# <prefix>/staging with the rest of the bundle and runs it there as root:
#
#   node-release.sh activate --node NAME --with package,config,plugins,unit --prefix DIR --etc DIR
#       --service systemd|pidfile --unit UNIT --python PYTHON --health-timeout SECONDS
#       [--version V] [--extras a,b] [--system-site-packages] [--run-as-root]
#
# It installs the release in its own virtual environment, switches to it, restarts the agent,
# waits for `harvester health`, and when that fails switches everything back and restarts the
# previous release. It runs to the end even if the operator's ssh connection drops.
#
# Layout on the node:
#   <prefix>/releases/<version>/         a venv with that wheel installed (.complete = wheel sha256)
#     share/harvester/sandbox/           WASM nodes: the shipped plugin sandbox (sandbox.wasm, .json)
#       compiled/                        and its machine code for this CPU, made at install time
#   <prefix>/current -> releases/<v>     what the service runs; <prefix>/previous: the one before
#   <prefix>/staging/                    the last bundle: wheels/, sandbox/, node.toml, tls/, plugins/, systemd/
#   <prefix>/deploy.log                  every step of every deploy, with timestamps
#   <prefix>/agent.pid, agent.log        service=pidfile only (hosts without systemd)
#   <etc>/node.toml (+ .previous)        <etc>/plugins/ (+ plugins.previous/)
#   <etc>/tls/ (+ tls.previous/)         ca.crt, <node>.crt, <node>.key when the inventory has `pki`
#
# Exit status: 0 done, or nothing to do, and healthy (a line "unchanged: ..." says which);
# 2 refused, nothing changed (bad bundle, invalid config, no python3-venv, another deploy is
# running); 3 unhealthy after the switch, rolled back, and the previous release is healthy;
# 5 unhealthy with no previous release, or unhealthy after the rollback too.
set -euo pipefail
trap '' HUP PIPE  # a dropped ssh link must not stop us halfway (e.g. between switch and rollback)

NODE="" WITH="" PREFIX="" ETC="" SERVICE="" UNIT="" PYTHON="python3" HEALTH_TIMEOUT=90 VERSION=""
EXTRAS="" SYS_SITE=0 RUN_AS_ROOT=0
KEEP_RELEASES=3
SERVICE_USER=harvester
SYSTEMD_DIR=${HARVESTER_SYSTEMD_DIR:-/etc/systemd/system}

say() {
    printf '%s %s\n' "$(date '+%F %T')" "$*" >>"$PREFIX/deploy.log" 2>/dev/null || true
    printf '%s\n' "$*" 2>/dev/null || true
}
die() {
    local code=$1
    shift
    say "error: $*"
    exit "$code"
}
has() { [[ ",$WITH," == *",$1,"* ]]; }
now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((10#$t / 1000)); }
since() { local d=$(($(now_ms) - $1)); printf '%d.%d s' $((d / 1000)) $((d % 1000 / 100)); }

parse_args() {
    [[ ${1-} == activate ]] || die 2 "usage: node-release.sh activate --node NAME --with LIST --prefix DIR ..."
    shift
    while (($#)); do
        case $1 in
            --system-site-packages) SYS_SITE=1; shift; continue ;;
            --run-as-root) RUN_AS_ROOT=1; shift; continue ;;
        esac
        (($# >= 2)) || die 2 "$1 needs a value"
        case $1 in
            --node) NODE=$2 ;;
            --with) WITH=$2 ;;
            --prefix) PREFIX=$2 ;;
            --etc) ETC=$2 ;;
            --service) SERVICE=$2 ;;
            --unit) UNIT=$2 ;;
            --python) PYTHON=$2 ;;
            --health-timeout) HEALTH_TIMEOUT=$2 ;;
            --version) VERSION=$2 ;;
            --extras) EXTRAS=$2 ;;
            *) die 2 "unknown option $1" ;;
        esac
        shift 2
    done
    [[ -n $NODE && -n $WITH && $PREFIX == /* && $ETC == /* && -n $UNIT ]] || die 2 "missing --node, --with, --prefix, --etc or --unit"
    [[ $SERVICE == systemd || $SERVICE == pidfile ]] || die 2 "--service must be systemd or pidfile"
    ! has package || [[ -n $VERSION ]] || die 2 "--with package needs --version"
    STAGING=$PREFIX/staging
    CONFIG=$ETC/node.toml
}

current_version() {
    local target
    target=$(readlink "$PREFIX/current" 2>/dev/null) || return 0
    basename "$target"
}

link() {  # link NAME TARGET: point <prefix>/NAME at TARGET atomically (or remove it for "")
    if [[ -z $2 ]]; then
        rm -f "$PREFIX/$1"
    else
        ln -sfn "$2" "$PREFIX/$1.new"
        mv -Tf "$PREFIX/$1.new" "$PREFIX/$1"
    fi
}

# -- releases ------------------------------------------------------------------------------------
check_python() {
    command -v "$PYTHON" >/dev/null || die 2 "$PYTHON not found on this node (sudo apt install python3)"
    "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die 2 "$PYTHON is older than 3.11 or cannot make virtual environments (sudo apt install python3-venv)"
}

install_release() {
    local v=$1 rel=$PREFIX/releases/$1 wheels wheel sum installed log=$PREFIX/pip.log cur
    cur=$(current_version)
    wheels=("$STAGING"/wheels/*.whl)
    if ((${#wheels[@]} != 1)) || [[ ! -f ${wheels[0]} ]]; then die 2 "expected one wheel in $STAGING/wheels"; fi
    wheel=${wheels[0]}
    sum=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [[ -f $rel/.complete ]]; then
        if [[ $(cat "$rel/.complete") == "$sum" ]]; then
            say "release $v is installed already"
            return 0
        fi
        [[ $cur != "$v" ]] \
            || die 2 "release $v is running but was built from a different wheel; give the new build its own version"
        say "release $v was installed from a different wheel: reinstalling it"
    fi
    check_python
    rm -rf "$rel"
    mkdir -p "$PREFIX/releases"
    say "installing release $v into $rel"
    local venv_args=() pip_args=(--disable-pip-version-check --no-input --quiet) spec=$wheel t0
    t0=$(now_ms)
    ((SYS_SITE)) && venv_args+=(--system-site-packages)
    [[ -d $STAGING/wheelhouse ]] && pip_args+=(--no-index --find-links "$STAGING/wheelhouse")
    [[ -z $EXTRAS ]] || spec="${wheel}[$EXTRAS]"
    : >"$log"
    if ! "$PYTHON" -m venv "${venv_args[@]}" "$rel" >>"$log" 2>&1 \
        || ! "$rel/bin/python" -m pip install "${pip_args[@]}" "$spec" >>"$log" 2>&1; then
        tail -n 20 "$log" | sed 's/^/  pip: /'
        rm -rf "$rel"
        die 2 "installing release $v failed (see $log); the node still runs ${cur:-nothing}"
    fi
    installed=$("$rel/bin/python" -c 'from importlib.metadata import version; print(version("wasi-harvester"))')
    [[ $installed == "$v" ]] || { rm -rf "$rel"; die 2 "the wheel installed version $installed, not $v"; }
    echo "$sum" >"$rel/.complete"
    say "release $v installed in $(since "$t0")"
}

# The plugin sandbox shipped to WASM nodes: checked against the release, copied into it and
# compiled for this CPU now, so the agent's first plugin loads machine code instead of building
# the component (componentize-py is never installed on a board). Cheap when already done.
install_sandbox() {
    local v=$1 rel=$PREFIX/releases/$1 out cur
    [[ -f $STAGING/sandbox/sandbox.wasm ]] || return 0
    cur=$(current_version)
    if ! "$rel/bin/python" -c 'import plugins.sandbox.install' 2>/dev/null; then
        say "release $v cannot install a shipped plugin sandbox (it predates them): it builds its own"
        return 0
    fi
    if ! out=$("$rel/bin/python" -m plugins.sandbox.install "$STAGING/sandbox" --releases "$PREFIX/releases" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/  /'
        die 2 "installing the plugin sandbox into release $v failed; the node still runs ${cur:-nothing}"
    fi
    say "$out"
}

prune_releases() {
    local keep_current keep_previous dir n=0
    keep_current=$(current_version)
    keep_previous=$(basename "$(readlink "$PREFIX/previous" 2>/dev/null || echo none)")
    while IFS= read -r dir; do
        [[ -n $dir ]] || continue
        case $(basename "$dir") in "$keep_current" | "$keep_previous") continue ;; esac
        n=$((n + 1))
        if ((n > KEEP_RELEASES)); then
            say "removing old release $(basename "$dir")"
            rm -rf "$dir"
        fi
    done < <(ls -1dt "$PREFIX"/releases/*/ 2>/dev/null)
}

# -- configuration, unit, plugins ------------------------------------------------------------------
check_config() {  # check_config RELEASE FILE
    local out
    if ! out=$("$PREFIX/releases/$1/bin/harvester" config check --remote "$2" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/  /'
        die 2 "$2 is not a valid config for release $1; nothing was changed"
    fi
}

unit_path() { echo "$SYSTEMD_DIR/$UNIT"; }
dropin_path() { echo "$SYSTEMD_DIR/$UNIT.d/10-run-as-root.conf"; }

render_unit() {  # the shipped unit with this node's prefix and etc directories
    sed -e "s#/opt/harvester#$PREFIX#g" -e "s#/etc/harvester#$ETC#g" "$STAGING/systemd/$UNIT"
}

unit_differs() {
    [[ $SERVICE == systemd ]] || return 1
    [[ -f $(unit_path) ]] && [[ "$(render_unit)" == "$(cat "$(unit_path)")" ]] || return 0
    if ((RUN_AS_ROOT)); then
        if cmp -s "$STAGING/systemd/run-as-root.conf" "$(dropin_path)"; then return 1; fi
        return 0
    fi
    [[ -f $(dropin_path) ]]
}

ensure_service_user() {
    local group groups=()
    for group in i2c gpio; do
        getent group "$group" >/dev/null || groupadd --system "$group"
        groups+=("$group")
    done
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "creating the system user $SERVICE_USER (groups ${groups[*]})"
        useradd --system --user-group --no-create-home --home-dir /var/lib/harvester \
            --shell /usr/sbin/nologin --groups "$(IFS=,; echo "${groups[*]}")" "$SERVICE_USER"
    fi
}

install_unit() {
    local dst dropin
    dst=$(unit_path)
    dropin=$(dropin_path)
    mkdir -p "$PREFIX/unit.previous"
    rm -f "$PREFIX/unit.previous/"*
    [[ -f $dst ]] && cp -p "$dst" "$PREFIX/unit.previous/unit"
    [[ -f $dropin ]] && cp -p "$dropin" "$PREFIX/unit.previous/dropin"
    ensure_service_user
    render_unit >"$dst.new"
    mv -f "$dst.new" "$dst"
    if ((RUN_AS_ROOT)); then
        mkdir -p "$(dirname "$dropin")"
        cp "$STAGING/systemd/run-as-root.conf" "$dropin"
    else
        rm -f "$dropin"
    fi
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT"
    say "installed $dst$( ((RUN_AS_ROOT)) && echo " with the run-as-root drop-in")"
}

restore_unit() {
    local dst dropin
    dst=$(unit_path)
    dropin=$(dropin_path)
    if [[ -f $PREFIX/unit.previous/unit ]]; then cp -p "$PREFIX/unit.previous/unit" "$dst"; else rm -f "$dst"; fi
    if [[ -f $PREFIX/unit.previous/dropin ]]; then cp -p "$PREFIX/unit.previous/dropin" "$dropin"; else rm -f "$dropin"; fi
    systemctl daemon-reload
}

tls_differ() {
    [[ -d $STAGING/tls ]] || return 1
    [[ -d $ETC/tls ]] || return 0
    local f
    for f in "$STAGING"/tls/*; do cmp -s "$f" "$ETC/tls/$(basename "$f")" || return 0; done
    for f in "$ETC"/tls/*; do [[ -e $STAGING/tls/$(basename "$f") ]] || return 0; done
    return 1
}

install_tls() {  # certificates 0644, the key 0600, both owned by whoever runs the agent
    local owner=root
    if [[ $SERVICE == systemd ]] && ((!RUN_AS_ROOT)); then
        ensure_service_user
        owner=$SERVICE_USER
    fi
    rm -rf "$ETC/tls.previous" "$ETC/tls.new"
    [[ ! -d $ETC/tls ]] || cp -a "$ETC/tls" "$ETC/tls.previous"
    mkdir -m 0750 "$ETC/tls.new"
    cp "$STAGING"/tls/* "$ETC/tls.new/"
    chmod 0644 "$ETC"/tls.new/*.crt
    chmod 0600 "$ETC"/tls.new/*.key
    chown -R "$owner:" "$ETC/tls.new"
    rm -rf "$ETC/tls"
    mv "$ETC/tls.new" "$ETC/tls"
    say "installed the TLS certificate and key in $ETC/tls (owner $owner)"
}

restore_tls() {
    rm -rf "$ETC/tls"
    [[ ! -d $ETC/tls.previous ]] || cp -a "$ETC/tls.previous" "$ETC/tls"
}

plugins_differ() {
    [[ -d $STAGING/plugins ]] || return 1
    [[ -d $ETC/plugins ]] || return 0
    [[ -n $(rsync -rlpt --delete --dry-run --itemize-changes "$STAGING/plugins/" "$ETC/plugins/") ]]
}

apply_plugins() {
    mkdir -p "$ETC/plugins"
    rsync -rlpt --delete "$ETC/plugins/" "$ETC/plugins.previous/"
    # --delay-updates puts every changed file in place at the end, so the hot reloader sees one set
    rsync -rlpt --delete --delay-updates "$STAGING/plugins/" "$ETC/plugins/"
    say "plugins synced into $ETC/plugins (the agent hot-reloads them)"
}

restore_plugins() {
    rsync -rlpt --delete --delay-updates "$ETC/plugins.previous/" "$ETC/plugins/"
    say "plugins restored from $ETC/plugins.previous"
}

# -- the service ---------------------------------------------------------------------------------
alive() {  # alive PID: running and not a zombie
    [[ -n $1 && $1 != 0 ]] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
    [[ $state != Z && $state != X ]]
}

service_pid() {
    local pid=""
    if [[ $SERVICE == systemd ]]; then
        pid=$(systemctl show --property MainPID --value "$UNIT" 2>/dev/null || true)
    elif [[ -f $PREFIX/agent.pid ]]; then
        pid=$(cat "$PREFIX/agent.pid")
    fi
    if alive "$pid"; then echo "$pid"; fi
}

wait_gone() {  # wait_gone PID SECONDS
    local deadline=$((SECONDS + $2))
    while alive "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

restart_service() {
    if [[ $SERVICE == systemd ]]; then
        systemctl restart "$UNIT" || { say "systemctl restart $UNIT failed"; return 1; }
        return 0
    fi
    local pid
    pid=$(service_pid)
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 30 || { say "agent $pid ignored SIGTERM for 30 s: killing it"; kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
    fi
    # Detached from this session; fd 9 (the deploy lock) must not be inherited.
    (cd / && exec setsid "$PREFIX/current/bin/harvester" node --config "$CONFIG" </dev/null >>"$PREFIX/agent.log" 2>&1 9>&-) &
    echo "$!" >"$PREFIX/agent.pid"
}

healthy() {  # healthy VERSION [TIMEOUT]
    local pid
    pid=$(service_pid)
    if [[ -z $pid ]]; then
        say "the agent is not running"
        return 1
    fi
    "$PREFIX/releases/$1/bin/harvester" health --config "$CONFIG" --wait --timeout "${2:-$HEALTH_TIMEOUT}" \
        --expect-version "$1" --watch-pid "$pid" 2>&1
}

# -- the whole step ------------------------------------------------------------------------------
main() {
    parse_args "$@"
    mkdir -p "$PREFIX/releases" "$ETC"
    exec 9>"$PREFIX/.deploy.lock"
    flock -n 9 || die 2 "another deploy is running on this node ($PREFIX/.deploy.lock)"
    local t0 cur prev target changed=()
    t0=$(now_ms)
    cur=$(current_version)
    prev=$(basename "$(readlink "$PREFIX/previous" 2>/dev/null || true)")
    say "=== $NODE: ${WITH//,/ + }${VERSION:+, release $VERSION} (running: ${cur:-nothing})"
    target=$cur
    if has package; then
        install_release "$VERSION"
        install_sandbox "$VERSION"
        target=$VERSION
    fi
    [[ -n $target ]] || die 2 "no release is installed on this node yet: deploy one with update-all-nodes.sh first"
    if has config; then
        [[ -f $STAGING/node.toml ]] || die 2 "the bundle has no node.toml"
        check_config "$target" "$STAGING/node.toml"
        cmp -s "$STAGING/node.toml" "$CONFIG" || changed+=(config)
        if tls_differ; then changed+=(tls); fi
    else
        [[ -f $CONFIG ]] || die 2 "$CONFIG is missing: deploy it with update-all-nodes.sh"
        [[ $target == "$cur" ]] || check_config "$target" "$CONFIG"
    fi
    [[ $target == "$cur" ]] || changed+=("release $target")
    if has unit && unit_differs; then changed+=(unit); fi
    local plugins=0
    if has plugins && plugins_differ; then plugins=1; fi

    if ((${#changed[@]} == 0)); then
        ((plugins)) && apply_plugins
        if healthy "$target"; then
            if ((plugins)); then say "plugins updated; $NODE is healthy ($(since "$t0"))"; else say "unchanged: $NODE already runs $target and is healthy"; fi
            exit 0
        fi
        if ((plugins)); then
            restore_plugins
            healthy "$target" && { say "rolled back the plugins; $NODE is healthy again"; exit 3; }
        fi
        say "$NODE is not healthy although nothing changed: restarting it"
        restart_service && healthy "$target" && { say "$NODE is healthy after a restart"; exit 0; }
        die 5 "$NODE is still not healthy: look at it (journalctl -u $UNIT, or $PREFIX/agent.log)"
    fi

    # Switch: config, unit, plugins, release; remember how to undo each.
    local t_switch
    t_switch=$(now_ms)
    ((plugins)) && changed+=(plugins)
    say "changing: ${changed[*]}"
    local config_changed=0 unit_changed=0 tls_changed=0
    if [[ " ${changed[*]} " == *" tls "* ]]; then
        install_tls
        tls_changed=1
    fi
    if [[ " ${changed[*]} " == *" config "* ]]; then
        if [[ -f $CONFIG ]]; then cp -p "$CONFIG" "$CONFIG.previous"; else rm -f "$CONFIG.previous"; fi
        cp "$STAGING/node.toml" "$CONFIG.new"
        mv -f "$CONFIG.new" "$CONFIG"
        config_changed=1
    fi
    if [[ " ${changed[*]} " == *" unit "* ]]; then
        install_unit
        unit_changed=1
    fi
    ((plugins)) && apply_plugins
    if [[ $target != "$cur" ]]; then
        link current "releases/$target"
        [[ -z $cur ]] || link previous "releases/$cur"
    fi
    say "restarting the agent ($SERVICE: $UNIT)"
    if restart_service && healthy "$target"; then
        prune_releases
        say "$NODE runs release $target and is healthy ($(since "$t0") in all, $(since "$t_switch") from the switch)"
        exit 0
    fi

    say "$NODE is NOT healthy on release $target: rolling back"
    if [[ -z $cur ]]; then
        die 5 "no previous release to roll back to; the service keeps restarting $target. Fix it and deploy again"
    fi
    local t1
    t1=$(now_ms)
    link current "releases/$cur"
    link previous "${prev:+releases/$prev}"
    if ((config_changed)); then
        if [[ -f $CONFIG.previous ]]; then cp -p "$CONFIG.previous" "$CONFIG"; fi
    fi
    ((unit_changed)) && restore_unit
    ((tls_changed)) && restore_tls
    ((plugins)) && restore_plugins
    if restart_service && healthy "$cur"; then
        say "rolled back to release $cur in $(since "$t1"); $NODE is healthy ($(since "$t_switch") from the switch)"
        exit 3
    fi
    die 5 "rolled back to release $cur but $NODE is still not healthy: look at it now"
}

# Run unless sourced (the tests source this file to call single steps).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
