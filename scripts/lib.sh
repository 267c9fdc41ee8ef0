# Shared by scripts/run-stack and scripts/test: install the Debian packages a step
# needs when they are missing (as root), or print the exact command to run.

# need_packages PKG:CHECK ... — each CHECK is a shell test that succeeds when the
# package is already there.
need_packages() {
  local missing=()
  for spec in "$@"; do
    local pkg=${spec%%:*} check=${spec#*:}
    if ! eval "$check" >/dev/null 2>&1; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages with a system service (nginx, haproxy, redis-server, postgresql)
    # must not start it: the tests start their own on free ports.
    export RUNLEVEL=1
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing system packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
}

have() { command -v "$1" >/dev/null 2>&1; }
have_initdb() { have initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }

# Packages every build needs: a C toolchain for ring, cmake for Pingora's zlib-ng.
need_build_packages() {
  need_packages "build-essential:have cc" "build-essential:have make" "cmake:have cmake"
}
