#!/usr/bin/env bash
# Run a molecule scenario of this collection against the checkout itself:
#   extensions/molecule/run.sh [molecule args...]      (default: test -s default)
# Ansible's and molecule's state go to a temp folder, not $HOME, and the collection path is a
# temp ansible_collections/hypervisor/vfio symlink to the checkout, so no installed copy of
# the collection can shadow the code under test. LAB_NAME (default molecule) names the lab of
# scenario default, HOSTIMAGE_NAME (default molecule) the real-boot guest of scenario reboot.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/hv-vfio-molecule.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$repo/hack/collection-link" "$tmp/collections"
export ANSIBLE_COLLECTIONS_PATH="$tmp/collections"
export ANSIBLE_HOME="$tmp/ansible-home"
export ANSIBLE_LOCAL_TEMP="$tmp/ansible-tmp"
export XDG_CACHE_HOME="$tmp/cache"           # molecule's ephemeral state and ansible-compat's cache
export LAB_NAME="${LAB_NAME:-molecule}"
export HOSTIMAGE_NAME="${HOSTIMAGE_NAME:-molecule}"
export MOLECULE_HOSTIMAGE_INVENTORY="${MOLECULE_HOSTIMAGE_INVENTORY:-$repo/.lab/hostimage-$HOSTIMAGE_NAME/inventory.yml}"
export MOLECULE_LAB_INVENTORY="${MOLECULE_LAB_INVENTORY:-$repo/.lab/$LAB_NAME/inventory.yml}"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
# The project venv's molecule when there is one, else the one on PATH (resolved before the cd).
molecule="$repo/.venv/bin/molecule"
[ -x "$molecule" ] || molecule="$(command -v molecule)" || { echo "molecule not found" >&2; exit 2; }
# molecule runs ansible-config, ansible-playbook, ... from PATH: those of the same venv
PATH="$(dirname "$molecule"):$PATH"
export PATH
cd "$repo/extensions"
if [ $# -eq 0 ]; then set -- test -s default; fi
[ "$1" = test ] || exec "$molecule" "$@"
# A `test` that failed while a guest's console shows the emulator fault (QEMU TCG lost a vCPU's
# timer interrupt and the guest hung: lab/README.md, Troubleshooting) runs once more, on fresh
# guests, and says so; any other failure is final. Only consoles this run wrote are read.
: >"$tmp/start"
rc=0
"$molecule" "$@" || rc=$?
if [ "$rc" -ne 0 ]; then
  fault=$(find "$repo/.lab/$LAB_NAME/console.log" "$repo/.lab/hostimage-$HOSTIMAGE_NAME/serial.log" \
            -newer "$tmp/start" -print0 2>/dev/null | xargs -0 -r -n1 "$repo/lab/emulator-fault" || true)
  if [ -n "$fault" ]; then
    echo "molecule: a guest hung on an emulator fault, not on the code under test (QEMU TCG lost a vCPU's" \
         "timer interrupt: $(head -n1 <<<"$fault")); running the scenario once more on fresh guests" >&2
    rc=0
    "$molecule" "$@" || rc=$?
  fi
fi
exit "$rc"
