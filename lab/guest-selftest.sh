#!/bin/bash
# Runs INSIDE the lab guest (fed over SSH on stdin by `lab/labctl selftest`; never run it on
# the host: it writes to /sys).  Proves the lab: IOMMU groups, the variant aliases, and
# binds by hand through driver_override -> unbind -> drivers_probe, then restores every
# device to its boot-time driver.  The management NIC and the root filesystem are never touched.
# Arguments: <generic> <variant> <testdev> <group0> <group1>
set -u
GENERIC=$1 VARIANT=$2 TESTDEV=$3 G0=$4 G1=$5
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
drv() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null; }
ovr() { cat "/sys/bus/pci/devices/$1/driver_override"; }
group() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
bind_to() {   # bind_to <addr> <driver>: override, unbind, drivers_probe
  local a=$1 d=$2
  echo "$d" >"/sys/bus/pci/devices/$a/driver_override"
  [ -e "/sys/bus/pci/devices/$a/driver" ] && echo "$a" >"/sys/bus/pci/devices/$a/driver/unbind"
  echo "$a" >/sys/bus/pci/drivers_probe 2>/dev/null
  return 0
}
restore() {   # restore <addr> <driver>: clear the override and reprobe the host driver
  local a=$1 want=$2
  [ -e "/sys/bus/pci/devices/$a/driver" ] && echo "$a" >"/sys/bus/pci/devices/$a/driver/unbind"
  echo >"/sys/bus/pci/devices/$a/driver_override"
  echo "$a" >/sys/bus/pci/drivers_probe 2>/dev/null
  if [ "$(drv "$a")" = "$want" ] && [ "$(ovr "$a")" = "(null)" ]; then pass "$a restored to ${want:-no driver}"
  else fail "$a not restored: driver=$(drv "$a") override=$(ovr "$a") (wanted $want)"; fi
}

echo "kernel $(uname -r)"
n=$(ls /sys/kernel/iommu_groups | wc -l)
[ "$n" -gt 0 ] && pass "$n IOMMU groups" || fail "no IOMMU groups"
[ "$(group "$G0")" = "$(group "$G1")" ] && pass "$G0 and $G1 share IOMMU group $(group "$G0")" \
  || fail "$G0 (group $(group "$G0")) and $G1 (group $(group "$G1")) are not in one group"
[ "$(ls "/sys/kernel/iommu_groups/$(group "$VARIANT")/devices" | wc -l)" = 1 ] \
  && pass "$VARIANT alone in its group" || fail "$VARIANT shares its group"

modprobe vfio_pci && pass "modprobe vfio_pci" || fail "modprobe vfio_pci"
alias=/lib/modules/$(uname -r)/modules.alias
grep -qx 'alias vfio_pci:v00001AF4d00001041sv\*sd\*bc\*sc\*i\* virtio_vfio_pci' "$alias" \
  && pass "modules.alias: virtio_vfio_pci" || fail "modules.alias lacks virtio_vfio_pci"
grep -qx 'alias vfio_pci:v00001B36d00000005sv\*sd\*bc\*sc\*i\* vfio_testdev' "$alias" \
  && pass "modules.alias: vfio_testdev" || fail "modules.alias lacks vfio_testdev"

# virtio-net (modern) -> virtio_vfio_pci -> back to virtio-pci
before=$(drv "$VARIANT")
modprobe virtio_vfio_pci && pass "modprobe virtio_vfio_pci" || fail "modprobe virtio_vfio_pci"
bind_to "$VARIANT" virtio_vfio_pci
if [ "$(drv "$VARIANT")" = virtio_vfio_pci ] && [ -d "/sys/bus/pci/devices/$VARIANT/vfio-dev" ]; then
  pass "$VARIANT bound to virtio_vfio_pci (vfio-dev: $(ls "/sys/bus/pci/devices/$VARIANT/vfio-dev"))"
else fail "$VARIANT driver is '$(drv "$VARIANT")', not virtio_vfio_pci"; fi
restore "$VARIANT" "$before"

# e1000e -> vfio-pci -> back
before=$(drv "$GENERIC")
bind_to "$GENERIC" vfio-pci
[ "$(drv "$GENERIC")" = vfio-pci ] && pass "$GENERIC bound to vfio-pci" \
  || fail "$GENERIC driver is '$(drv "$GENERIC")', not vfio-pci"
restore "$GENERIC" "$before"

# pci-testdev -> vfio_testdev, with fault injection
P=/sys/module/vfio_testdev/parameters
before=$(drv "$TESTDEV")
modprobe vfio_testdev && pass "modprobe vfio_testdev" || fail "modprobe vfio_testdev"
echo 1 >$P/fail_probe
bind_to "$TESTDEV" vfio_testdev
if [ -z "$(drv "$TESTDEV")" ] && dmesg | tail -n 20 | grep -q "vfio_testdev: $TESTDEV: probe failed on purpose"; then
  pass "fail_probe=1: probe of $TESTDEV failed with -EIO, device left driverless, logged"
else fail "fail_probe=1: driver is '$(drv "$TESTDEV")'"; fi
echo 0 >$P/fail_probe
echo "$TESTDEV" >/sys/bus/pci/drivers_probe
[ "$(drv "$TESTDEV")" = vfio_testdev ] && pass "$TESTDEV bound to vfio_testdev" \
  || fail "$TESTDEV driver is '$(drv "$TESTDEV")', not vfio_testdev"
echo 2000 >$P/remove_delay_ms
t0=$(date +%s%N)
echo "$TESTDEV" >"/sys/bus/pci/devices/$TESTDEV/driver/unbind"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -ge 2000 ] && pass "remove_delay_ms=2000: unbind blocked ${ms} ms" || fail "unbind took only ${ms} ms"
echo 0 >$P/remove_delay_ms
restore "$TESTDEV" "$before"

[ -e "/sys/bus/pci/devices/$G0" ] && [ -e "/sys/bus/pci/devices/$G1" ] && pass "group functions present"
if [ "$fails" = 0 ]; then echo "selftest: all passed"; else echo "selftest: $fails failed"; exit 1; fi
