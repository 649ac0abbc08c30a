# Shared set-up for scripts/demo and scripts/test (sourced, not run).
# The venv lives in a world-readable place built from Debian's /usr/bin/python3,
# because the tests run the product as uid 65534, which can read neither /root
# nor an interpreter installed under it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SUPERMIN_VENV:-/var/tmp/supermin-venv}
SYSTEM_TOOLS=(python3-venv dpkg-dev apt-utils gcc zstd xz-utils busybox-static libarchive-tools cpio e2fsprogs
              util-linux ca-certificates rpm rpm2cpio python3-rpm createrepo-c binutils
              qemu-system-x86 dnf libcap2-bin genext2fs  # genext2fs: a benchmark peer
              libguestfs-tools linux-image-amd64 supermin  # the drop-in's judge, its kernel, the peer
              systemd  # systemd-analyze verify of our unit
              btrfs-progs)  # a scratch btrfs proves copies are reflinks

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_system_tools() {
    local missing=()
    for pkg in "${SYSTEM_TOOLS[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
        return 1
    fi
    say "installing ${missing[*]}"
    # Other configured repositories may be unreachable; Debian's own lists are enough.
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        mkdir -p "$(dirname "$VENV")"
        /usr/bin/python3 -m venv "$VENV"
    fi
    say "installing supermin into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$REPO[test,bench]" 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
    # From /: the checkout's own supermin/ must not shadow the installed package.
    (cd / && "$VENV/bin/python" -c 'import supermin.backends.deb')
    chmod -R a+rX "$VENV"
}
