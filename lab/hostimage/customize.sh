#!/usr/bin/env bash
# mmdebstrap hooks for hostimagectl build. Runs on the build machine, acting only on the rootfs
# directory (sysfs is not mounted there).
#   customize.sh dracut-config ROOTFS      (--essential-hook of the sdboot flavour: dracut's
#                                           configuration, before the kernel package is installed)
#   customize.sh FLAVOUR ROOTFS PUBKEY LABEL OPERATOR [UPGRADE_KERNEL]   (--customize-hook)
# FLAVOUR: grub (Debian's grub-efi-amd64: update-grub writes the grub.cfg that the GRUB on the
# ESP reads; initramfs-tools) or sdboot (systemd-boot + kernel-install + dracut).
set -euo pipefail

# dracut, sdboot flavour. The host driver of the generic device is IN the initramfs (the hard
# case, as /etc/initramfs-tools/modules does for the grub flavour); zstd -1: the guest rebuilds
# under TCG. Generic (hostonly=no) while the image is built in the chroot (no host to inspect);
# customize switches the guest to hostonly=yes (only its own hardware's modules, as MODULES=dep).
dracut_config() {
  local R="$1"
  mkdir -p "$R/etc/dracut.conf.d"
  cat >"$R/etc/dracut.conf.d/10-hostimage.conf" <<'EOF'
# hostimage: the host driver of 0000:00:05.0 (e1000e) is in the initramfs; fast compression;
# the kernel command line comes from the boot entry (/etc/kernel/cmdline), not the initramfs.
add_drivers+=" e1000e "
compress="zstd -1 -q"
hostonly_cmdline="no"
EOF
  echo 'hostonly="no"' >"$R/etc/dracut.conf.d/11-hostimage-hostonly.conf"
}
if [[ "${1:-}" == dracut-config ]]; then dracut_config "$2"; exit 0; fi

FLAVOUR="$1"; R="$2"; PUB="$3"; LABEL="$4"; OPERATOR="$5"; UPGRADE_KERNEL="${6:-}"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

kver=$(find "$R/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n1)
[[ -n "$kver" && -f "$R/boot/vmlinuz-$kver" ]] || { echo "no kernel installed in rootfs" >&2; exit 1; }
echo "$kver" >"$R/etc/hostimage-kernel"

echo hostimage >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\thostimage\n' >"$R/etc/hosts"
printf 'LABEL=%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' "$LABEL" >"$R/etc/fstab"

# Reached as fleets are: root cannot log in over SSH; the operator logs in with the key
# (no password: '*') and becomes root through passwordless sudo.
in_root usermod -p '*' root
in_root useradd --create-home --shell /bin/bash --user-group --comment "lab operator" "$OPERATOR"
in_root usermod -p '*' "$OPERATOR"
install -d -m 700 -o "$(stat -c %u "$R/home/$OPERATOR")" -g "$(stat -c %g "$R/home/$OPERATOR")" \
  "$R/home/$OPERATOR/.ssh"
install -m 600 -o "$(stat -c %u "$R/home/$OPERATOR")" -g "$(stat -c %g "$R/home/$OPERATOR")" \
  "$PUB" "$R/home/$OPERATOR/.ssh/authorized_keys"
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$OPERATOR" >"$R/etc/sudoers.d/hostimage-operator"
chmod 0440 "$R/etc/sudoers.d/hostimage-operator"
in_root visudo -cqf /etc/sudoers.d/hostimage-operator
mkdir -p "$R/etc/ssh/sshd_config.d"
cat >"$R/etc/ssh/sshd_config.d/10-hostimage.conf" <<EOF
# hostimage: key-only, the operator logs in, root does not.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers $OPERATOR
EOF

# Management NIC (virtio-net) on DHCP via systemd-networkd; the e1000e stays unconfigured.
mkdir -p "$R/etc/systemd/network"
cat >"$R/etc/systemd/network/10-mgmt.network" <<'EOF'
[Match]
Driver=virtio_net

[Network]
DHCP=ipv4
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
# Nothing here waits for "online"; keep boots short and deterministic.
in_root systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true

if [[ "$FLAVOUR" == sdboot ]]; then
# The hard case the role must beat: the host driver of the generic device is IN the initramfs
# (dracut: add_drivers in /etc/dracut.conf.d/10-hostimage.conf, written before the kernel).
[[ ! -e "$R/usr/sbin/update-initramfs" ]] || { echo "initramfs-tools is installed next to dracut" >&2; exit 1; }
in_root lsinitrd "/boot/initrd.img-$kver" >"$R/tmp/initrd.list"
grep -qE '/e1000e\.ko(\.xz|\.zst)?' "$R/tmp/initrd.list" \
  || { echo "e1000e missing from the dracut initramfs" >&2; exit 1; }
rm -f "$R/tmp/initrd.list"
# In the guest, dracut inspects its own hardware (the build chroot has none to inspect), and
# strictly: hostonly_mode="strict" also leaves out the HID, keyboard, serial, pinctrl, typec and
# watchdog drivers dracut's default ("sloppy") packs whatever the hardware (121 modules instead
# of 378 here; every dracut run under TCG is ~10-20% shorter). add_drivers still go in.
printf 'hostonly="yes"\nhostonly_mode="strict"\n' >"$R/etc/dracut.conf.d/11-hostimage-hostonly.conf"

# systemd-boot on the ESP (mounted at /boot/efi), entries written by kernel-install from
# /etc/kernel/cmdline. Installed by hand (bootctl install wants a mounted ESP and EFI
# variables, neither of which the build chroot has); the guest's bootctl then sees a normal
# installation (bootctl is-installed, so Debian's zz-systemd-boot hook runs kernel-install for
# every new kernel). A fixed entry token: entries do not depend on the machine-id made at first boot.
E="$R/boot/efi"
mkdir -p "$E/EFI/BOOT" "$E/EFI/systemd" "$E/loader/entries" "$E/hostimage"
cp "$R/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$E/EFI/systemd/systemd-bootx64.efi"
cp "$R/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$E/EFI/BOOT/BOOTX64.EFI"
printf 'timeout 0\neditor no\n' >"$E/loader/loader.conf"
echo type1 >"$E/loader/entries.srel"
mkdir -p "$R/etc/kernel"
echo hostimage >"$R/etc/kernel/entry-token"
printf 'layout=bls\nBOOT_ROOT=/boot/efi\n' >"$R/etc/kernel/install.conf"
# intel_iommu=on is already there; the role adds iommu=pt through this file + kernel-install.
# no_timer_check: see the grub flavour below.
echo "root=LABEL=$LABEL ro console=ttyS0,115200 intel_iommu=on no_timer_check" >"$R/etc/kernel/cmdline"
in_root kernel-install add "$kver" "/boot/vmlinuz-$kver" "/boot/initrd.img-$kver"
[[ -f "$E/loader/entries/hostimage-$kver.conf" && -f "$E/hostimage/$kver/linux" ]] \
  || { echo "kernel-install wrote no entry for $kver" >&2; ls -R "$E" >&2; exit 1; }
# In the chroot /boot/efi is no mount point, so 90-loaderentry wrote paths from the root
# filesystem (/boot/efi/hostimage/...); systemd-boot reads them from the ESP's root. In the
# guest the ESP is mounted there and kernel-install writes ESP paths itself.
sed -i -E 's#^(linux|initrd)([[:space:]]+)/boot/efi/#\1\2/#' "$E/loader/entries/hostimage-$kver.conf"
! grep -qE '^(linux|initrd)[[:space:]]+/boot/efi/' "$E/loader/entries/hostimage-$kver.conf" \
  || { echo "entry paths not relative to the ESP" >&2; exit 1; }
# A long device timeout: under TCG on a loaded machine udev's coldplug takes minutes, and the
# default 90 s ends in emergency mode (seen here at load 17).
printf 'LABEL=HOSTESP\t/boot/efi\tvfat\tumask=0077,x-systemd.device-timeout=900s\t0\t2\n' >>"$R/etc/fstab"

else
# The hard case the role must beat: the host driver of the generic device is IN the initramfs.
grep -qx e1000e "$R/etc/initramfs-tools/modules" || echo e1000e >>"$R/etc/initramfs-tools/modules"
cat >"$R/etc/initramfs-tools/conf.d/hostimage.conf" <<'EOF'
# hostimage: no swap to resume from; fast compression (update-initramfs runs under TCG in tests).
RESUME=none
COMPRESS=zstd
COMPRESSLEVEL=1
EOF
# Build the shipped initramfs here (natively) with MODULES=most (dep mode would inspect the
# build machine), then switch the guest to MODULES=dep: an update-initramfs inside the (slow,
# TCG) guest then only packs the modules its hardware needs plus /etc/initramfs-tools/modules.
in_root update-initramfs -u -k "$kver" >/dev/null
cat >"$R/etc/initramfs-tools/conf.d/hostimage-modules.conf" <<'EOF'
# hostimage: only this machine's modules (+ /etc/initramfs-tools/modules, which lists e1000e).
MODULES=dep
EOF
in_root lsinitramfs "/boot/initrd.img-$kver" >"$R/tmp/initrd.list"
grep -qE '/e1000e\.ko(\.xz|\.zst)?$' "$R/tmp/initrd.list" \
  || { echo "e1000e missing from the initramfs" >&2; exit 1; }
rm -f "$R/tmp/initrd.list"

# /vmlinuz and /initrd.img symlinks (linux-base normally maintains them; make sure).
[[ -e "$R/vmlinuz" ]] || ln -sfn "boot/vmlinuz-$kver" "$R/vmlinuz"
[[ -e "$R/initrd.img" ]] || ln -sfn "boot/initrd.img-$kver" "$R/initrd.img"

# GRUB as Debian has it on a UEFI host (grub-efi-amd64): /etc/default/grub (+ grub.d drop-ins)
# -> update-grub -> /boot/grub/grub.cfg, rewritten by every kernel package (zz-update-grub);
# grub-reboot for a one-shot boot (/boot/grub/grubenv). The role's defaults add iommu=pt
# through its drop-in and update-grub. What grub-install would do is done here by hand (it
# probes the boot disk, which the build chroot has not): GRUB's modules under
# /boot/grub/x86_64-efi and a GRUB image on the ESP (EFI/BOOT/BOOTX64.EFI, the removable path:
# no NVRAM entry needed) whose prefix is /boot/grub on the root filesystem, built from the
# image's own GRUB so that core and modules are one build. EFI/debian stays absent, so
# grub-efi-amd64's postinst never runs grub-install (it only re-installs there).
# no_timer_check: under TCG on a loaded machine the kernel otherwise panics at times with
# "timer doesn't work through Interrupt-remapped IO-APIC" (seen here; the virtme lab does the same).
mkdir -p "$R/etc/default"
cat >"$R/etc/default/grub" <<'GRUBDEFAULT'
# hostimage: Debian's defaults with a serial console; intel_iommu=on already on (the role adds
# iommu=pt through /etc/default/grub.d/50-hypervisor-vfio.cfg and update-grub).
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200 intel_iommu=on no_timer_check"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
GRUBDEFAULT
mkdir -p "$R/boot/grub/x86_64-efi"
cp "$R"/usr/lib/grub/x86_64-efi/*.mod "$R"/usr/lib/grub/x86_64-efi/*.lst "$R/boot/grub/x86_64-efi/"
in_root grub-editenv /boot/grub/grubenv create
cat >"$R/tmp/grub-embedded.cfg" <<EMBEDDED
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label $LABEL --set=root
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
echo "hostimage: could not find /boot/grub/grub.cfg on LABEL=$LABEL"
EMBEDDED
mkdir -p "$R/boot/efi/EFI/BOOT"
in_root grub-mkstandalone -O x86_64-efi -o /boot/efi/EFI/BOOT/BOOTX64.EFI \
  --modules="part_gpt ext2 fat search search_label configfile linux normal serial terminal echo test" \
  "boot/grub/grub.cfg=/tmp/grub-embedded.cfg"
rm -f "$R/tmp/grub-embedded.cfg"
# The first boot's grub.cfg: update-grub needs the booted disk (grub-probe), so the image
# carries a minimal one with the same command line; the role's first update-grub, or the first
# kernel package installed, replaces it with the generated one.
cat >"$R/boot/grub/grub.cfg" <<GRUBCFG
# hostimage: first boot only; update-grub in the guest replaces this file.
set timeout=0
set default=0
menuentry 'Debian GNU/Linux (hostimage)' {
  search --no-floppy --label $LABEL --set=root
  linux /vmlinuz root=LABEL=$LABEL ro console=ttyS0,115200 intel_iommu=on no_timer_check
  initrd /initrd.img
}
GRUBCFG

fi

# A second kernel package (another ABI) for the kernel-upgrade test, installed by the test
# with dpkg -i from /var/cache/hostimage (no apt update under TCG, no network needed).
if [[ -z "$UPGRADE_KERNEL" ]]; then
  UPGRADE_KERNEL=$(in_root apt-cache --names-only search '^linux-image-6\.1\.0-[0-9]+-amd64$' \
    | cut -d' ' -f1 | sort -V | tail -n1)
fi
[[ -n "$UPGRADE_KERNEL" ]] || { echo "no linux-image-6.1.0-*-amd64 in bookworm" >&2; exit 1; }
mkdir -p "$R/var/cache/hostimage"
in_root sh -c "cd /var/cache/hostimage && apt-get -q -o APT::Sandbox::User=root download $UPGRADE_KERNEL" >/dev/null
ls "$R/var/cache/hostimage/${UPGRADE_KERNEL}_"*.deb >/dev/null || { echo "download of $UPGRADE_KERNEL failed" >&2; exit 1; }
echo "$UPGRADE_KERNEL" >"$R/etc/hostimage-upgrade-kernel"

in_root apt-get clean
rm -rf "$R/var/lib/apt/lists/"* "$R/var/log/"*.log
# A fresh machine-id on first boot.
: >"$R/etc/machine-id"
