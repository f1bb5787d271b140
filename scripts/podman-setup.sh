#!/usr/bin/env bash
# Set up podman to build and run deploy/Dockerfile without an image registry. Idempotent.
#
#   eval "$(bash scripts/podman-setup.sh)"     # then: podman build --from "$CDS_BASE_IMAGE" …
#
# 1. Installs podman (with runc), mmdebstrap and their helpers from Debian's packages when missing
#    (as root; apt waits for the dpkg lock). They cannot be installed (not root, apt fails): it says
#    so and exits 3, which the tests take as "skip", not "fail".
# 2. Writes a containers.conf of its own (the cache directory below) that works on a host with a
#    mixed cgroup v1/v2 layout and without CAP_SYS_RESOURCE: runc (crun refuses the mixed layout),
#    cgroupfs (no systemd), fixed ulimits, host network, file events. It is used through
#    CONTAINERS_CONF only, so the machine's other podman users keep their own settings.
# 3. Builds the base image the Dockerfile's PYTHON_IMAGE stands for, from Debian bookworm packages
#    (mmdebstrap minbase: python3, python3-venv, python3-pip, python-is-python3, ca-certificates),
#    with the host's extra CA certificates (/usr/local/share/ca-certificates/*.crt) added so that
#    pip in the build trusts a re-signing HTTPS proxy, and imports it as localhost/cds-base:<key>.
#    <key> is a digest of this script and of those certificates: the base is built once and reused
#    until either changes (older cds-base images are removed).
#
# Stdout: shell `export` lines (CONTAINERS_CONF, CDS_BASE_IMAGE); everything else goes to stderr.
# Settings: CDS_PODMAN_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/cds-podman), DEBIAN_MIRROR.
set -euo pipefail

CACHE="${CDS_PODMAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cds-podman}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PACKAGES=(podman runc catatonit uidmap slirp4netns fuse-overlayfs containernetworking-plugins mmdebstrap)
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates

say() { echo "podman-setup: $*" >&2; }

install_packages() {
  local need=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "missing ${need[*]}; install them as root (sudo bash $0) and run this again"
    exit 3
  fi
  say "installing ${need[*]}"
  # runc named explicitly: podman depends on "crun | runc" and crun fails on a mixed cgroup layout
  if ! apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null ||
    ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${need[@]}" >/dev/null; then
    say "apt-get could not install ${need[*]}"
    exit 3
  fi
}

write_containers_conf() {
  mkdir -p "$CACHE"
  local conf="$CACHE/containers.conf" tmp
  tmp="$(mktemp "$CACHE/containers.conf.XXXXXX")"
  cat >"$tmp" <<'EOF'
# Written by scripts/podman-setup.sh; read by podman through CONTAINERS_CONF.
[containers]
# raising limits needs CAP_SYS_RESOURCE, which these hosts do not give: set them within reach
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
# no bridge networking (no CNI firewall rights): containers share the host's network
netns = "host"

[engine]
# crun refuses a mixed cgroup v1/v2 layout; runc runs on it. No systemd: cgroupfs, file events.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  if cmp -s "$tmp" "$conf"; then rm -f "$tmp"; else mv "$tmp" "$conf"; fi
  export CONTAINERS_CONF="$conf"
}

base_key() {
  # the recipe (this file) and the certificates put into the base decide whether it is rebuilt
  { cat "$0"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } | sha256sum | cut -c1-16
}

build_base() {
  local image
  image="localhost/cds-base:$SUITE-$(base_key)"
  export CDS_BASE_IMAGE="$image"
  if podman image exists "$image"; then
    return 0
  fi
  local tarball="$CACHE/${image##*:}.tar"
  if [ ! -s "$tarball" ]; then
    say "building the base with mmdebstrap ($SUITE minbase, $BASE_PACKAGES)"
    local started=$SECONDS
    # shellcheck disable=SC2016  # $1 is the hook's chroot argument, expanded by mmdebstrap's shell
    mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" \
      --customize-hook='for crt in /usr/local/share/ca-certificates/*.crt; do
          [ -f "$crt" ] && cp "$crt" "$1/usr/local/share/ca-certificates/"; done
        chroot "$1" update-ca-certificates >/dev/null' \
      "$SUITE" "$tarball.part" \
      "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
      "deb ${MIRROR%/debian}/debian-security $SUITE-security main"
    mv "$tarball.part" "$tarball"
    say "base built in $((SECONDS - started)) s"
  fi
  say "importing the base as $image"
  podman import --quiet \
    --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    "$tarball" "$image" >/dev/null
  # older bases (another recipe) lose their name, their tarballs go; an image built on one keeps
  # its layers until `podman image prune` (no --force here: nothing in use is pulled away)
  podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/cds-base:' | grep -vxF "$image" |
    xargs -r -n1 podman untag >/dev/null 2>&1 || true
  find "$CACHE" -maxdepth 1 -name '*.tar' ! -name "${image##*:}.tar" -delete
}

install_packages
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two test runs at once on one machine: one builds the base, the other waits for it
write_containers_conf
build_base
printf 'export CONTAINERS_CONF=%q\nexport CDS_BASE_IMAGE=%q\n' "$CONTAINERS_CONF" "$CDS_BASE_IMAGE"
