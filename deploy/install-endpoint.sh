#!/usr/bin/env bash
# Install, configure and start a Globus Compute endpoint for colmena-fed on an HPC login node.
#
#   deploy/install-endpoint.sh --name polaris --config endpoints/polaris.yaml \
#       --var account=MYPROJ --var worker_init='module load conda; conda activate ~/envs/cf'
#
# Steps, each printed before it runs:
#   1. a virtual environment with globus-compute-endpoint 4.19.0 and colmena-fed (this checkout);
#   2. `colmena-fed endpoints validate` on the chosen endpoints/ file, with the --var values;
#   3. `globus-compute-endpoint configure NAME --template-config FILE`: the file becomes the
#      endpoint's config template, rendered with each campaign's user_endpoint_config;
#   4. optionally a ProxyStore endpoint (--proxystore NAME) on a relay (--proxystore-relay);
#   5. optionally systemd user units that keep both running (--systemd);
#   6. `globus-compute-endpoint login` if needed, then start, or restart (unless --no-start).
# An existing endpoint (or ProxyStore endpoint, or unit file) is never overwritten without
# --force; with --force the endpoint keeps its UUID, only its config template is replaced (the
# old one kept beside it), and the endpoint is restarted so that the new template is used.
# --dry-run prints every command and file and changes nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENDPOINT_VERSION="4.19.0"

usage() {
  cat <<EOF
usage: $0 --name NAME --config FILE [options]

  --name NAME           endpoint name (its directory under ~/.globus_compute)
  --config FILE         endpoint configuration, e.g. endpoints/polaris.yaml
  --var NAME=VALUE      template variable to validate with (repeatable); a campaign gives the
                        same values as its site's user_endpoint_config
  --venv DIR            environment to create or reuse (default: ~/.colmena-fed/endpoint-venv)
  --proxystore NAME     also configure a ProxyStore endpoint NAME
  --proxystore-port N   its port (default 8765)
  --proxystore-host A   the address its object API listens on (default 127.0.0.1: processes
                        on this host; name a routable address only on a trusted network)
  --proxystore-relay A  its relay (default wss://relay.proxystore.dev, which needs a Globus
                        login: proxystore-globus-auth login)
  --systemd             install systemd user units that keep the endpoint(s) running
  --no-start            configure only; start nothing
  --force               replace an existing endpoint's config template, or unit files
  --upgrade             reinstall colmena-fed from this checkout into an existing --venv
  --dry-run             print what would be done; change nothing
EOF
}

die() { echo "install-endpoint: $*" >&2; exit 1; }

NAME="" CONFIG="" VENV="$HOME/.colmena-fed/endpoint-venv" PS_NAME="" PS_PORT=8765
PS_HOST=127.0.0.1
PS_RELAY="wss://relay.proxystore.dev"
SYSTEMD=0 START=1 FORCE=0 DRY=0 UPGRADE=0
VARS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
    --var) VARS+=("${2:?--var needs NAME=VALUE}"); shift 2 ;;
    --venv) VENV="${2:?--venv needs a directory}"; shift 2 ;;
    --proxystore) PS_NAME="${2:?--proxystore needs a name}"; shift 2 ;;
    --proxystore-port) PS_PORT="${2:?--proxystore-port needs a port}"; shift 2 ;;
    --proxystore-host) PS_HOST="${2:?--proxystore-host needs an address}"; shift 2 ;;
    --proxystore-relay) PS_RELAY="${2:?--proxystore-relay needs an address}"; shift 2 ;;
    --systemd) SYSTEMD=1; shift ;;
    --no-start) START=0; shift ;;
    --force) FORCE=1; shift ;;
    --upgrade) UPGRADE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$NAME" ] || die "--name is required"
[ -n "$CONFIG" ] || die "--config is required (one of $REPO/endpoints/*.yaml)"
[ -f "$CONFIG" ] || die "--config: no such file: $CONFIG"
[[ "$NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "--name: use letters, digits, '.', '_' or '-'"
[[ "$NAME" != .* ]] || die "--name: may not start with '.'"
if [ -n "$PS_NAME" ]; then
  [[ "$PS_NAME" =~ ^[A-Za-z0-9._-]+$ && "$PS_NAME" != .* ]] \
    || die "--proxystore: use letters, digits, '.', '_' or '-' (not first '.'), got '$PS_NAME'"
  [[ "$PS_PORT" =~ ^[0-9]+$ ]] && [ "$PS_PORT" -ge 1 ] && [ "$PS_PORT" -le 65535 ] \
    || die "--proxystore-port: a port number (1-65535), got '$PS_PORT'"
  [[ "$PS_HOST" =~ ^[A-Za-z0-9.:-]+$ ]] \
    || die "--proxystore-host: an IP address or host name, got '$PS_HOST'"
fi
CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
[[ "$VENV" != *[[:space:]]* ]] || die "--venv: a path without spaces, please (it goes into unit files)"

GC_HOME="${GLOBUS_COMPUTE_USER_DIR:-$HOME/.globus_compute}"
EP_DIR="$GC_HOME/$NAME"
PS_HOME="${PROXYSTORE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/proxystore}"
UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
EP_UNIT="colmena-fed-endpoint-$NAME.service"
PS_UNIT="colmena-fed-proxystore-$PS_NAME.service"

# Run a command, or in a dry run only show it.
run() {
  echo "+ $(printf '%q ' "$@")"
  if [ "$DRY" -eq 0 ]; then "$@"; fi
}

# Write a file from stdin, or in a dry run only show it.
write_file() {
  local path="$1" text
  text="$(cat)"
  echo "+ write $path"
  if [ "$DRY" -eq 1 ]; then
    sed 's/^/    /' <<<"$text"
  else
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$text" >"$path"
  fi
}

# Everything that could refuse is checked before anything changes.
EXISTED=0
if [ -d "$EP_DIR" ]; then
  EXISTED=1
  [ "$FORCE" -eq 1 ] \
    || die "endpoint '$NAME' already exists ($EP_DIR); --force replaces its config template (it keeps its UUID)"
  ! grep -q '^engine:' "$EP_DIR/config.yaml" 2>/dev/null \
    || die "endpoint '$NAME' is not template-capable (its config.yaml has an engine); run 'globus-compute-endpoint migrate-to-template-capable $NAME' first"
fi
if [ -n "$PS_NAME" ] && [ -d "$PS_HOME/$PS_NAME" ] && [ "$FORCE" -eq 0 ]; then
  die "ProxyStore endpoint '$PS_NAME' already exists ($PS_HOME/$PS_NAME); --force keeps it as it is"
fi
if [ "$SYSTEMD" -eq 1 ] && [ "$FORCE" -eq 0 ]; then
  for unit in "$EP_UNIT" ${PS_NAME:+"$PS_UNIT"}; do
    [ ! -e "$UNIT_DIR/$unit" ] || die "unit file $UNIT_DIR/$unit already exists; --force replaces it"
  done
fi

echo "== 1. environment: $VENV"
installed=""
if [ -x "$VENV/bin/python" ]; then
  installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("globus-compute-endpoint"))' 2>/dev/null || true)"
fi
if [ "$installed" = "$ENDPOINT_VERSION" ] && [ -x "$VENV/bin/colmena-fed" ] && [ "$UPGRADE" -eq 0 ]; then
  echo "globus-compute-endpoint $installed and colmena-fed already installed (--upgrade reinstalls colmena-fed)"
else
  [ -x "$VENV/bin/python" ] || run python3 -m venv "$VENV"
  run "$VENV/bin/python" -m pip install --upgrade pip
  run "$VENV/bin/python" -m pip install "globus-compute-endpoint==$ENDPOINT_VERSION" "$REPO"
fi

echo "== 2. validate $CONFIG"
var_args=()
for v in ${VARS[@]+"${VARS[@]}"}; do var_args+=(--var "$v"); done
if [ -x "$VENV/bin/colmena-fed" ]; then
  echo "+ $(printf '%q ' colmena-fed endpoints validate "$CONFIG" ${var_args[@]+"${var_args[@]}"})"
  "$VENV/bin/colmena-fed" endpoints validate "$CONFIG" ${var_args[@]+"${var_args[@]}"} \
    || die "fix the problems above (or give the missing --var values) and run again"
elif [ "$DRY" -eq 1 ]; then
  echo "(dry run: validation needs the environment installed)"
else
  die "colmena-fed is missing from $VENV after installing it"
fi

echo "== 3. endpoint '$NAME' in $EP_DIR"
if [ -d "$EP_DIR" ]; then
  template="$EP_DIR/user_config_template.yaml.j2"
  [ ! -e "$template" ] || run cp "$template" "$template.bak-$(date +%Y%m%d-%H%M%S)"
  run cp "$CONFIG" "$template"
else
  run "$VENV/bin/globus-compute-endpoint" configure "$NAME" --multi-user false \
    --display-name "$NAME" --template-config "$CONFIG"
fi

if [ -n "$PS_NAME" ]; then
  echo "== 4. ProxyStore endpoint '$PS_NAME' on $PS_HOST:$PS_PORT, relay $PS_RELAY"
  if [ -d "$PS_HOME/$PS_NAME" ]; then
    echo "already configured: $PS_HOME/$PS_NAME (kept as it is)"
  else
    run "$VENV/bin/proxystore-endpoint" configure "$PS_NAME" --host "$PS_HOST" \
      --port "$PS_PORT" --relay-address "$PS_RELAY" --persist
  fi
fi

if [ "$SYSTEMD" -eq 1 ]; then
  echo "== 5. systemd user units in $UNIT_DIR"
  write_file "$UNIT_DIR/$EP_UNIT" <<EOF
[Unit]
Description=Globus Compute endpoint $NAME (colmena-fed)
After=network-online.target

[Service]
Type=simple
Environment=PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin
Environment=GLOBUS_COMPUTE_USER_DIR=$GC_HOME
ExecStart=$VENV/bin/globus-compute-endpoint start $NAME
Restart=always
RestartSec=30

[Install]
WantedBy=default.target
EOF
  if [ -n "$PS_NAME" ]; then
    write_file "$UNIT_DIR/$PS_UNIT" <<EOF
[Unit]
Description=ProxyStore endpoint $PS_NAME (colmena-fed)
After=network-online.target

[Service]
Type=simple
Environment=PROXYSTORE_HOME=$PS_HOME
ExecStart=$VENV/bin/proxystore-endpoint start $PS_NAME --no-detach
Restart=always
RestartSec=30

[Install]
WantedBy=default.target
EOF
  fi
fi

if [ "$START" -eq 1 ]; then
  echo "== 6. log in and start"
  run "$VENV/bin/globus-compute-endpoint" login
  if [ -n "$PS_NAME" ] && [ "$PS_RELAY" = "wss://relay.proxystore.dev" ]; then
    run "$VENV/bin/proxystore-globus-auth" login
  fi
  if [ "$SYSTEMD" -eq 1 ]; then
    run systemctl --user daemon-reload
    run systemctl --user enable --now "$EP_UNIT" ${PS_NAME:+"$PS_UNIT"}
    # A running endpoint keeps its user endpoints, and their old configuration, until restarted.
    [ "$EXISTED" -eq 0 ] || run systemctl --user restart "$EP_UNIT"
  else
    [ "$EXISTED" -eq 0 ] || run "$VENV/bin/globus-compute-endpoint" stop "$NAME" || true
    run "$VENV/bin/globus-compute-endpoint" start "$NAME" --detach
    [ -z "$PS_NAME" ] || run "$VENV/bin/proxystore-endpoint" start "$PS_NAME" --detach
  fi
elif [ "$SYSTEMD" -eq 1 ]; then
  echo "to start: systemctl --user daemon-reload && systemctl --user enable --now $EP_UNIT${PS_NAME:+ $PS_UNIT}"
fi

endpoint_id="<its UUID: globus-compute-endpoint list>"
if [ -f "$EP_DIR/endpoint.json" ]; then
  endpoint_id="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["endpoint_id"])' "$EP_DIR/endpoint.json")"
fi
echo
echo "In the campaign's sites YAML:"
echo "  $NAME:"
echo "    endpoint: $endpoint_id"
echo "    resources: {cpu: 1}  # edit: slots by kind, e.g. {gpu: 4} for one node of 4 GPUs"
if [ "${#VARS[@]}" -gt 0 ]; then
  echo "    user_endpoint_config:"
  # Each value as `endpoints validate --var` reads it: JSON where it is JSON, else a string.
  python3 - ${VARS[@]+"${VARS[@]}"} <<'EOF'
import json
import sys

for item in sys.argv[1:]:
    key, _, text = item.partition("=")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    print(f"      {key}: {json.dumps(value)}")
EOF
fi
if [ -n "$PS_NAME" ] && [ -f "$PS_HOME/$PS_NAME/config.toml" ]; then
  echo "ProxyStore endpoint $PS_NAME, for the data: section of the sites YAML: $(sed -n 's/^uuid = "\(.*\)"/\1/p' "$PS_HOME/$PS_NAME/config.toml")"
fi
if [ "$DRY" -eq 1 ]; then echo "(dry run: nothing was changed)"; fi
