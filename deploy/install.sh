#!/usr/bin/env bash
# fsguard installer for systemd hosts. Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh                     install or upgrade from this checkout
#   sudo deploy/install.sh --wheelhouse DIR    offline: from a `make wheelhouse` directory
#   sudo deploy/install.sh --uninstall         remove everything fsguard installed
#   sudo deploy/install.sh --uninstall --keep-state   ... but keep config and state
#   deploy/install.sh --dry-run [...]          print what would be done, change nothing
#
# Install: system user and group "fsguard" (no login, home /var/lib/fsguard); a venv in
# /opt/fsguard/venv with fsguard's run-time dependencies from requirements.lock (exact
# versions, pip --require-hashes), then fsguard itself (--no-deps); /usr/local/bin/fsguard;
# /etc/fsguard/config.json from config.example.json only when absent (0640 root:fsguard);
# the systemd units; /etc/modules-load.d/fsguard.conf; `systemctl daemon-reload`. It never
# enables or starts anything. The service user must be able to run PYTHON (the venv links
# to it): a Python under /root is refused with a clear error.
# Uninstall: stops and removes the units, removes fsguard's ipsets, iptables rules and
# nftables table (`fsguard teardown`), the venv, the links, docs, modules file, config,
# state, the user and group. --keep-state keeps /etc/fsguard and /var/lib/fsguard.
#
# Environment: PYTHON (default python3, >= 3.11, runnable by the service user).
# Test overrides: FSGUARD_PREFIX FSGUARD_BIN_LINK FSGUARD_CONFIG_DIR FSGUARD_STATE_DIR
# FSGUARD_UNIT_DIR FSGUARD_DOC_DIR FSGUARD_MODULES_CONF FSGUARD_USER FSGUARD_SKIP_MODPROBE.
# Exit codes: 0 done, 1 failed, 2 usage error.
set -euo pipefail

readonly USER_NAME="${FSGUARD_USER:-fsguard}"
readonly PREFIX="${FSGUARD_PREFIX:-/opt/fsguard}"
readonly VENV="$PREFIX/venv"
readonly BIN_LINK="${FSGUARD_BIN_LINK:-/usr/local/bin/fsguard}"
readonly CONFIG_DIR="${FSGUARD_CONFIG_DIR:-/etc/fsguard}"
readonly CONFIG="$CONFIG_DIR/config.json"
readonly STATE_DIR="${FSGUARD_STATE_DIR:-/var/lib/fsguard}"
readonly UNIT_DIR="${FSGUARD_UNIT_DIR:-/etc/systemd/system}"
readonly DOC_DIR="${FSGUARD_DOC_DIR:-/usr/share/doc/fsguard}"
readonly MODULES_CONF="${FSGUARD_MODULES_CONF:-/etc/modules-load.d/fsguard.conf}"
readonly SKIP_MODPROBE="${FSGUARD_SKIP_MODPROBE:-0}"
readonly UNITS=(fsguard.target fsguard-firewall.service fsguard-supervisor.service fsguard-api.service
    fsguard-fleet.service)
readonly MODULES=(ip_set ip_set_hash_ip ip_set_hash_net xt_set nf_tables)

PYTHON="${PYTHON:-python3}"
DRY_RUN=0
UNINSTALL=0
KEEP_STATE=0
WHEELHOUSE=""

usage() {
    sed -n '2,25s/^# \{0,1\}//p' "$0"
}

while (($#)); do
    case "$1" in
        --dry-run | -n) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --keep-state) KEEP_STATE=1 ;;
        --wheelhouse)
            (($# >= 2)) || {
                echo "install.sh: --wheelhouse needs a directory" >&2
                exit 2
            }
            WHEELHOUSE="$2"
            shift
            ;;
        --help | -h)
            usage
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument: $1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done
if ((KEEP_STATE)) && ((!UNINSTALL)); then
    echo "install.sh: --keep-state only goes with --uninstall" >&2
    exit 2
fi

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR SRC

log() { printf '==> %s\n' "$*"; }

# run CMD...: execute, or print it (shell-quoted) under --dry-run.
run() {
    if ((DRY_RUN)); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

# A path we may delete recursively: absolute, and not a top-level system directory.
removable() {
    case "$1" in
        "" | / | /bin | /boot | /dev | /etc | /home | /lib | /opt | /proc | /root | /run | /sbin | /srv | /sys | /tmp | /usr | /usr/* | /var | /var/lib) return 1 ;;
        /*) return 0 ;;
        *) return 1 ;;
    esac
}

# as_user CMD...: run CMD as USER (the service user, or nobody before it exists).
as_user() {
    local user="$1"
    shift
    (cd / && runuser -u "$user" -- "$@")
}

# The venv's python is a link to PYTHON's real file: the service user must be able to run
# it, and to read its standard library.
check_interpreter() {
    local real user err
    real="$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')" ||
        die "$PYTHON does not run"
    if ((EUID != 0)); then
        log "not root: cannot check that the service user can run $real (checked on install)"
        return 0
    fi
    if ! command -v runuser >/dev/null 2>&1; then
        log "warning: no runuser (util-linux): cannot check that the service user can run $real"
        return 0
    fi
    user="$USER_NAME"
    getent passwd "$user" >/dev/null || user=nobody
    if ! err="$(as_user "$user" "$real" -c 'import encodings, json, sqlite3, venv' 2>&1)"; then
        die "the service user ($user) cannot run $real, the interpreter behind PYTHON=$PYTHON:
  ${err:-no output}
The venv links to this interpreter, so no fsguard service could start. Use a Python that
every user can run, e.g. PYTHON=/usr/bin/python3 (Debian: apt-get install python3 python3-venv)."
    fi
    log "the service user can run $real"
}

# ======================================================================= uninstall
uninstall() {
    if ((!DRY_RUN)) && ((EUID != 0)); then
        die "must run as root (or pass --dry-run)"
    fi
    local removable_path
    for removable_path in "$PREFIX" "$CONFIG_DIR" "$STATE_DIR" "$DOC_DIR"; do
        removable "$removable_path" || die "refusing to remove $removable_path"
    done
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        log "stopping and disabling the units"
        run systemctl disable --now "${UNITS[@]}" || log "warning: systemctl disable failed"
    fi
    # Kernel state: fsguard's own teardown removes exactly its sets and rules.
    if [[ -x "$VENV/bin/fsguard" ]] && [[ -f "$CONFIG" ]]; then
        if "$VENV/bin/fsguard" teardown --help >/dev/null 2>&1; then
            log "removing fsguard's ipsets, iptables rules and nftables table (fsguard teardown)"
            run "$VENV/bin/fsguard" teardown --config "$CONFIG" ||
                log "warning: fsguard teardown failed; check ipset list / iptables -S"
        else
            teardown_fallback
        fi
    else
        log "no $VENV/bin/fsguard or $CONFIG: kernel sets and rules left as they are"
    fi
    local unit
    for unit in "${UNITS[@]}"; do
        if [[ -e "$UNIT_DIR/$unit" ]]; then run rm -f "$UNIT_DIR/$unit"; fi
    done
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        run systemctl daemon-reload
    fi
    if [[ -L "$BIN_LINK" ]] && [[ "$(readlink "$BIN_LINK")" == "$VENV/bin/fsguard" ]]; then
        run rm -f "$BIN_LINK"
    fi
    if [[ -e "$PREFIX" ]]; then run rm -rf "$PREFIX"; fi
    if [[ -e "$DOC_DIR" ]]; then run rm -rf "$DOC_DIR"; fi
    if [[ -e "$MODULES_CONF" ]]; then run rm -f "$MODULES_CONF"; fi
    if ((KEEP_STATE)); then
        log "--keep-state: kept $CONFIG_DIR and $STATE_DIR"
    else
        if [[ -e "$CONFIG_DIR" ]]; then run rm -rf "$CONFIG_DIR"; fi
        if [[ -e "$STATE_DIR" ]]; then run rm -rf "$STATE_DIR"; fi
    fi
    if getent passwd "$USER_NAME" >/dev/null; then
        run userdel "$USER_NAME"
    fi
    if getent group "$USER_NAME" >/dev/null; then
        run groupdel "$USER_NAME"
    fi
    log "fsguard uninstalled"
}

# The same rule and set names as fsguard_firewall.kernel, read from the config.
teardown_fallback() {
    local names set_v4 chain tool set
    names="$("$VENV/bin/python" -c 'import sys
from shared.config import load_config
c = load_config(sys.argv[1])
print(c.security.ipset_name, c.security.iptables_chain)' "$CONFIG")" || {
        log "warning: cannot read $CONFIG: kernel sets and rules left as they are"
        return 0
    }
    read -r set_v4 chain <<<"$names"
    log "removing ipsets $set_v4 $set_v4-v6 and their DROP rules in $chain"
    for tool in iptables ip6tables; do
        set="$set_v4"
        if [[ "$tool" == ip6tables ]]; then set="$set_v4-v6"; fi
        command -v "$tool" >/dev/null 2>&1 || continue
        while "$tool" -w 5 -C "$chain" -m set --match-set "$set" src -j DROP 2>/dev/null; do
            run "$tool" -w 5 -D "$chain" -m set --match-set "$set" src -j DROP
            if ((DRY_RUN)); then break; fi
        done
    done
    if command -v ipset >/dev/null 2>&1; then
        for set in "$set_v4" "$set_v4-v6"; do
            if ipset list -n "$set" >/dev/null 2>&1; then
                run ipset destroy "$set"
            fi
        done
    fi
}

if ((UNINSTALL)); then
    uninstall
    exit 0
fi

# ======================================================================= install
# ---------------------------------------------------------------- checks
[[ -f "$SRC/pyproject.toml" ]] || die "$SRC does not look like the fsguard checkout (no pyproject.toml)"
[[ -f "$SRC/requirements.lock" ]] || die "no $SRC/requirements.lock"
for unit in "${UNITS[@]}"; do
    [[ -f "$SCRIPT_DIR/systemd/$unit" ]] || die "missing unit file $SCRIPT_DIR/systemd/$unit"
done
if [[ -n "$WHEELHOUSE" ]]; then
    [[ -f "$WHEELHOUSE/requirements.lock" && -f "$WHEELHOUSE/fsguard.lock" ]] ||
        die "$WHEELHOUSE is not a wheelhouse (no requirements.lock / fsguard.lock; build one with make wheelhouse)"
    WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)"
fi
if ((!DRY_RUN)) && ((EUID != 0)); then
    die "must run as root (or pass --dry-run)"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=/path/to/python3.11+)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is older than 3.11"
for tool in ipset iptables ip6tables; do
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 ||
        log "warning: $tool not found; the firewall role needs it (Debian: apt-get install ipset iptables)"
done

# ---------------------------------------------------------------- user and group
if getent group "$USER_NAME" >/dev/null; then
    log "group $USER_NAME exists"
else
    log "creating system group $USER_NAME"
    run groupadd --system "$USER_NAME"
fi
if getent passwd "$USER_NAME" >/dev/null; then
    log "user $USER_NAME exists"
else
    log "creating system user $USER_NAME"
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    run useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home \
        --shell "$nologin" --comment "fsguard FreeSWITCH security daemon" "$USER_NAME"
fi
check_interpreter

# ---------------------------------------------------------------- package
if [[ -x "$VENV/bin/python" ]]; then
    log "venv $VENV exists"
else
    log "creating venv $VENV"
    run install -d -m 0755 "$PREFIX"
    run "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
if [[ -n "$WHEELHOUSE" ]]; then
    # --isolated: no pip.conf or PIP_* environment can add an index or a find-links.
    log "installing from the wheelhouse $WHEELHOUSE (offline, every file hash-checked)"
    run "${PIP[@]}" --isolated install --quiet --no-index --find-links "$WHEELHOUSE" \
        --require-hashes --no-deps -r "$WHEELHOUSE/requirements.lock"
    run "${PIP[@]}" --isolated install --quiet --no-index --find-links "$WHEELHOUSE" \
        --require-hashes --no-deps --force-reinstall -r "$WHEELHOUSE/fsguard.lock"
else
    log "installing the run-time dependencies from $SRC/requirements.lock (hash-checked)"
    RUNTIME_LOCK="$(mktemp)"
    trap 'rm -f "$RUNTIME_LOCK"' EXIT
    "$PYTHON" "$SCRIPT_DIR/runtime_lock.py" subset "$SRC/requirements.lock" "$SRC/pyproject.toml" \
        setuptools >"$RUNTIME_LOCK"
    run "${PIP[@]}" install --quiet --require-hashes --no-deps -r "$RUNTIME_LOCK"
    log "installing fsguard from $SRC into $VENV (--no-deps)"
    run "${PIP[@]}" install --quiet --no-deps --no-build-isolation --upgrade "$SRC"
fi
run "${PIP[@]}" check
run install -d -m 0755 "$(dirname "$BIN_LINK")"
run ln -sfn "$VENV/bin/fsguard" "$BIN_LINK"

# ---------------------------------------------------------------- configuration and state
run install -d -m 0750 -o root -g "$USER_NAME" "$CONFIG_DIR"
if [[ -e "$CONFIG" ]]; then
    log "$CONFIG exists, left unchanged"
else
    [[ -f "$SRC/config.example.json" ]] || die "no $SRC/config.example.json to install as $CONFIG"
    log "installing $CONFIG from config.example.json"
    run install -m 0640 -o root -g "$USER_NAME" "$SRC/config.example.json" "$CONFIG"
fi
run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"
# State kept by `--uninstall --keep-state` belongs to the (new) service user again.
run chown -R "$USER_NAME:$USER_NAME" "$STATE_DIR"

# ---------------------------------------------------------------- kernel modules
log "writing $MODULES_CONF"
if ((DRY_RUN)); then
    printf '+ printf %%s\\n %s > %s\n' "${MODULES[*]}" "$MODULES_CONF"
else
    install -d -m 0755 "$(dirname "$MODULES_CONF")"
    printf '%s\n' "# fsguard: ipset, the iptables set match, nf_tables" "${MODULES[@]}" >"$MODULES_CONF.tmp"
    chmod 0644 "$MODULES_CONF.tmp"
    mv -f "$MODULES_CONF.tmp" "$MODULES_CONF"
fi
if [[ "$SKIP_MODPROBE" != 1 ]] && command -v modprobe >/dev/null 2>&1; then
    for module in "${MODULES[@]}"; do
        run modprobe "$module" || log "warning: modprobe $module failed (loaded at next boot)"
    done
fi

# ---------------------------------------------------------------- systemd units and docs
run install -d -m 0755 "$UNIT_DIR"
for unit in "${UNITS[@]}"; do
    run install -m 0644 "$SCRIPT_DIR/systemd/$unit" "$UNIT_DIR/$unit"
done
run install -d -m 0755 "$DOC_DIR"
run install -m 0644 "$SCRIPT_DIR/README.md" "$DOC_DIR/README.md"

if [[ -d /run/systemd/system ]]; then
    run systemctl daemon-reload
else
    log "systemd is not running: skipped systemctl daemon-reload"
fi

log "done. Edit $CONFIG, then: systemctl enable --now fsguard.target"
