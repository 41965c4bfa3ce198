#!/usr/bin/env bash
# fsguard installer for systemd hosts. Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh            install or upgrade from this checkout
#   deploy/install.sh --dry-run       print what would be done, change nothing
#
# What it does:
#   - system user and group "fsguard" (no login, home /var/lib/fsguard)
#   - venv /opt/fsguard/venv with this checkout pip-installed, /usr/local/bin/fsguard -> venv
#   - /etc/fsguard/config.json from config.example.json, only when absent (0640 root:fsguard)
#   - the systemd units in /etc/systemd/system, the README in /usr/share/doc/fsguard
#   - /etc/modules-load.d/fsguard.conf (ipset and nf_tables kernel modules; the firewall unit cannot load them)
#   - `systemctl daemon-reload` when systemd is running. It never enables or starts anything.
#
# Environment: PYTHON (default python3, must be >= 3.11).
set -euo pipefail

readonly USER_NAME=fsguard
readonly PREFIX=/opt/fsguard
readonly VENV="$PREFIX/venv"
readonly BIN_LINK=/usr/local/bin/fsguard
readonly CONFIG_DIR=/etc/fsguard
readonly CONFIG="$CONFIG_DIR/config.json"
readonly STATE_DIR=/var/lib/fsguard
readonly UNIT_DIR=/etc/systemd/system
readonly DOC_DIR=/usr/share/doc/fsguard
readonly MODULES_CONF=/etc/modules-load.d/fsguard.conf
readonly UNITS=(fsguard.target fsguard-firewall.service fsguard-supervisor.service fsguard-api.service)
readonly MODULES=(ip_set ip_set_hash_ip ip_set_hash_net xt_set nf_tables)

PYTHON="${PYTHON:-python3}"
DRY_RUN=0

usage() {
    sed -n '2,16s/^# \{0,1\}//p' "$0"
}

for arg in "$@"; do
    case "$arg" in
        --dry-run | -n) DRY_RUN=1 ;;
        --help | -h)
            usage
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument: $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done

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

# ---------------------------------------------------------------- checks
[[ -f "$SRC/pyproject.toml" ]] || die "$SRC does not look like the fsguard checkout (no pyproject.toml)"
for unit in "${UNITS[@]}"; do
    [[ -f "$SCRIPT_DIR/systemd/$unit" ]] || die "missing unit file $SCRIPT_DIR/systemd/$unit"
done
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

# ---------------------------------------------------------------- package
if [[ -x "$VENV/bin/python" ]]; then
    log "venv $VENV exists"
else
    log "creating venv $VENV"
    run install -d -m 0755 "$PREFIX"
    run "$PYTHON" -m venv "$VENV"
fi
log "installing fsguard from $SRC into $VENV"
run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SRC"
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
if command -v modprobe >/dev/null 2>&1; then
    for module in "${MODULES[@]}"; do
        run modprobe "$module" || log "warning: modprobe $module failed (loaded at next boot)"
    done
fi

# ---------------------------------------------------------------- systemd units and docs
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
