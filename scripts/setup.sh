#!/usr/bin/env bash
# Idempotent set-up for fusewb on Debian 12 as root: apt packages, a virtualenv from the system
# Python 3.11 (which can import bcc from python3-bpfcc), and fusewb installed editable with its
# test extra (every extra of pyproject.toml, the test tools and make dist's build and shiv). A second
# run checks stamps and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FUSEWB_VENV:-.venv}
APT_PACKAGES="python3-bpfcc python3-venv python3-dev fuse3 libfuse3-dev pkg-config gcc bpftool \
linux-headers-amd64 bpftrace linux-perf fio bindfs qemu-system-x86 linux-image-amd64 busybox-static \
chromium debootstrap"

missing=()
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "fusewb setup: missing Debian packages (${missing[*]}); run 'make setup' as root" >&2
    exit 2
  fi
  echo "fusewb setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
      >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "fusewb setup: apt-get failed (output above); fix the package source and run 'make setup' again" >&2
    exit 2
  fi
  rm -f "$log"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "fusewb setup: creating $VENV from /usr/bin/python3 (system site-packages, for bcc)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.fusewb-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "fusewb setup: installing fusewb and its Python dependencies into $VENV"
  # -qq: only errors (this machine's pip configuration may name index folders that are absent)
  "$VENV/bin/python" -m pip install -qq --upgrade "pip>=23" "setuptools>=77" wheel
  "$VENV/bin/python" -m pip install -qq -e ".[test]"
  echo "$want" > "$stamp"
fi
# The 6.1 guest of `make test` (fusewb/guest.py) compiles bcc programs against
# /lib/modules/$(uname -r)/build, so the kernel image must come with the same ABI as the headers.
for img in /boot/vmlinuz-*; do
  [ -e "$img" ] || continue
  ver=${img#/boot/vmlinuz-}
  [ -e "/lib/modules/$ver/build" ] && continue
  echo "fusewb setup: kernel image $ver has no headers; installing linux-headers-$ver"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "linux-headers-$ver" >/dev/null 2>&1 || {
    echo "fusewb setup: linux-headers-$ver is not installable; install the image and headers of one ABI ('apt-get install linux-image-X linux-headers-X') and run 'make setup' again" >&2
    exit 2
  }
done
# The kernel matrix of make test's guest stage (fusewb/kernels.py): 5.10, 6.12, 6.17 and the newest
# 7.x from Debian's archive, cached under /var/cache/fusewb/kernels (a second run takes seconds).
# Without the archive the guest stage says which kernel is missing (a failure under FUSEWB_REQUIRE_KERNEL=1).
if [ "$(id -u)" = 0 ]; then
  "$VENV/bin/python" -m fusewb.kernels fetch || echo "fusewb setup: the kernel matrix is incomplete (above); make test's guest stage will say so" >&2
fi
"$VENV/bin/python" -c "import bcc, pyfuse3, pandas, pyarrow" 2>/dev/null || {
  echo "fusewb setup: the virtualenv $VENV cannot import bcc/pyfuse3/pandas/pyarrow; remove it and run 'make setup' again" >&2
  exit 2
}
