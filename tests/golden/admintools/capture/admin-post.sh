# admin-post.sh (sourced by collect.sh as POST_SCRIPT): admin tools on the real guest.
A=$O/admin; mkdir -p $A
MD5=/usr/bin/md5sum; LSBLK=/usr/bin/lsblk
ra() { f=$1; shift; "$@" > "$A/$f" 2>&1; rc=$?; printf '%s\trc=%s\t%s\n' "$f" "$rc" "$*" >> $A/INDEX.txt; }
# what the guest shows of sr0 after a step (sysfs size, lsblk, TEST UNIT READY, a read)
cdstate() {
  {
    echo "## cat /sys/block/sr0/size"; cat /sys/block/sr0/size
    echo "## lsblk -b -o NAME,SIZE,RM,RO,TYPE /dev/sr0"; $LSBLK -b -o NAME,SIZE,RM,RO,TYPE /dev/sr0; echo "rc=$?"
    echo "## sg_turs /dev/sr0"; sg_turs /dev/sr0; echo "rc=$?"
    echo "## dd if=/dev/sr0 bs=2048 count=1 skip=16"; rm -f /tmp/s.bin
    $DD if=/dev/sr0 of=/tmp/s.bin bs=2048 count=1 skip=16 status=none; echo "rc=$?"
    [ -s /tmp/s.bin ] && $MD5 < /tmp/s.bin
    echo "## cat /sys/block/sr0/size"; cat /sys/block/sr0/size
  } > $A/$1 2>&1
}
# step NAME CMD...: run CMD, then the kernel log it caused, the drive's state, the log that caused
step() {
  n=$1; shift
  L0=$(dmesg_lines); ra $n.txt "$@"; sleep 1
  dmesg_since $L0 > $A/$n.dmesg.txt
  L0=$(dmesg_lines); cdstate $n.state.txt
  dmesg_since $L0 > $A/$n.state-dmesg.txt
}
log "admin: sdparm/smartctl"
for d in sda sdb; do
  ra sdparm_-a_$d.txt sdparm -a /dev/$d
  ra sdparm_-a_-l_$d.txt sdparm -a -l /dev/$d
  ra sdparm_--inquiry_$d.txt sdparm --inquiry /dev/$d
  ra smartctl_-a_$d.txt smartctl -a /dev/$d
done
for p in sv sn di bl bdc lbpv; do ra sdparm_--inquiry_--page=${p}_sda.txt sdparm --inquiry --page=$p /dev/sda; done
ra sdparm_--command=capacity_sda.txt sdparm --command=capacity /dev/sda
ra sdparm_--command=ready_sda.txt sdparm --command=ready /dev/sda
ra smartctl_-x_sda.txt smartctl -x /dev/sda
ra smartctl_-i_sda.txt smartctl -i /dev/sda
ra smartctl_-H_sda.txt smartctl -H /dev/sda
ra sdparm_-a_sr0.txt sdparm -a /dev/sr0
ra sdparm_--inquiry_sr0.txt sdparm --inquiry /dev/sr0
ra smartctl_-a_sr0.txt smartctl -a /dev/sr0

log "admin: eject"
L0=$(dmesg_lines); cdstate eject-00.state.txt; dmesg_since $L0 > $A/eject-00.state-dmesg.txt
step eject-01 eject -v /dev/sr0
step eject-02 eject -v -t /dev/sr0
# locked with CDROM_LOCKDOOR (eject -i on), then eject
step eject-03 eject -v -i on /dev/sr0
step eject-04 eject -v /dev/sr0
step eject-05 eject -v -i off /dev/sr0
step eject-06 eject -v -t /dev/sr0
# locked with PREVENT ALLOW MEDIUM REMOVAL through SG_IO, then eject -r (CDROMEJECT), then eject -s (SCSI)
step eject-07 sg_prevent --prevent=1 /dev/sr0
step eject-08 eject -v -r /dev/sr0
step eject-09 eject -v -t /dev/sr0
step eject-10 sg_prevent --prevent=1 /dev/sr0
step eject-11 eject -v -s /dev/sr0
step eject-12 eject -v -t /dev/sr0
step eject-13 sg_prevent --allow /dev/sr0
# another process holds sr0 open: eject -r, then plain eject
( exec 3</dev/sr0; sleep 6 ) &
HOLD=$!; sleep 1
step eject-14 eject -v -r /dev/sr0
step eject-15 eject -v /dev/sr0
wait $HOLD
step eject-16 eject -v -t /dev/sr0
# START STOP UNIT with LOEJ through sg_start, then load
step eject-17 sg_start --eject /dev/sr0
step eject-18 sg_start --load /dev/sr0
# the door locked behind sr's back (PREVENT through sg2): START STOP UNIT with LoEj is refused;
# the last close of sr0 (cdrom_release) unlocks the door, so the next one ejects
# (no state probe after it: that opens and closes sr0, whose release unlocks the door)
L0=$(dmesg_lines); ra eject-19.txt sg_prevent --prevent=1 /dev/sg2; sleep 1; dmesg_since $L0 > $A/eject-19.dmesg.txt
step eject-20 sg_start --eject /dev/sr0
step eject-21 sg_start --eject /dev/sr0
step eject-22 eject -v -t /dev/sr0
# locked with CDROM_LOCKDOOR (keeplocked): refused, and the release keeps it locked
step eject-23 eject -v -i on /dev/sr0
step eject-24 sg_start --eject /dev/sr0
step eject-25 sg_start --eject /dev/sr0
step eject-26 eject -v -i off /dev/sr0
step eject-27 sg_start --eject /dev/sr0
step eject-28 eject -v -t /dev/sr0

log "admin: rescan"
# rescan-scsi-bus.sh calls /bin/udevadm (where a Debian guest has it; here /bin is busybox's):
# no udevd runs, as in `vscsifs exec` on a machine without the udev view
ln -sf /usr/bin/udevadm /bin/udevadm
ra rescan-00-lsscsi.txt $LSSCSI
ls /sys/bus/scsi/devices > $A/rescan-00-devices.txt
log "ADMIN-HOTPLUG-NOW"
sleep 12
ls /sys/bus/scsi/devices > $A/rescan-01-devices-after-device_add.txt
L0=$(dmesg_lines)
ra rescan-02-rescan-scsi-bus_-a.txt bash /usr/bin/rescan-scsi-bus.sh -a
sleep 2
dmesg_since $L0 > $A/rescan-02.dmesg.txt
ra rescan-03-lsscsi.txt $LSSCSI
ra rescan-03-lsscsi_-g.txt $LSSCSI -g
ls /sys/bus/scsi/devices > $A/rescan-03-devices.txt
$LS -l /dev/sd* > $A/rescan-03-dev.txt 2>&1
L0=$(dmesg_lines)
ra rescan-04-rescan-scsi-bus_-a.txt bash /usr/bin/rescan-scsi-bus.sh -a
sleep 1
dmesg_since $L0 > $A/rescan-04.dmesg.txt
log "admin: done"
