# shellcheck shell=sh
# lib.sh — helpers shared by the progressdb-upgrades host scripts.
# components/hostScripts.ts inlines this file into every rendered script (in
# place of the line ending in "# @inline lib.sh"), so the remote side never
# needs it on disk. Everything here is POSIX sh (checked by shellcheck -s sh).
#
# Conventions: progress and errors go to stderr; stdout carries exactly one
# JSON line, printed by the calling script at the very end.

PDB_SCRIPT=${PDB_SCRIPT:-progressdb}
# The aws CLI must never page or prompt in a non-interactive session.
AWS_PAGER=''
AWS_CLI_AUTO_PROMPT=off
AWS_RETRY_MODE=standard
AWS_MAX_ATTEMPTS=${AWS_MAX_ATTEMPTS:-3}
export AWS_PAGER AWS_CLI_AUTO_PROMPT AWS_RETRY_MODE AWS_MAX_ATTEMPTS

# log: progress to stderr and, once the install dir has logs/, to
# logs/upgrade.log on the host, so what happened stays readable after a lost
# SSH session. A closed stderr (the session is gone) must not stop the script.
log() {
  pdb_msg="$(date -u +%Y-%m-%dT%H:%M:%SZ) [$PDB_SCRIPT] $*"
  printf '%s\n' "$pdb_msg" >&2 2>/dev/null || true
  if [ -d "${PDB_INSTALL_DIR:-/nonexistent}/logs" ]; then
    printf '%s\n' "$pdb_msg" >>"$PDB_INSTALL_DIR/logs/upgrade.log" 2>/dev/null || true
  fi
}

# fail <exit code> <message...>
fail() {
  pdb_code=$1
  shift
  log "ERROR: $*"
  # A fleet's install: where the rollout stands (which instances run which version).
  [ -z "${PDB_FLEET_NOTE:-}" ] || log "$PDB_FLEET_NOTE"
  exit "$pdb_code"
}

# json_str <value>: prints the value as a JSON string literal. Control
# characters are folded to spaces (the values are paths, versions, keys).
json_str() {
  printf '"%s"' "$(printf '%s' "$1" | tr '\000-\037' ' ' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# sh_quote <value>: single-quoted shell word.
sh_quote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# read_secrets: reads KEY=VALUE lines from stdin into non-exported shell
# variables (never eval'd, never echoed), then detaches stdin so no later
# command can read it. Unknown lines are ignored without printing them.
# shellcheck disable=SC2034 # PDB_SECRET_SERVICE_CONFIG_B64 is used by install.sh
read_secrets() {
  PDB_SECRET_AWS_ACCESS_KEY_ID=''
  PDB_SECRET_AWS_SECRET_ACCESS_KEY=''
  PDB_SECRET_AWS_SESSION_TOKEN=''
  PDB_SECRET_SERVICE_CONFIG_B64=''
  if [ -t 0 ]; then
    return 0
  fi
  pdb_ignored=0
  while IFS= read -r pdb_line || [ -n "$pdb_line" ]; do
    pdb_line=$(printf '%s' "$pdb_line" | tr -d '\r')
    case $pdb_line in
      AWS_ACCESS_KEY_ID=*) PDB_SECRET_AWS_ACCESS_KEY_ID=${pdb_line#*=} ;;
      AWS_SECRET_ACCESS_KEY=*) PDB_SECRET_AWS_SECRET_ACCESS_KEY=${pdb_line#*=} ;;
      AWS_SESSION_TOKEN=*) PDB_SECRET_AWS_SESSION_TOKEN=${pdb_line#*=} ;;
      PDB_SERVICE_CONFIG_B64=*) PDB_SECRET_SERVICE_CONFIG_B64=${pdb_line#*=} ;;
      '' | '#'*) ;;
      *) pdb_ignored=$((pdb_ignored + 1)) ;;
    esac
  done
  pdb_line=''
  exec 0</dev/null
  if [ "$pdb_ignored" -gt 0 ]; then
    log "ignored $pdb_ignored unexpected stdin line(s) (expected KEY=VALUE for AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, PDB_SERVICE_CONFIG_B64)"
  fi
}

# aws_cli <args...>: runs the aws CLI with the stdin credentials placed in its
# environment only (not exported to the script, never on a command line).
aws_cli() {
  if [ -n "$PDB_SECRET_AWS_ACCESS_KEY_ID" ] && [ -n "$PDB_SECRET_AWS_SESSION_TOKEN" ]; then
    AWS_ACCESS_KEY_ID=$PDB_SECRET_AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$PDB_SECRET_AWS_SECRET_ACCESS_KEY \
      AWS_SESSION_TOKEN=$PDB_SECRET_AWS_SESSION_TOKEN "$PDB_AWS" "$@"
  elif [ -n "$PDB_SECRET_AWS_ACCESS_KEY_ID" ]; then
    AWS_ACCESS_KEY_ID=$PDB_SECRET_AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$PDB_SECRET_AWS_SECRET_ACCESS_KEY \
      "$PDB_AWS" "$@"
  else
    "$PDB_AWS" "$@"
  fi
}

# aws_s3 <s3|s3api> <args...>: adds region and endpoint.
aws_s3() {
  pdb_svc=$1
  shift
  if [ -n "$PDB_S3_ENDPOINT" ]; then
    aws_cli "$pdb_svc" --region "$PDB_S3_REGION" --endpoint-url "$PDB_S3_ENDPOINT" "$@"
  else
    aws_cli "$pdb_svc" --region "$PDB_S3_REGION" "$@"
  fi
}

s3_where() {
  if [ -n "$PDB_S3_ENDPOINT" ]; then
    printf 'endpoint %s, region %s' "$PDB_S3_ENDPOINT" "$PDB_S3_REGION"
  else
    printf 'AWS S3, region %s' "$PDB_S3_REGION"
  fi
}

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# free_mb <path>: free MB on the filesystem holding path (or its nearest
# existing parent).
free_mb() {
  pdb_d=$1
  while [ ! -d "$pdb_d" ]; do
    pdb_d=$(dirname -- "$pdb_d")
  done
  df -Pk -- "$pdb_d" | awk 'NR==2 { print int($4 / 1024) }'
}

# fetch <url> <out>: downloads with curl or wget; on failure prints the
# downloader's error to stdout and returns non-zero.
fetch() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 --connect-timeout 10 -o "$2" -- "$1" 2>&1
  else
    wget -q -O "$2" -- "$1" 2>&1 || {
      pdb_rc=$?
      printf 'wget exit %s\n' "$pdb_rc"
      return "$pdb_rc"
    }
  fi
}

# http_get <url>: prints "<status> <body>" (status 000 when unreachable).
http_get() {
  if command -v curl >/dev/null 2>&1; then
    pdb_out=$(curl -sS --max-time 3 -w '\n%{http_code}' -- "$1" 2>&1) || true
    printf '%s %s' "$(printf '%s\n' "$pdb_out" | tail -n 1)" "$(printf '%s\n' "$pdb_out" | sed '$d' | tr -d '\n')"
  else
    if pdb_out=$(wget -q -T 3 -O - -- "$1" 2>&1); then
      printf '200 %s' "$(printf '%s' "$pdb_out" | tr -d '\n')"
    else
      printf '000 %s' "$(printf '%s' "$pdb_out" | tr -d '\n')"
    fi
  fi
}

# current_version: the release the "current" symlink points to ("" if none);
# in docker mode, the progressdb.version label of the container.
current_version() {
  if [ "$PDB_SERVICE_MANAGER" = docker ]; then
    dkr inspect -f '{{ index .Config.Labels "progressdb.version" }}' "$PDB_SERVICE_NAME" 2>/dev/null | sed 's/^<no value>$//' || true
  elif [ -L "$PDB_INSTALL_DIR/current" ]; then
    basename -- "$(readlink -- "$PDB_INSTALL_DIR/current")"
  fi
}

# switch_current <version>: atomic symlink switch (ln to temp + mv -T).
switch_current() {
  pdb_tmp_link="$PDB_INSTALL_DIR/.current.$$"
  rm -f -- "$pdb_tmp_link"
  ln -s -- "$PDB_INSTALL_DIR/releases/$1" "$pdb_tmp_link"
  mv -T -- "$pdb_tmp_link" "$PDB_INSTALL_DIR/current"
}

# data_layout <dir>: what a data dir holds: "empty" (missing or empty), "root"
# (0.1.x: one Pebble DB at its root), "store" (0.2.x: store/ index/ ...), or
# "mixed" (a 0.2.x release started on 0.1.x data: both, the old data invisible).
data_layout() {
  dl_root=0
  dl_store=0
  [ -f "$1/CURRENT" ] && dl_root=1
  [ -d "$1/store" ] && dl_store=1
  case $dl_root$dl_store in
    10) echo root ;;
    01) echo store ;;
    11) echo mixed ;;
    *) echo empty ;;
  esac
}

# yaml_keys <file>: the scalar keys of a block-style YAML file, flattened to
# "a.b.c=value" lines (quotes stripped; list items and flow lists kept as text).
yaml_keys() {
  awk '
    /^[[:space:]]*(#|$)/ { next }
    /^[[:space:]]*- / { if (n > 0 && !(keys[n] in listed)) { listed[keys[n]] = 1; print keys[n] "=[list]" } next }
    {
      match($0, /^ */); ind = RLENGTH
      line = substr($0, ind + 1)
      k = line; sub(/:.*/, "", k)
      v = line; if (index(v, ":") == 0) next
      v = substr(v, index(v, ":") + 1); sub(/^[[:space:]]+/, "", v); sub(/[[:space:]]+#.*$/, "", v)
      while (n > 0 && ind <= depth[n]) n--
      path = (n > 0 ? keys[n] "." : "") k
      if (v == "") { n++; depth[n] = ind; keys[n] = path; next }
      gsub(/^["\047]|["\047]$/, "", v)
      print path "=" v
    }' "$1"
}

# kept_field <name>: a field of <installDir>/kept-data, the record of the data
# the last migration kept ("" if there is none).
kept_field() {
  sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$PDB_INSTALL_DIR/kept-data" 2>/dev/null || true
}

# swap_data_back <label>: puts the data kept by the last migration back at
# dbPath; the data there now is moved aside (never deleted) to
# <dbPath>.v<to>-<label>-<time>. Returns 1 when there is nothing kept.
swap_data_back() {
  sdb_kept=$(kept_field path)
  sdb_from=$(kept_field from)
  sdb_to=$(kept_field to)
  [ -n "$sdb_kept" ] && [ -d "$sdb_kept" ] || return 1
  sdb_aside="$PDB_DB_PATH.v$sdb_to-$1-$(date -u +%Y%m%dT%H%M%SZ)"
  mv -- "$PDB_DB_PATH" "$sdb_aside"
  mv -- "$sdb_kept" "$PDB_DB_PATH"
  rm -f -- "$PDB_INSTALL_DIR/kept-data"
  log "put the $sdb_from data kept at $sdb_kept back at $PDB_DB_PATH; the $sdb_to data is kept at $sdb_aside"
}

# ---- run-once steps -----------------------------------------------------------
# A step that must run once per upgrade (backup, migration) records its result
# with its run key (the version and the drift probe's epoch). Re-run with the
# same key because another of its inputs changed, it prints the recorded
# result and does nothing; a new upgrade has a new key.

# recorded_result <step>: prints the result recorded for PDB_RUN_KEY; fails if there is none.
recorded_result() {
  [ "$(head -n 1 -- "$PDB_INSTALL_DIR/run/$1-last" 2>/dev/null)" = "$PDB_RUN_KEY" ] || return 1
  sed -n 2p -- "$PDB_INSTALL_DIR/run/$1-last"
}

# record_result <step> <json>: records the step's result for PDB_RUN_KEY and prints it.
record_result() {
  mkdir -p -- "$PDB_INSTALL_DIR/run"
  printf '%s\n%s\n' "$PDB_RUN_KEY" "$2" >"$PDB_INSTALL_DIR/run/$1-last.tmp" &&
    mv -f -- "$PDB_INSTALL_DIR/run/$1-last.tmp" "$PDB_INSTALL_DIR/run/$1-last"
  printf '%s\n' "$2"
}

# ---- stream digests ---------------------------------------------------------
# digest_start <dir>: starts sha256sum and wc -c on two fifos under <dir>;
# pass a stream through `digest_tee <dir>` to measure it, then
# `digest_result <dir>` waits and sets PDB_DIGEST_SHA and PDB_DIGEST_SIZE.
digest_start() {
  rm -f -- "$1/sha.fifo" "$1/size.fifo"
  mkfifo "$1/sha.fifo" "$1/size.fifo"
  sha256sum <"$1/sha.fifo" >"$1/sha.out" &
  PDB_DIGEST_PIDS=$!
  wc -c <"$1/size.fifo" >"$1/size.out" &
  PDB_DIGEST_PIDS="$PDB_DIGEST_PIDS $!"
}

digest_tee() {
  tee "$1/sha.fifo" "$1/size.fifo"
}

# shellcheck disable=SC2034 # read by the scripts that inline this file
digest_result() {
  for pdb_pid in $PDB_DIGEST_PIDS; do
    wait "$pdb_pid" || true
  done
  PDB_DIGEST_SHA=$(cut -d' ' -f1 <"$1/sha.out")
  PDB_DIGEST_SIZE=$(tr -d ' \n' <"$1/size.out")
}

# ---- service manager ------------------------------------------------------

svc_pidfile() { printf '%s/run/%s.pid' "$PDB_INSTALL_DIR" "$PDB_SERVICE_NAME"; }
svc_logfile() { printf '%s/logs/%s.log' "$PDB_INSTALL_DIR" "$PDB_SERVICE_NAME"; }
svc_launcher() { printf '%s/bin/%s-launch' "$PDB_INSTALL_DIR" "$PDB_SERVICE_NAME"; }
# service_config_path: the --config the service runs with: the operator's file,
# or the one the program renders next to the current release.
service_config_path() {
  if [ -n "${PDB_CONFIG_FILE:-}" ]; then
    printf '%s' "$PDB_CONFIG_FILE"
  else
    printf '%s/current/config.yaml' "$PDB_INSTALL_DIR"
  fi
}

# ---- what the program owns on the host ---------------------------------------
# Every service file install.sh writes (systemd unit, supervisor program,
# launcher) carries a "# Managed by progressdb-upgrades" line (";" in
# supervisor's syntax); earlier versions of the program wrote the same header
# on units, and "# Generated by progressdb-upgrades" on the launcher.
svc_unit_path() {
  case $PDB_SERVICE_MANAGER in
    systemd) printf '%s/%s.service' "$PDB_SYSTEMD_UNIT_DIR" "$PDB_SERVICE_NAME" ;;
    supervisor) printf '%s/%s.conf' "$PDB_SUPERVISOR_CONF_DIR" "$PDB_SERVICE_NAME" ;;
  esac
}

is_ours() {
  grep -qE '^[#;] (Managed|Generated) by progressdb-upgrades' -- "$1" 2>/dev/null
}

# check_service_files: fails (exit 1) when the unit, supervisor program,
# launcher or pidfile that PDB_SERVICE_NAME points to exists but was not
# written by this program: the name belongs to another service (serviceName
# sshd would overwrite and restart sshd's unit). Run before anything is
# written or stopped. A pidfile has no room for a marker: it is ours when the
# launcher that writes it is.
check_service_files() {
  [ "$PDB_SERVICE_MANAGER" != docker ] || return 0
  csf_fix="Give ProgressDB a name of its own (pulumi config set --path progressdb:deployment.binary.serviceName progressdb), or, to let the program take over a ProgressDB installed by hand, move the file aside (nothing was changed)"
  csf_unit=$(svc_unit_path)
  set -- "$(svc_launcher)" "$(svc_pidfile)"
  [ -z "$csf_unit" ] || set -- "$csf_unit" "$@"
  for csf_f in "$@"; do
    { [ -e "$csf_f" ] || [ -L "$csf_f" ]; } || continue
    csf_mark=$csf_f
    [ "$csf_f" != "$(svc_pidfile)" ] || csf_mark=$(svc_launcher)
    is_ours "$csf_mark" ||
      fail 1 "$csf_f exists and was not written by progressdb-upgrades ($csf_mark has no '# Managed by progressdb-upgrades' line): progressdb:deployment.binary.serviceName '$PDB_SERVICE_NAME' names a service this program does not manage, and it will not overwrite, stop or restart it. $csf_fix"
  done
  # The name may also be a service defined elsewhere (a vendor unit, a program in another supervisor file).
  [ -n "$csf_unit" ] && [ ! -e "$csf_unit" ] || return 0
  csf_other=''
  case $PDB_SERVICE_MANAGER in
    systemd)
      csf_frag=$(systemctl show --property=FragmentPath --value "$PDB_SERVICE_NAME.service" 2>/dev/null || true)
      [ -z "$csf_frag" ] || [ "$csf_frag" = "$csf_unit" ] || csf_other="its unit is $csf_frag"
      ;;
    supervisor)
      case $(supervisor_state) in
        RUNNING | STARTING | STOPPED | STOPPING | BACKOFF | EXITED | FATAL | UNKNOWN) csf_other="supervisord has a program by that name, defined outside $csf_unit" ;;
      esac
      ;;
  esac
  [ -z "$csf_other" ] ||
    fail 1 "progressdb:deployment.binary.serviceName '$PDB_SERVICE_NAME' is already a service on this host that this program did not install ($csf_other): it will not replace, stop or restart it. $csf_fix"
}

# ---- the service's user -------------------------------------------------------
# The service runs as PDB_SERVICE_USER (and the group of the same name), never
# as root. It owns the data dirs and the config file it reads; the releases
# stay root's.

# ensure_service_user: creates the system user and its group when absent.
ensure_service_user() {
  getent group "$PDB_SERVICE_USER" >/dev/null 2>&1 || groupadd --system "$PDB_SERVICE_USER"
  if ! id -u "$PDB_SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --gid "$PDB_SERVICE_USER" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PDB_SERVICE_USER"
    log "created the system user $PDB_SERVICE_USER (the service runs as it)"
  fi
}

as_service_user() {
  setpriv --reuid="$PDB_SERVICE_USER" --regid="$PDB_SERVICE_USER" --init-groups -- "$@"
}

# service_user_blocker <path>: prints the first existing directory on the way
# to <path> (itself included) that the service user cannot enter, if any.
service_user_blocker() {
  sub_d=''
  sub_rest=${1#/}
  while [ -n "$sub_rest" ]; do
    sub_d="$sub_d/${sub_rest%%/*}"
    case $sub_rest in */*) sub_rest=${sub_rest#*/} ;; *) sub_rest='' ;; esac
    [ -d "$sub_d" ] || return 0
    as_service_user test -x "$sub_d" || {
      printf '%s\n' "$sub_d"
      return 0
    }
  done
}

# own_service_files: before a start, the data dirs and the config file the
# service reads belong to its user (a migration, a restore, or an earlier
# version of this program that ran the service as root leaves root's files).
own_service_files() {
  [ "$PDB_SERVICE_MANAGER" != docker ] || return 0
  for osf_d in "$PDB_DB_PATH" ${PDB_KMS_DATA_DIR:+"$PDB_KMS_DATA_DIR"}; do
    mkdir -p -- "$osf_d"
    if [ -n "$(find -H "$osf_d" \( ! -user "$PDB_SERVICE_USER" -o ! -group "$PDB_SERVICE_USER" \) -print -quit)" ]; then
      chown -RH -- "$PDB_SERVICE_USER:$PDB_SERVICE_USER" "$osf_d"
      log "$osf_d now belongs to $PDB_SERVICE_USER (the service's user)"
    fi
  done
  if [ -z "${PDB_CONFIG_FILE:-}" ] && [ -f "$PDB_INSTALL_DIR/current/config.yaml" ]; then
    chown -- "$PDB_SERVICE_USER:$PDB_SERVICE_USER" "$PDB_INSTALL_DIR/current/config.yaml"
  fi
}

# dkr: the docker CLI (or podman-docker) against the daemon the container runs on.
dkr() {
  if [ -n "${PDB_DOCKER_HOST:-}" ]; then
    DOCKER_HOST=$PDB_DOCKER_HOST docker "$@"
  else
    docker "$@"
  fi
}

supctl() {
  if [ -n "$PDB_SUPERVISORCTL_CONFIG" ]; then
    supervisorctl -c "$PDB_SUPERVISORCTL_CONFIG" "$@"
  else
    supervisorctl "$@"
  fi
}

# svc_pid: (process mode) prints the pid if our service process is alive.
svc_pid() {
  pdb_pf=$(svc_pidfile)
  [ -f "$pdb_pf" ] || return 1
  pdb_pid=$(cat -- "$pdb_pf" 2>/dev/null || true)
  case $pdb_pid in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pdb_pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must run a binary of this install.
  if [ -r "/proc/$pdb_pid/cmdline" ]; then
    tr '\000' '\n' <"/proc/$pdb_pid/cmdline" | grep -qF -- "$PDB_INSTALL_DIR/" || return 1
  fi
  printf '%s\n' "$pdb_pid"
}

supervisor_state() {
  supctl status "$PDB_SERVICE_NAME" 2>/dev/null | awk 'NR==1 { print $2 }' || true
}

svc_is_running() {
  case $PDB_SERVICE_MANAGER in
    systemd) systemctl is-active --quiet "$PDB_SERVICE_NAME.service" ;;
    supervisor)
      case $(supervisor_state) in
        RUNNING | STARTING) return 0 ;;
        *) return 1 ;;
      esac
      ;;
    process) svc_pid >/dev/null ;;
    docker) [ "$(dkr inspect -f '{{.State.Running}}' "$PDB_SERVICE_NAME" 2>/dev/null)" = true ] ;;
    *) fail 2 "unknown service manager '$PDB_SERVICE_MANAGER'" ;;
  esac
}

svc_where_logs() {
  case $PDB_SERVICE_MANAGER in
    systemd) printf 'journalctl -u %s.service' "$PDB_SERVICE_NAME" ;;
    docker) printf 'docker logs %s' "$PDB_SERVICE_NAME" ;;
    *) svc_logfile ;;
  esac
}

svc_tail_logs() {
  log "last log lines ($(svc_where_logs)):"
  case $PDB_SERVICE_MANAGER in
    systemd) journalctl -u "$PDB_SERVICE_NAME.service" -n 30 --no-pager 2>/dev/null | sed 's/^/    /' >&2 || true ;;
    docker) dkr logs --tail 30 "$PDB_SERVICE_NAME" 2>&1 | sed 's/^/    /' >&2 || true ;;
    *) tail -n 30 -- "$(svc_logfile)" 2>/dev/null | sed 's/^/    /' >&2 || true ;;
  esac
}

# svc_stop: stops the service and waits for it to exit (clean SIGTERM).
svc_stop() {
  case $PDB_SERVICE_MANAGER in
    systemd) systemctl stop "$PDB_SERVICE_NAME.service" ;;
    supervisor)
      if svc_is_running; then
        supctl stop "$PDB_SERVICE_NAME" >&2
      fi
      ;;
    process)
      if pdb_pid=$(svc_pid); then
        kill -TERM "$pdb_pid"
        pdb_waited=0
        while kill -0 "$pdb_pid" 2>/dev/null; do
          if [ "$pdb_waited" -ge $((PDB_STOP_TIMEOUT * 10)) ]; then
            log "WARNING: pid $pdb_pid did not exit within ${PDB_STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
            kill -KILL "$pdb_pid" 2>/dev/null || true
            sleep 1
            break
          fi
          sleep 0.1
          pdb_waited=$((pdb_waited + 1))
        done
      fi
      rm -f -- "$(svc_pidfile)"
      ;;
    docker)
      if svc_is_running; then
        dkr stop -t "$PDB_STOP_TIMEOUT" "$PDB_SERVICE_NAME" >/dev/null
      fi
      ;;
  esac
  if svc_is_running; then
    return 1
  fi
}

# svc_launch_process: (process mode) starts the launcher fully detached: new
# session, stdin from /dev/null, stdout/stderr to the log file, and without
# the stdin credentials in its environment (they were never exported).
svc_launch_process() {
  mkdir -p -- "$PDB_INSTALL_DIR/run" "$PDB_INSTALL_DIR/logs"
  rm -f -- "$(svc_pidfile)"
  setsid "$(svc_launcher)" </dev/null >>"$(svc_logfile)" 2>&1 &
  pdb_waited=0
  while [ ! -s "$(svc_pidfile)" ]; do
    if [ "$pdb_waited" -ge 50 ]; then
      log "launcher did not write $(svc_pidfile) within 5s"
      return 1
    fi
    sleep 0.1
    pdb_waited=$((pdb_waited + 1))
  done
}

# svc_start: (re)starts the service on whatever "current" points to.
# systemd_restart: restarts the unit with a fresh start budget. A release that crash-looped under
# Restart=on-failure used up the unit's start limit (StartLimitBurst starts in
# StartLimitIntervalSec): without reset-failed, systemd may refuse the start of the release
# that replaces it, or any restart of it soon after, and leave the unit failed.
systemd_restart() {
  systemctl reset-failed "$PDB_SERVICE_NAME.service" 2>/dev/null || true
  systemctl restart "$PDB_SERVICE_NAME.service"
}
svc_start() {
  own_service_files
  case $PDB_SERVICE_MANAGER in
    systemd) systemd_restart ;;
    supervisor) supctl restart "$PDB_SERVICE_NAME" >&2 ;;
    process)
      svc_stop
      svc_launch_process
      ;;
    docker) dkr start "$PDB_SERVICE_NAME" >/dev/null ;;
  esac
}

# listener_pid <port>: the pid of the process listening on TCP <port> (any
# address), from /proc/net/tcp{,6} and the socket inodes in /proc/*/fd.
listener_pid() {
  pdb_hexport=$(printf '%04X' "$1")
  pdb_inodes=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p=":$pdb_hexport" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }')
  [ -n "$pdb_inodes" ] || return 1
  # One ls over every process's fds (ls -l shows each link's target), not a
  # readlink per fd: a busy host has thousands, and this runs on every poll.
  # shellcheck disable=SC2012
  pdb_pid=$(ls -l /proc/[0-9]*/fd 2>/dev/null | awk -v inodes="$(printf '%s' "$pdb_inodes" | tr '\n' ' ')" '
    BEGIN { n = split(inodes, list, " "); for (i = 1; i <= n; i++) want["socket:[" list[i] "]"] = 1 }
    /^\/proc\/[0-9]+\/fd:$/ { split($0, parts, "/"); pid = parts[3]; next }
    $NF in want { print pid; exit }')
  [ -n "$pdb_pid" ] || return 1
  printf '%s\n' "$pdb_pid"
}

# binary_proof <version>: proves, for a release without /readyz (0.1.x), that
# the process listening on the service port runs exactly
# releases/<version>/progressdb (same sha256). Sets PDB_PROOF, or
# PDB_LAST_RESPONSE to what answered instead.
binary_proof() {
  if [ "$PDB_SERVICE_MANAGER" = docker ]; then
    # The listener is the container runtime's port proxy: the container's own label says what it runs.
    pdb_label=$(current_version)
    if [ "$pdb_label" = "$1" ] && svc_is_running; then
      PDB_PROOF="container $PDB_SERVICE_NAME, labelled progressdb.version=$1, is running and answers /healthz"
      return 0
    fi
    PDB_LAST_RESPONSE="container $PDB_SERVICE_NAME runs version '${pdb_label}', not $1"
    return 1
  fi
  pdb_port=${PDB_LISTEN_ADDR##*:}
  if ! pdb_lpid=$(listener_pid "$pdb_port"); then
    PDB_LAST_RESPONSE="nothing listens on port $pdb_port"
    return 1
  fi
  pdb_want_sha=$(sha256_of "$PDB_INSTALL_DIR/releases/$1/progressdb" 2>/dev/null || true)
  # The same bytes are not enough: a stale copy of the release elsewhere (another
  # install, another data dir) must not pass for this one. The path must be ours.
  pdb_want_exe="$(cd -- "$PDB_INSTALL_DIR/releases/$1" 2>/dev/null && pwd -P)/progressdb"
  pdb_exe=$(readlink -- "/proc/$pdb_lpid/exe" 2>/dev/null || echo '?')
  pdb_got_sha=$(sha256sum <"/proc/$pdb_lpid/exe" 2>/dev/null | cut -d' ' -f1 || true)
  if [ -n "$pdb_want_sha" ] && [ "$pdb_got_sha" = "$pdb_want_sha" ] && [ "$pdb_exe" = "$pdb_want_exe" ]; then
    PDB_PROOF="pid $pdb_lpid listening on port $pdb_port runs $pdb_exe (sha256 $pdb_got_sha, equal to releases/$1/progressdb from the verified archive)"
    return 0
  fi
  PDB_LAST_RESPONSE="pid $pdb_lpid listening on port $pdb_port runs $pdb_exe (sha256 ${pdb_got_sha:-unreadable}), not releases/$1/progressdb (sha256 ${pdb_want_sha:-missing})"
  return 1
}

# wait_ready <version> <seconds>: waits until <version> is proved to answer.
# A release with /readyz (0.2.x) must report the version there (a leading "v"
# ignored); one without it (0.1.x: 401/404) must answer /healthz and be the
# binary of releases/<version> (binary_proof). Sets PDB_PROOF on success and
# PDB_LAST_RESPONSE to the last thing seen. Without a health URL it only checks
# that the service is running.
# shellcheck disable=SC2034 # PDB_PROOF is read by the scripts that inline this file
wait_ready() {
  pdb_want=${1#v}
  PDB_PROOF=''
  if [ -z "${PDB_HEALTH_URL:-}" ] || [ "$pdb_want" = unknown ]; then
    sleep 1
    PDB_LAST_RESPONSE='(not checked: no health URL or unknown version)'
    svc_is_running
    return
  fi
  pdb_deadline=$(($(date +%s) + $2))
  PDB_LAST_RESPONSE='(no response yet)'
  pdb_not_running=0
  while :; do
    pdb_ready=$(http_get "$PDB_HEALTH_URL/readyz")
    pdb_compact=$(printf '%s' "$pdb_ready" | tr -d ' \t')
    case $pdb_compact in
      200*'"version":"'*)
        pdb_seen=$(printf '%s' "$pdb_compact" | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')
        PDB_LAST_RESPONSE="GET /readyz: $pdb_ready"
        case $pdb_compact in
          *'"status":"ok"'*)
            if [ "${pdb_seen#v}" = "$pdb_want" ]; then
              PDB_PROOF="/readyz reports \"$pdb_seen\""
              return 0
            fi
            ;;
        esac
        ;;
      401* | 404*)
        pdb_health=$(http_get "$PDB_HEALTH_URL/healthz")
        case $(printf '%s' "$pdb_health" | tr -d ' \t') in
          200*'"status":"ok"'*) binary_proof "$pdb_want" && return 0 ;;
          *) PDB_LAST_RESPONSE="GET /healthz: $pdb_health" ;;
        esac
        ;;
      *) PDB_LAST_RESPONSE="GET /readyz: $pdb_ready" ;;
    esac
    # Fail fast when the process is clearly gone (not just starting).
    if svc_is_running; then
      pdb_not_running=0
    else
      pdb_not_running=$((pdb_not_running + 1))
      if [ "$pdb_not_running" -ge 6 ]; then
        PDB_LAST_RESPONSE="$PDB_LAST_RESPONSE (the service is not running)"
        return 1
      fi
    fi
    if [ "$(date +%s)" -ge "$pdb_deadline" ]; then
      return 1
    fi
    sleep 0.5
  done
}

# ---- backups: what goes in, the codec, the upload ------------------------------
# A backup is a tar of the data dir (+ the separate v0.1.x KMS dir), members
# named by their physical paths without the leading "/", and
# progressdb-backup.json at the root; compressed with zstd (multithreaded) when
# the host has it, else gzip. Never in it: a service env file, a config file in
# the data dir (container mode keeps the keys there), 0.2.x crash dumps (they
# print the process environment).

# backup_members: sets PDB_DB_ABS and PDB_KMS_ABS ("" when absent or inside the data dir).
backup_members() {
  PDB_DB_ABS=$(cd -- "$PDB_DB_PATH" && pwd -P)
  PDB_KMS_ABS=''
  if [ -n "${PDB_KMS_DATA_DIR:-}" ] && [ -d "$PDB_KMS_DATA_DIR" ]; then
    PDB_KMS_ABS=$(cd -- "$PDB_KMS_DATA_DIR" && pwd -P)
    case "$PDB_KMS_ABS/" in "$PDB_DB_ABS"/*) PDB_KMS_ABS='' ;; esac
  fi
}

# backup_codec: "zst" (zstd -T0) when the host has zstd, else "gz".
backup_codec() {
  if command -v zstd >/dev/null 2>&1; then echo zst; else echo gz; fi
}

# compress <codec>: stdin to stdout.
compress() {
  case $1 in
    zst) zstd -q -T0 -3 -c ;;
    *) gzip -c "-${PDB_GZIP_LEVEL:-6}" ;;
  esac
}

# archive_codec <file>: "zst" or "gz" from the file's magic bytes ("" for neither).
archive_codec() {
  case $(od -An -tx1 -N4 -- "$1" 2>/dev/null | tr -d ' \n') in
    28b52ffd) echo zst ;;
    1f8b*) echo gz ;;
  esac
}

# backup_manifest <file> <at> <from>: the archive's progressdb-backup.json (information only: a restore takes no path from it).
backup_manifest() {
  printf '{"format":1,"createdAt":%s,"host":%s,"fromVersion":%s,"toVersion":%s,"dbPath":%s,"kmsDataDir":%s}\n' \
    "$(json_str "$2")" "$(json_str "$(hostname 2>/dev/null || echo unknown)")" "$(json_str "$3")" \
    "$(json_str "$PDB_VERSION")" "$(json_str "$PDB_DB_ABS")" "$(json_str "$PDB_KMS_ABS")" >"$1"
}

# data_kb: the size of what a backup holds, in KB.
data_kb() {
  du -skL -- "$PDB_DB_ABS" ${PDB_KMS_ABS:+"$PDB_KMS_ABS"} 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}

# aws_exec <s3|s3api> <args...>: like aws_s3, but replaces the calling (sub)shell, so
# that `( aws_exec … ) &` leaves $! the aws process itself. Credentials go into its
# environment only (this runs in a subshell of its own).
aws_exec() {
  pdb_svc=$1
  shift
  if [ -n "$PDB_SECRET_AWS_ACCESS_KEY_ID" ]; then
    AWS_ACCESS_KEY_ID=$PDB_SECRET_AWS_ACCESS_KEY_ID
    AWS_SECRET_ACCESS_KEY=$PDB_SECRET_AWS_SECRET_ACCESS_KEY
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  fi
  if [ -n "$PDB_SECRET_AWS_SESSION_TOKEN" ]; then
    AWS_SESSION_TOKEN=$PDB_SECRET_AWS_SESSION_TOKEN
    export AWS_SESSION_TOKEN
  fi
  if [ -n "$PDB_S3_ENDPOINT" ]; then
    exec "$PDB_AWS" "$pdb_svc" --region "$PDB_S3_REGION" --endpoint-url "$PDB_S3_ENDPOINT" "$@"
  fi
  exec "$PDB_AWS" "$pdb_svc" --region "$PDB_S3_REGION" "$@"
}

# upload_backup <key> <work dir> <manifest dir> <root> <member...>: streams the tar of
# progressdb-backup.json (in <manifest dir>) and the members (relative to <root>)
# through the codec straight into s3://$PDB_S3_BUCKET/<key> (no copy on disk), with
# its sha256 and size measured in the stream. The upload reads a fifo that this
# shell holds open: it sees the end of the stream, and completes the object, only
# once every stage has succeeded; a failed stage kills it first, so no truncated
# object is ever completed. Then verifies the object's size (head-object) and
# writes the "<key>.sha256" sidecar, in parallel. Sets PDB_UP_SHA, PDB_UP_SIZE;
# returns non-zero with PDB_UP_ERROR set.
# The caller's EXIT trap must run upload_abort (a lost session kills the upload too).
PDB_UP_PID=''
# shellcheck disable=SC2034 # PDB_UP_ERROR, PDB_UP_SHA and PDB_UP_SIZE are read by the scripts that inline this file
upload_backup() {
  ub_key=$1
  ub_work=$2
  ub_mdir=$3
  ub_root=$4
  shift 4
  PDB_UP_ERROR=''
  ub_codec=${ub_key##*.}
  ub_kb=$(du -skL -- "$ub_root/$1" ${2:+"$ub_root/$2"} 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
  ub_meta=$(printf '{"from-version":%s,"to-version":%s,"stack":%s}' "$(json_str "$PDB_UP_FROM")" "$(json_str "$PDB_VERSION")" "$(json_str "$PDB_STACK")")
  rm -f -- "$ub_work/up.fifo" "$ub_work"/*.rc
  mkfifo "$ub_work/up.fifo"
  digest_start "$ub_work"
  # (--expected-size: an upper bound, which aws s3 cp - needs above ~50 GB.)
  (aws_exec s3 cp --only-show-errors --expected-size $((ub_kb * 1024 + ub_kb * 11 + 1048576)) \
    --content-type "application/$([ "$ub_codec" = zst ] && echo zstd || echo gzip)" --metadata "$ub_meta" \
    - "s3://$PDB_S3_BUCKET/$ub_key") <"$ub_work/up.fifo" 2>"$ub_work/upload.err" &
  PDB_UP_PID=$!
  exec 9>"$ub_work/up.fifo"
  {
    rc=0
    tar -cf - --exclude=progressdb.env --exclude="${PDB_DB_ABS#/}/config.yaml" --exclude='*/state/crash' --exclude='*/state/abort' \
      -C "$ub_mdir" progressdb-backup.json -C "$ub_root" -- "$@" || rc=$?
    echo "$rc" >"$ub_work/tar.rc"
  } | {
    rc=0
    compress "$ub_codec" || rc=$?
    echo "$rc" >"$ub_work/compress.rc"
  } | {
    rc=0
    digest_tee "$ub_work" || rc=$?
    echo "$rc" >"$ub_work/tee.rc"
  } >&9
  digest_result "$ub_work"
  for ub_stage in tee tar compress; do
    ub_rc=$(cat "$ub_work/$ub_stage.rc" 2>/dev/null || echo missing)
    [ "$ub_rc" = 0 ] || break
  done
  if [ "$ub_rc" != 0 ] && [ "$ub_stage" != tee ]; then
    upload_abort
    PDB_UP_ERROR="backup stream failed at $ub_stage (exit $ub_rc): the upload to s3://$PDB_S3_BUCKET/$ub_key was abandoned before it completed"
    return 1
  fi
  # (tee fails when its reader, the upload, has gone.)
  exec 9>&-
  ub_rc=0
  wait "$PDB_UP_PID" || ub_rc=$?
  PDB_UP_PID=''
  if [ "$ub_rc" != 0 ] || [ "$(cat "$ub_work/tee.rc")" != 0 ]; then
    PDB_UP_ERROR="backup stream failed at upload (exit $ub_rc) while writing s3://$PDB_S3_BUCKET/$ub_key ($(s3_where)): $(tr '\n' ' ' <"$ub_work/upload.err")"
    return 1
  fi
  PDB_UP_SHA=$PDB_DIGEST_SHA
  PDB_UP_SIZE=$PDB_DIGEST_SIZE
  case $PDB_UP_SHA in *[!0-9a-f]* | '')
    PDB_UP_ERROR="could not compute the sha256 of the stream"
    return 1 ;;
  esac
  # Verify what S3 holds, and publish the sha256 beside it (each aws start costs ~1 s: in parallel).
  printf '%s  %s\n' "$PDB_UP_SHA" "${ub_key##*/}" >"$ub_work/sidecar"
  aws_s3 s3 cp --only-show-errors --content-type text/plain "$ub_work/sidecar" "s3://$PDB_S3_BUCKET/$ub_key.sha256" >"$ub_work/sidecar.err" 2>&1 &
  ub_side=$!
  ub_rc=0
  ub_head=$(aws_s3 s3api head-object --bucket "$PDB_S3_BUCKET" --key "$ub_key" --query ContentLength --output text 2>&1) || ub_rc=$?
  ub_side_rc=0
  wait "$ub_side" || ub_side_rc=$?
  if [ "$ub_rc" != 0 ]; then
    PDB_UP_ERROR="head-object s3://$PDB_S3_BUCKET/$ub_key failed: $(printf '%s' "$ub_head" | tr '\n' ' ')"
    return 1
  fi
  if [ "$ub_head" != "$PDB_UP_SIZE" ]; then
    PDB_UP_ERROR="verification failed: s3://$PDB_S3_BUCKET/$ub_key is $ub_head bytes in S3, $PDB_UP_SIZE were streamed"
    return 1
  fi
  if [ "$ub_side_rc" != 0 ]; then
    PDB_UP_ERROR="could not write the sidecar s3://$PDB_S3_BUCKET/$ub_key.sha256: $(tr '\n' ' ' <"$ub_work/sidecar.err")"
    return 1
  fi
}

# upload_abort: kills an upload in flight before it sees the end of its stream
# (the object is never completed; the multipart parts expire with the bucket's
# abort-incomplete-uploads rule).
upload_abort() {
  [ -n "$PDB_UP_PID" ] || return 0
  kill -TERM "$PDB_UP_PID" 2>/dev/null || true
  wait "$PDB_UP_PID" 2>/dev/null || true
  PDB_UP_PID=''
  exec 9>&-
}

# drop_backup <key>: removes a backup object that failed its verification (tagged
# first, so that in a versioned bucket its noncurrent version expires too).
drop_backup() {
  aws_s3 s3api put-object-tagging --bucket "$PDB_S3_BUCKET" --key "$1" --tagging 'TagSet=[{Key=progressdb-backup,Value=superseded}]' >/dev/null 2>&1 || true
  aws_s3 s3 rm --only-show-errors "s3://$PDB_S3_BUCKET/$1" >/dev/null 2>&1 || true
}

# ---- the warm snapshot ----------------------------------------------------------
# The backup copies the data dirs to <dbPath>.backup-snapshot/tree/ while the
# service runs (rsync). The step that stops the service for the upgrade (the
# install, or the migration when the data format is crossed) copies what changed
# since (the cold delta, a fraction of a second whatever the data size) before it
# changes anything, so the snapshot is what the old version left; the offsite
# step uploads it once the service runs again, and removes it once the upload is
# verified. <installDir>/run/snapshot records its run key, and the name of an
# empty file beside it, run/snapshot.status-<status>, its status (a status change
# is a rename: it works on a full disk, where the stopping step may have failed):
#   copying    the warm copy is being made
#   pending    the warm copy is there; the cold delta is still to come
#   sealed     the cold delta is done; the service is still stopped
#   released   sealed, and the step that stopped the service has ended
#   abandoned  the upgrade ended before stopping the service (nothing to back up)

snapshot_dir() { printf '%s.backup-snapshot' "$PDB_DB_PATH"; }
snapshot_file() { printf '%s/run/snapshot' "$PDB_INSTALL_DIR"; }
snapshot_key() { cat -- "$(snapshot_file)" 2>/dev/null || true; }
snapshot_status() {
  for pdb_f in "$(snapshot_file)".status-*; do
    [ -e "$pdb_f" ] && printf '%s\n' "${pdb_f##*.status-}" && return 0
  done
  return 0
}

# snapshot_set <status> [<run key>]: a new run key starts a new record.
snapshot_set() {
  mkdir -p -- "$PDB_INSTALL_DIR/run"
  if [ -n "${2:-}" ]; then
    rm -f -- "$(snapshot_file)".status-*
    printf '%s\n' "$2" >"$(snapshot_file).tmp" && mv -f -- "$(snapshot_file).tmp" "$(snapshot_file)" || return 1
  fi
  pdb_old=$(snapshot_status)
  if [ -n "$pdb_old" ]; then
    [ "$pdb_old" = "$1" ] || mv -f -- "$(snapshot_file).status-$pdb_old" "$(snapshot_file).status-$1"
  else
    : >"$(snapshot_file).status-$1"
  fi
}

# snapshot_forget: the record goes (the snapshot was uploaded).
snapshot_forget() {
  rm -f -- "$(snapshot_file)" "$(snapshot_file)".status-*
}

# snapshot_copy: rsync of the data dirs into the snapshot (the secrets never go in).
# Times are compared to the nanosecond (a file rewritten within the same second
# at the same size is copied again).
snapshot_copy() {
  backup_members
  for sc_src in "$PDB_DB_ABS" ${PDB_KMS_ABS:+"$PDB_KMS_ABS"}; do
    sc_dst="$(snapshot_dir)/tree$sc_src"
    mkdir -p -- "$sc_dst"
    rsync -a --delete --numeric-ids --modify-window=-1 --exclude=progressdb.env --exclude=/config.yaml \
      --exclude='state/crash' --exclude='state/abort' -- "$sc_src/" "$sc_dst/" || return $?
  done
}

# snapshot_room: succeeds when rsync is there and the snapshot fits beside the
# data dir with PDB_MIN_FREE_MB left over; otherwise sets PDB_SNAPSHOT_WHY.
# shellcheck disable=SC2034 # PDB_SNAPSHOT_WHY is read by the scripts that inline this file
snapshot_room() {
  if ! command -v rsync >/dev/null 2>&1; then
    PDB_SNAPSHOT_WHY="rsync is not installed on the host"
    return 1
  fi
  backup_members
  sr_need=$(($(data_kb) / 1024))
  if [ -d "$(snapshot_dir)" ]; then
    sr_need=$((sr_need - $(du -sk -- "$(snapshot_dir)" | awk '{ print int($1 / 1024) }')))
  fi
  sr_free=$(free_mb "$(dirname -- "$PDB_DB_PATH")")
  if [ "$sr_free" -lt $((sr_need + ${PDB_MIN_FREE_MB:-0})) ]; then
    PDB_SNAPSHOT_WHY="the snapshot needs ${sr_need} MB beside $PDB_DB_PATH and ${PDB_MIN_FREE_MB:-0} MB must stay free (deployment.binary.minFreeMb), but ${sr_free} MB are free"
    return 1
  fi
}

# snapshot_seal: run by the step that stopped the service, before it changes
# anything: the cold delta of a pending snapshot. Fails if the copy fails.
snapshot_seal() {
  case $(snapshot_status) in pending | abandoned) ;; *) return 0 ;; esac
  [ -d "$(snapshot_dir)/tree" ] || return 1
  ss_t0=$(date +%s)
  snapshot_copy || return 1
  snapshot_set sealed
  log "backup snapshot completed with the service stopped (cold delta in $(($(date +%s) - ss_t0)) s): $(snapshot_dir)"
}

# snapshot_release: on the exit of a step that may have stopped the service:
# a sealed snapshot may now be uploaded; a pending one was never sealed.
snapshot_release() {
  case $(snapshot_status) in
    sealed) snapshot_set released ;;
    pending) snapshot_set abandoned ;;
  esac
}

# snapshot_claim: run first by a step that may stop the service: a snapshot that
# an earlier run of this upgrade left abandoned is pending again (this run completes it).
snapshot_claim() {
  [ "$(snapshot_status)" != abandoned ] || snapshot_set pending
}

# snapshot_waiting: a snapshot still needs its cold delta.
snapshot_waiting() {
  case $(snapshot_status) in pending | abandoned) [ -d "$(snapshot_dir)/tree" ] ;; *) return 1 ;; esac
}
