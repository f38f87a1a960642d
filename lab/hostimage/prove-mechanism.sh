#!/usr/bin/env bash
# Reproduces, without the role, the two measurements the role's persistence design rests on
# (see README.md "The mechanism"), on a fresh hostimage instance:
#   (a) udev rule in /etc/udev/rules.d only (+ vfio-pci in modules-load.d), reboot
#       -> expected: the device stays on e1000e (the initramfs' e1000e took it first)
#   (b) then update-initramfs -u, reboot
#       -> expected: the device is on vfio-pci, e1000e never probed it during that boot
# Exit 0 when both hold.  Env: HOSTIMAGE_NAME (default "mechanism"), HOSTIMAGE_KEEP=1.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HOSTIMAGE_NAME="${HOSTIMAGE_NAME:-mechanism}"
H="$HERE/hostimagectl"
ADDR=0000:00:05.0
trap '[[ "${HOSTIMAGE_KEEP:-}" == 1 ]] || "$H" down' EXIT

now() { date +%s; }
state() {
  "$H" ssh "D=/sys/bus/pci/devices/$ADDR; echo driver=\$(basename \"\$(readlink \$D/driver)\" 2>/dev/null) \
    override=\$(cat \$D/driver_override) e1000e_probed_this_boot=\$(journalctl -k -b -o cat | grep -c 'e1000e $ADDR')"
}

t=$(now); "$H" up >/dev/null; echo "up: $(( $(now) - t )) s"
echo "boot:        $(state)"
"$H" ssh "printf '%s\n' 'ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"$ADDR\", ATTR{driver_override}=\"vfio-pci\"' \
  >/etc/udev/rules.d/70-mechanism.rules && echo vfio-pci >/etc/modules-load.d/mechanism.conf && sync"
t=$(now); "$H" reboot >/dev/null; echo "reboot: $(( $(now) - t )) s"
a=$(state); echo "(a) rule in /etc only: $a"
t=$(now); "$H" ssh 'update-initramfs -u' >/dev/null; echo "update-initramfs -u: $(( $(now) - t )) s"
t=$(now); "$H" reboot >/dev/null; echo "reboot: $(( $(now) - t )) s"
b=$(state); echo "(b) after update-initramfs: $b"

ok=0
[[ "$a" == *"driver=e1000e "* ]] || { echo "UNEXPECTED (a): the rule in /etc alone won" >&2; ok=1; }
[[ "$b" == *"driver=vfio-pci override=vfio-pci e1000e_probed_this_boot=0"* ]] \
  || { echo "UNEXPECTED (b): the rule in the initramfs did not win" >&2; ok=1; }
exit $ok
