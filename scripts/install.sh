#!/bin/sh
# Install Skiff and run it as a service.
#
#   sh install.sh                                      # a server
#   SKIFF_URL=https://SERVER:6443 SKIFF_TOKEN=T sh install.sh   # an agent
#   curl -sfL URL/install.sh | sh -s - --tls-san pi.local       # extra flags
#
# Variables (all optional):
#   SKIFF_URL, SKIFF_TOKEN       join this server as an agent (set both)
#   INSTALL_SKIFF_EXEC           command and flags for the service, e.g.
#                                "server --disable servicelb" or "--node-label a=b";
#                                words after `sh -s -` are appended to it
#   INSTALL_SKIFF_VERSION        release to download (default: the latest)
#   INSTALL_SKIFF_DOWNLOAD_URL   where skiff-linux-<arch>(.xz) and sha256sums are
#                                (default: the GitHub release of that version)
#   INSTALL_SKIFF_BINARY         install this local file instead of downloading
#   INSTALL_SKIFF_SHA256         expected sha256 of INSTALL_SKIFF_BINARY (else a
#                                sha256sums file next to it is used if present)
#   INSTALL_SKIFF_BIN_DIR        default /usr/local/bin
#   INSTALL_SKIFF_CONFIG_DIR     env file location, default /etc/skiff
#   INSTALL_SKIFF_SYSTEMD_DIR    default /etc/systemd/system
#   INSTALL_SKIFF_OPENRC_DIR     default /etc/init.d
#   INSTALL_SKIFF_INIT           systemd or openrc (default: detected)
#   INSTALL_SKIFF_CMDLINE        kernel cmdline file to enable the memory cgroup
#                                in (default: detected on a Raspberry Pi)
#   INSTALL_SKIFF_SKIP_ENABLE    true: neither enable nor start the service
#   INSTALL_SKIFF_SKIP_START     true: enable but do not start it
#
# Every check that can fail on bad input runs before anything is written, so
# a failed install leaves the host as it was. Running it again is safe: files
# are rewritten whole (never appended to) and replaced atomically.

set -eu

GITHUB_RELEASES=https://github.com/skiff-dev/skiff/releases

# --- messages ---------------------------------------------------------------

info() { printf '[skiff] %s\n' "$*"; }
warn() { printf '[skiff] warning: %s\n' "$*" >&2; }
# fatal prints exactly one line: callers and tests rely on it.
fatal() {
	printf '[skiff] error: %s\n' "$*" >&2
	exit 1
}

# is_plain says whether $1 needs no quoting in a shell or a unit file.
is_plain() {
	case "$1" in
	'' | *[!A-Za-z0-9_./:=,@+-]*) return 1 ;;
	*) return 0 ;;
	esac
}

# sh_quote prints $1 as one shell word, single-quoted unless plain.
sh_quote() {
	if is_plain "$1"; then
		printf '%s' "$1"
	else
		printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
	fi
}

# systemd_quote prints $1 as one word of a unit's ExecStart=, double-quoted
# unless plain: backslash and quote escaped, % and $ doubled so that systemd
# expands nothing.
systemd_quote() {
	if is_plain "$1"; then
		printf '%s' "$1"
	else
		printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/%/%%/g' -e 's/\$/$$/g')"
	fi
}

is_true() {
	case "${1:-}" in
	true | 1 | yes) return 0 ;;
	*) return 1 ;;
	esac
}

# --- checks (nothing is written before they all pass) -----------------------

check_root() {
	[ "$(id -u)" = 0 ] || fatal "must run as root: try 'sudo sh install.sh'"
}

# setup_env decides server or agent, the service name, its arguments and
# every path, from the environment and the script's arguments.
setup_env() {
	if [ -n "${SKIFF_URL:-}" ] && [ -z "${SKIFF_TOKEN:-}" ]; then
		fatal "SKIFF_URL is set but SKIFF_TOKEN is not: set both to install an agent, or neither for a server"
	fi
	if [ -z "${SKIFF_URL:-}" ] && [ -n "${SKIFF_TOKEN:-}" ]; then
		fatal "SKIFF_TOKEN is set but SKIFF_URL is not: set both to install an agent, or neither for a server"
	fi
	for v in "${SKIFF_URL:-}" "${SKIFF_TOKEN:-}"; do
		case "$v" in
		*"'"* | *'
'*) fatal "SKIFF_URL and SKIFF_TOKEN may not contain quotes or newlines" ;;
		esac
	done

	BIN_DIR=${INSTALL_SKIFF_BIN_DIR:-/usr/local/bin}
	BIN=$BIN_DIR/skiff
	CONFIG_DIR=${INSTALL_SKIFF_CONFIG_DIR:-/etc/skiff}
	SYSTEMD_DIR=${INSTALL_SKIFF_SYSTEMD_DIR:-/etc/systemd/system}
	OPENRC_DIR=${INSTALL_SKIFF_OPENRC_DIR:-/etc/init.d}

	# The command comes first in INSTALL_SKIFF_EXEC or the arguments if it
	# is given at all; else an agent when SKIFF_URL is set, a server if not.
	# INSTALL_SKIFF_EXEC is split on blanks (no globbing); arguments to the
	# script keep their own word boundaries.
	set -f
	# shellcheck disable=SC2086 # splitting is the point
	set -- ${INSTALL_SKIFF_EXEC:-} "$@"
	set +f
	case "${1:-}" in
	server | agent)
		CMD=$1
		shift
		;;
	-* | '')
		if [ -n "${SKIFF_URL:-}" ]; then CMD=agent; else CMD=server; fi
		;;
	*) fatal "unknown command '$1' in INSTALL_SKIFF_EXEC or arguments: use server or agent" ;;
	esac

	# Keep the flags as shell-quoted words, and find --data-dir among them:
	# the killall and uninstall scripts must know where the state is.
	ARGS=
	DATA_DIR=/var/lib/skiff
	next_is_data_dir=
	for a in "$@"; do
		case "$a" in
		*'
'*) fatal "flags may not contain newlines" ;;
		esac
		ARGS="$ARGS $(sh_quote "$a")"
		if [ -n "$next_is_data_dir" ]; then
			DATA_DIR=$a
			next_is_data_dir=
			continue
		fi
		case "$a" in
		--data-dir=* | -d=*) DATA_DIR=${a#*=} ;;
		--data-dir | -d) next_is_data_dir=1 ;;
		esac
	done
	case "$DATA_DIR" in
	/*) ;;
	*) DATA_DIR=/$DATA_DIR ;; # the service runs in /
	esac
	DATA_DIR=${DATA_DIR%/}
	# skiff's runtime dir: /run/skiff for the default data dir, else
	# /run/skiff-<first 8 hex digits of sha256(data dir)> (see host.For in internal/host).
	# The kubelet's root: /var/lib/kubelet for the default data dir, else
	# inside the data dir (see host.For in internal/host).
	if [ "$DATA_DIR" = /var/lib/skiff ]; then
		RUN_DIR=/run/skiff
		KUBELET_DIR=/var/lib/kubelet
	else
		RUN_DIR=/run/skiff-$(printf '%s' "$DATA_DIR" | sha256_stdin | cut -c1-8)
		KUBELET_DIR=$DATA_DIR/kubelet
	fi

	if [ "$CMD" = agent ]; then SERVICE=skiff-agent; else SERVICE=skiff; fi
	ENV_FILE=$CONFIG_DIR/$SERVICE.env
	UNINSTALL=$BIN_DIR/$SERVICE-uninstall.sh
	KILLALL=$BIN_DIR/skiff-killall.sh
}

# setup_arch maps the machine to a release architecture before anything is
# downloaded or written.
setup_arch() {
	m=$(uname -m)
	case "$m" in
	x86_64 | amd64) ARCH=amd64 ;;
	aarch64 | arm64) ARCH=arm64 ;;
	armv7l | armv7 | armv8l) ARCH=arm ;;
	*) fatal "unsupported architecture $m: skiff is built for amd64, arm64 and armv7" ;;
	esac
}

setup_init() {
	INIT=${INSTALL_SKIFF_INIT:-}
	if [ -z "$INIT" ]; then
		if [ -d /run/systemd/system ]; then
			INIT=systemd
		elif [ -x /sbin/openrc-run ] || command -v openrc-run >/dev/null 2>&1; then
			INIT=openrc
		else
			fatal "found neither systemd nor OpenRC to run skiff: set INSTALL_SKIFF_INIT=systemd or openrc to write a service anyway"
		fi
	fi
	case "$INIT" in
	systemd) SERVICE_FILE=$SYSTEMD_DIR/$SERVICE.service ;;
	openrc) SERVICE_FILE=$OPENRC_DIR/$SERVICE ;;
	*) fatal "INSTALL_SKIFF_INIT is '$INIT': use systemd or openrc" ;;
	esac
}

# --- checksums and downloads ------------------------------------------------

sha256_stdin() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 | cut -d' ' -f1
	else
		openssl dgst -sha256 -r | cut -d' ' -f1
	fi
}

sha256_file() { sha256_stdin <"$1"; }

# sum_for prints the checksum that sha256sums file $1 lists for file name $2
# (either "sum  name" or "sum *name").
sum_for() {
	awk -v n="$2" '{ f = $2; sub(/^\*/, "", f); if (f == n) { print $1; exit } }' "$1"
}

# xz_works says whether an xz that can unpack the release is installed.
xz_works() {
	xz --version >/dev/null 2>&1
}

download() { # url dest
	if command -v curl >/dev/null 2>&1; then
		curl -fsL -o "$2" "$1"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O "$2" "$1"
	else
		fatal "neither curl nor wget is installed: install one, or use INSTALL_SKIFF_BINARY"
	fi
}

# get_binary sets SRC to a verified binary: the local file, or one
# downloaded into a temporary directory; and SUM to its sha256.
get_binary() {
	if [ -n "${INSTALL_SKIFF_BINARY:-}" ]; then
		SRC=$INSTALL_SKIFF_BINARY
		[ -f "$SRC" ] || fatal "INSTALL_SKIFF_BINARY $SRC is not a file"
		name=$(basename "$SRC")
		expected=${INSTALL_SKIFF_SHA256:-}
		if [ -z "$expected" ]; then
			# make release writes sha256sums next to the binaries.
			for f in "$(dirname "$SRC")/sha256sums" "$(dirname "$SRC")/sha256sums.txt"; do
				if [ -f "$f" ]; then
					expected=$(sum_for "$f" "$name")
					[ -n "$expected" ] && break
				fi
			done
		fi
		if [ -z "$expected" ]; then
			warn "no checksum for $SRC (set INSTALL_SKIFF_SHA256 or put sha256sums next to it): installing it unverified"
		fi
	else
		if [ -n "${INSTALL_SKIFF_DOWNLOAD_URL:-}" ]; then
			base=${INSTALL_SKIFF_DOWNLOAD_URL%/}
		elif [ -n "${INSTALL_SKIFF_VERSION:-}" ]; then
			base=$GITHUB_RELEASES/download/$INSTALL_SKIFF_VERSION
		else
			base=$GITHUB_RELEASES/latest/download
		fi
		name=skiff-linux-$ARCH
		TMP_DIR=$(mktemp -d)
		trap 'rm -rf "$TMP_DIR"' EXIT
		download "$base/sha256sums" "$TMP_DIR/sha256sums" ||
			fatal "could not download $base/sha256sums"
		expected=$(sum_for "$TMP_DIR/sha256sums" "$name")
		[ -n "$expected" ] || fatal "$base/sha256sums lists no $name"
		SRC=$TMP_DIR/$name
		# The release's xz file is a fifth of the binary's size. It is
		# checked against sha256sums before it is unpacked, and the binary
		# it holds is checked after.
		xz_sum=$(sum_for "$TMP_DIR/sha256sums" "$name.xz")
		if [ -n "$xz_sum" ] && xz_works; then
			info "downloading $base/$name.xz"
			download "$base/$name.xz" "$SRC.xz" || fatal "could not download $base/$name.xz"
			got=$(sha256_file "$SRC.xz")
			[ "$got" = "$xz_sum" ] ||
				fatal "checksum mismatch for $name.xz: expected $xz_sum, got $got; nothing installed"
			xz -dc "$SRC.xz" >"$SRC" 2>/dev/null ||
				fatal "could not unpack $name.xz (xz needs 256 MiB of free memory for it): free some memory and run the installer again"
			rm -f "$SRC.xz"
		else
			[ -z "$xz_sum" ] || warn "no working xz: downloading the uncompressed binary, about five times larger (install xz-utils to avoid that)"
			info "downloading $base/$name"
			download "$base/$name" "$SRC" || fatal "could not download $base/$name"
		fi
	fi
	SUM=$(sha256_file "$SRC")
	if [ -n "$expected" ] && [ "$SUM" != "$expected" ]; then
		fatal "checksum mismatch for $name: expected $expected, got $SUM; nothing installed"
	fi
}

# --- writing files ----------------------------------------------------------

# write_file copies stdin to $1 with mode $2 atomically: a temporary file in
# the same directory, then rename, so readers never see half a file.
write_file() {
	mkdir -p "$(dirname "$1")"
	tmp=$(mktemp "$(dirname "$1")/.$(basename "$1").XXXXXX")
	cat >"$tmp"
	chmod "$2" "$tmp"
	mv -f "$tmp" "$1"
}

install_binary() {
	if [ -f "$BIN" ] && [ "$(sha256_file "$BIN")" = "$SUM" ]; then
		info "$BIN is up to date"
	else
		# Copied next to its final place, tried, then renamed over the old
		# one: a running skiff keeps its file, and a binary for another
		# architecture, or a broken one, fails here rather than as a
		# service restarting every five seconds.
		mkdir -p "$BIN_DIR"
		tmp=$(mktemp "$BIN_DIR/.skiff.XXXXXX")
		cp "$SRC" "$tmp"
		chmod 755 "$tmp"
		if ! "$tmp" --version >/dev/null 2>&1; then
			rm -f "$tmp"
			fatal "$SRC does not run on this host (wrong architecture or a broken file?); nothing installed"
		fi
		mv -f "$tmp" "$BIN"
		info "installed $BIN"
	fi
	version=$("$BIN" --version 2>/dev/null | head -n 1) || true
	if [ -n "$version" ]; then info "$version"; fi
}

# install_links points kubectl, crictl and ctr at skiff, unless another
# program of that name is installed: that one stays and wins.
install_links() {
	for cmd in kubectl crictl ctr; do
		link=$BIN_DIR/$cmd
		if [ -L "$link" ] && [ "$(readlink "$link")" = "$BIN" ]; then
			continue
		fi
		if [ -e "$link" ] || [ -L "$link" ]; then
			info "$link exists and is not skiff: leaving it (use 'skiff $cmd')"
			continue
		fi
		other=$(command -v "$cmd" 2>/dev/null || true)
		if [ -n "$other" ]; then
			info "$cmd is already installed at $other: not linking it (use 'skiff $cmd')"
			continue
		fi
		ln -s "$BIN" "$link"
		info "linked $link to skiff"
	done
}

# install_runc installs the host's runc package when there is no runc:
# skiff runs containers with it.
install_runc() {
	command -v runc >/dev/null 2>&1 && return 0
	info "installing runc"
	if command -v apt-get >/dev/null 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc >/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc >/dev/null 2>&1; } ||
			warn "apt-get install runc failed: install runc before starting skiff"
	elif command -v apk >/dev/null 2>&1; then
		apk add -q runc >/dev/null 2>&1 || warn "apk add runc failed: install runc before starting skiff"
	else
		warn "no apt-get or apk here: install runc before starting skiff"
	fi
}

# enable_pi_cgroups turns the memory cgroup on where the Raspberry Pi kernel
# leaves it off; the kubelet cannot run without it. Takes effect at reboot.
enable_pi_cgroups() {
	cmdline=${INSTALL_SKIFF_CMDLINE:-}
	if [ -z "$cmdline" ]; then
		model=$(tr -d '\000' </proc/device-tree/model 2>/dev/null || true)
		case "$model" in
		*"Raspberry Pi"*) ;;
		*) return 0 ;;
		esac
		if [ -f /boot/firmware/cmdline.txt ]; then
			cmdline=/boot/firmware/cmdline.txt
		elif [ -f /boot/cmdline.txt ]; then
			cmdline=/boot/cmdline.txt
		else
			warn "Raspberry Pi without /boot/firmware/cmdline.txt or /boot/cmdline.txt: add 'cgroup_memory=1 cgroup_enable=memory' to the kernel command line"
			return 0
		fi
	fi
	[ -f "$cmdline" ] || fatal "kernel command line file $cmdline does not exist"
	add=
	for opt in cgroup_memory=1 cgroup_enable=memory; do
		case " $(head -n 1 "$cmdline") " in
		*" $opt "*) ;;
		*) add="$add $opt" ;;
		esac
	done
	[ -n "$add" ] || return 0
	# The file is one line; the options go at its end, on that line.
	sed "1s/[[:space:]]*\$/$add/" "$cmdline" | write_file "$cmdline" 644
	info "added$add to $cmdline"
	NEED_REBOOT=1
}

# write_env_file keeps the join settings out of the unit, readable by root
# only. Rewritten whole each time.
write_env_file() {
	# write_file's temporary file is 0600 from the start (mktemp).
	{
		echo "# Written by skiff's install.sh; read by the $SERVICE service."
		if [ -n "${SKIFF_URL:-}" ]; then
			echo "SKIFF_URL='$SKIFF_URL'"
			echo "SKIFF_TOKEN='$SKIFF_TOKEN'"
		fi
	} | write_file "$ENV_FILE" 600
	info "wrote $ENV_FILE"
}

write_systemd_unit() {
	{
		cat <<EOF
# Written by skiff's install.sh; running it again rewrites this file.
[Unit]
Description=Skiff lightweight Kubernetes ($CMD)
Documentation=https://github.com/skiff-dev/skiff
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
# skiff does not notify systemd when it is ready.
Type=exec
EnvironmentFile=-/etc/default/$SERVICE
EnvironmentFile=-$ENV_FILE
# Only skiff itself is stopped: containerd's shims and the pods keep running
# across restarts and upgrades (skiff-killall.sh stops everything).
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
# The pod bridge needs br_netfilter; containerd's snapshotter wants overlay.
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
EOF
		printf 'ExecStart=%s %s' "$(systemd_quote "$BIN")" "$CMD"
		set -f
		eval "set -- $ARGS"
		set +f
		for a in "$@"; do
			printf ' \\\n\t%s' "$(systemd_quote "$a")"
		done
		printf '\n'
	} | write_file "$SERVICE_FILE" 644
	info "wrote $SERVICE_FILE"
}

write_openrc_script() {
	# command_args is eval'ed by openrc-run: the shell-quoted words go
	# inside double quotes, with what is special there escaped.
	args=$(printf '%s' "$CMD$ARGS" | sed 's/[\\$`"]/\\&/g')
	{
		cat <<EOF
#!/sbin/openrc-run
# Written by skiff's install.sh; running it again rewrites this file.
# shellcheck shell=sh disable=SC2034,SC1090,SC1091 # openrc-run reads these

description="Skiff lightweight Kubernetes ($CMD)"
supervisor=supervise-daemon
command=$(sh_quote "$BIN")
command_args="$args"
pidfile="/run/\${RC_SVCNAME}.pid"
output_log="/var/log/\${RC_SVCNAME}.log"
error_log="/var/log/\${RC_SVCNAME}.log"
# Restart it whenever it exits, five seconds later, without limit.
respawn_delay=5
respawn_max=0
rc_ulimit="-n 1048576 -u unlimited -c unlimited"

# Join settings and extra variables, as the systemd unit reads them.
set -a
[ -f /etc/default/$SERVICE ] && . /etc/default/$SERVICE
[ -f $(sh_quote "$ENV_FILE") ] && . $(sh_quote "$ENV_FILE")
set +a

depend() {
	need net localmount
	after firewall network-online
	want cgroups
}

start_pre() {
	# The pod bridge needs br_netfilter; containerd's snapshotter wants overlay.
	modprobe -q br_netfilter 2>/dev/null || true
	modprobe -q overlay 2>/dev/null || true
}
EOF
	} | write_file "$SERVICE_FILE" 755
	info "wrote $SERVICE_FILE"
}

# script_header prints the settings the generated scripts share.
script_header() {
	cat <<EOF
#!/bin/sh
# Written by skiff's install.sh; running it again rewrites this file.
# shellcheck disable=SC2034 # not every script uses every setting
BIN_DIR=$(sh_quote "$BIN_DIR")
BIN=$(sh_quote "$BIN")
DATA_DIR=$(sh_quote "$DATA_DIR")
RUN_DIR=$(sh_quote "$RUN_DIR")
CONFIG_DIR=$(sh_quote "$CONFIG_DIR")
SYSTEMD_DIR=$(sh_quote "$SYSTEMD_DIR")
OPENRC_DIR=$(sh_quote "$OPENRC_DIR")
KUBELET_DIR=$(sh_quote "$KUBELET_DIR")
EOF
	cat <<'EOF'

info() { printf '[skiff] %s\n' "$*"; }
fatal() {
	printf '[skiff] error: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || fatal "must run as root: try 'sudo $0'"

# mounts_under prints the mount points at or under $1, deepest first.
# /proc/self/mounts writes blanks as \040: printf %b decodes them.
mounts_under() {
	while read -r _ mp _; do
		mp=$(printf '%b' "$mp")
		case "$mp" in
		"$1" | "$1"/*) printf '%s\n' "$mp" ;;
		esac
	done </proc/self/mounts | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

# unmount_under detaches every mount at or under $1, deepest first. Lazy:
# a busy mount leaves the tree now and goes when its last user does.
unmount_under() {
	mounts_under "$1" | while IFS= read -r mp; do
		umount -l "$mp" 2>/dev/null || umount -f "$mp" 2>/dev/null || true
	done
}
EOF
}

write_killall() {
	{
		script_header
		cat <<'EOF'

# skiff-killall.sh stops skiff and everything it started (containerd, shims,
# pods), and removes what it set up on the host at run time (mounts, pod
# network namespaces, interfaces, its nftables tables). Data stays: starting
# skiff again brings the node back.

# Stop the services first, so that they do not restart what we kill.
for svc in skiff skiff-agent; do
	if [ -f "$SYSTEMD_DIR/$svc.service" ] && command -v systemctl >/dev/null 2>&1; then
		systemctl stop "$svc.service" 2>/dev/null || true
	fi
	if [ -f "$OPENRC_DIR/$svc" ] && command -v rc-service >/dev/null 2>&1; then
		rc-service "$svc" stop 2>/dev/null || true
	fi
done

# The node: skiff, containerd, the shims and the pods, then their mounts,
# cgroups, pod network namespaces, the pod bridge, the overlay device and the
# nftables tables (Services, hostPorts, network policies). `skiff killall`
# knows where the node keeps each.
if [ -x "$BIN" ] && "$BIN" killall --data-dir "$DATA_DIR"; then
	info "stopped skiff and its pods"
else
	fatal "could not run '$BIN killall --data-dir $DATA_DIR': put the skiff binary back at $BIN and run this again, or reboot to clear what skiff left running"
fi
EOF
	} | write_file "$KILLALL" 755
	info "wrote $KILLALL"
}

write_uninstall() {
	{
		script_header
		cat <<EOF
SERVICE=$(sh_quote "$SERVICE")
INIT=$(sh_quote "$INIT")
SERVICE_FILE=$(sh_quote "$SERVICE_FILE")
KILLALL=$(sh_quote "$KILLALL")
EOF
		cat <<'EOF'

# Uninstall removes everything skiff put on this host: the service, the
# binary and its links, configuration, data, pods' data, runtime state and
# these scripts. It leaves runc and kernel command line changes alone.

[ -x "$KILLALL" ] && "$KILLALL"

# The service.
if [ "$INIT" = systemd ]; then
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable "$SERVICE.service" >/dev/null 2>&1 || true
		systemctl reset-failed "$SERVICE.service" >/dev/null 2>&1 || true
	fi
	rm -f "$SERVICE_FILE"
	command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload 2>/dev/null
else
	command -v rc-update >/dev/null 2>&1 && rc-update delete "$SERVICE" default >/dev/null 2>&1
	rm -f "$SERVICE_FILE" "/var/log/$SERVICE.log"
fi
rm -f "$CONFIG_DIR/$SERVICE.env"
info "removed the $SERVICE service"

# A server and an agent installed side by side share the binary and data:
# those go with the last one.
if [ "$SERVICE" = skiff ]; then other=skiff-agent; else other=skiff; fi
if [ -f "$BIN_DIR/$other-uninstall.sh" ]; then
	info "$other is still installed: binary and data kept (run $BIN_DIR/$other-uninstall.sh to remove them)"
	rm -f "$BIN_DIR/$SERVICE-uninstall.sh"
	exit 0
fi

# Links, only those that point at skiff.
for cmd in kubectl crictl ctr; do
	link=$BIN_DIR/$cmd
	if [ -L "$link" ] && [ "$(readlink "$link")" = "$BIN" ]; then
		rm -f "$link"
	fi
done
rm -f "$BIN"

# Directories. Never delete through a mount (a pod's hostPath volume would
# lose the host's files): unmount what is left, and keep a directory that
# still has mounts under it.
remove_dir() {
	[ -e "$1" ] || return 0
	unmount_under "$1"
	if [ -n "$(mounts_under "$1")" ]; then
		info "still mounted under $1: kept it (reboot, then run this again)"
		return 0
	fi
	rm -rf "$1"
}
for dir in "$CONFIG_DIR" /etc/skiff "$DATA_DIR" "$KUBELET_DIR" "$RUN_DIR"; do
	remove_dir "$dir"
done

# hostPort rules of the CNI portmap plugin; the killall removed skiff's own.
if command -v nft >/dev/null 2>&1; then
	for family in ip ip6; do
		if nft list table "$family" cni_hostport >/dev/null 2>&1; then
			nft delete table "$family" cni_hostport
		fi
	done
fi

rm -f "$KILLALL" "$BIN_DIR/$SERVICE-uninstall.sh"
info "skiff is uninstalled"
EOF
	} | write_file "$UNINSTALL" 755
	info "wrote $UNINSTALL"
}

# --- service ----------------------------------------------------------------

start_service() {
	if is_true "${INSTALL_SKIFF_SKIP_ENABLE:-}"; then
		info "not enabling or starting $SERVICE (INSTALL_SKIFF_SKIP_ENABLE)"
		return 0
	fi
	if [ "$INIT" = systemd ]; then
		systemctl daemon-reload
		systemctl enable "$SERVICE.service" >/dev/null 2>&1 ||
			fatal "systemctl enable $SERVICE failed"
	else
		rc-update add "$SERVICE" default >/dev/null
	fi
	info "enabled $SERVICE"
	if is_true "${INSTALL_SKIFF_SKIP_START:-}"; then
		info "not starting $SERVICE (INSTALL_SKIFF_SKIP_START)"
		return 0
	fi
	# restart, not start: a second run must pick up a new binary or flags.
	if [ "$INIT" = systemd ]; then
		systemctl restart "$SERVICE.service" || fatal "$SERVICE did not start: see journalctl -u $SERVICE"
	else
		rc-service "$SERVICE" restart >/dev/null || fatal "$SERVICE did not start: see /var/log/$SERVICE.log"
	fi
	info "started $SERVICE"
}

main() {
	check_root
	setup_env "$@"
	setup_arch
	setup_init
	get_binary

	NEED_REBOOT=
	install_binary
	# The scripts come right after the binary: an install that fails
	# later can still be undone with them.
	write_killall
	write_uninstall
	install_links
	write_env_file
	if [ "$INIT" = systemd ]; then write_systemd_unit; else write_openrc_script; fi
	install_runc
	enable_pi_cgroups
	start_service
	if [ -n "$NEED_REBOOT" ]; then
		info "reboot now: the memory cgroup is enabled at the next boot, and skiff cannot run pods until then ($SERVICE starts by itself)"
	fi
}

main "$@"
