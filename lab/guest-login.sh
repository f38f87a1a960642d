#!/bin/bash
# Runs INSIDE the lab guest, as root, from its console (typed by `lab/labctl up`; never run it
# on the host).  Makes the guest reachable the way fleets are: an unprivileged operator who
# logs in with the lab's key and becomes root through passwordless sudo; root cannot log in.
#
# The guest runs the host's userland with copy-on-write overlays on /etc, /home and /run
# (virtme-ng), so the user, its sudoers line and the sshd configuration live in the guest
# only: this machine's /etc is never written.  Idempotent: labctl repeats the console line
# until SSH answers (console input sent before the shell opens is lost).
# Arguments: <lab state dir> <user>
set -eu
STATE=$1 USER_NAME=$2
RUN=/run/lab-sshd

# systemd-tmpfiles (run by virtme-ng's init) leaves the "system is booting" marker that makes
# pam_nologin refuse every user but root; there is no systemd here to remove it.
rm -f /run/nologin

if [ -f "$RUN/sshd.pid" ] && kill -0 "$(cat "$RUN/sshd.pid")" 2>/dev/null; then
  exit 0
fi

# The operator: an account of the guest only (appended to the overlay /etc, and to the
# /etc/shadow virtme-ng bind-mounts from /run).  '*': no password, yet not a locked account.
if ! getent passwd "$USER_NAME" >/dev/null; then
  uid=2000
  while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; do uid=$((uid + 1)); done
  echo "$USER_NAME:x:$uid:$uid:lab operator:/home/$USER_NAME:/bin/bash" >>/etc/passwd
  echo "$USER_NAME:x:$uid:" >>/etc/group
  echo "$USER_NAME:*:20000:0:99999:7:::" >>/etc/shadow
fi
install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "/home/$USER_NAME"

# Passwordless sudo, as hypervisors grant it to their automation account.
install -d -m 750 /etc/sudoers.d
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$USER_NAME" >/etc/sudoers.d/lab-operator.tmp
chmod 0440 /etc/sudoers.d/lab-operator.tmp
visudo -cqf /etc/sudoers.d/lab-operator.tmp
mv /etc/sudoers.d/lab-operator.tmp /etc/sudoers.d/lab-operator

# sshd: the lab's host keys (made by labctl in <state>/sshd), key-only, root refused.
install -d -m 755 "$RUN" /run/sshd
for k in "$STATE"/sshd/etc/ssh/ssh_host_*_key; do
  install -m 600 "$k" "$RUN/"
done
install -m 644 "$STATE/id_ed25519.pub" "$RUN/authorized_keys"
sftp=
for s in /usr/lib/openssh/sftp-server /usr/lib/ssh/sftp-server; do
  [ -x "$s" ] && { sftp="Subsystem sftp $s"; break; }
done
cat >"$RUN/sshd_config" <<EOF
# lab guest sshd (lab/guest-login.sh): the operator logs in, root does not.
Port 22
PermitRootLogin no
AllowUsers $USER_NAME
AuthorizedKeysFile $RUN/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
PrintMotd no
StrictModes no
PidFile $RUN/sshd.pid
$sftp
EOF
args=(-f "$RUN/sshd_config")
for k in "$RUN"/ssh_host_*_key; do args+=(-h "$k"); done
/usr/sbin/sshd -t "${args[@]}"
/usr/sbin/sshd "${args[@]}"
echo "lab: sshd up, login as $USER_NAME (sudo), PermitRootLogin no"
