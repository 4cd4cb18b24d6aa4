# readonly-post.sh (sourced by collect.sh as POST_SCRIPT): read-only flags on the real guest.
# Each step keeps the command's output (NAME.txt) and exit status (INDEX.txt); state.txt after a
# step is every node's sysfs ro and BLKROGET; monitor.txt the block uevents over the whole run.
A=$O/readonly; mkdir -p $A
st() { n=$1; shift; "$@" > "$A/$n.txt" 2>&1; printf '%s\trc=%s\t%s\n' "$n" "$?" "$*" >> $A/INDEX.txt; }
sh_() { /bin/sh -c "$1"; }
state() { for d in sda sda1 sdb sdb1; do printf '%s sysfs=%s getro=%s\n' $d "$(cat /sys/class/block/$d/ro)" "$(blockdev --getro /dev/$d)"; done; }
udevadm monitor --kernel --property --subsystem-match=block > $A/monitor.txt 2>&1 &
MON=$!
sleep 2
st 00-state state
st 01-setro-sda blockdev --setro /dev/sda
st 02-state state
st 03-rescan-sda sh_ "echo 1 > /sys/block/sda/device/rescan"
st 04-state state
st 05-setrw-sdb blockdev --setrw /dev/sdb
st 06-state state
st 07-rescan-sdb sh_ "echo 1 > /sys/block/sdb/device/rescan"
st 08-state state
st 09-setrw-sda blockdev --setrw /dev/sda
st 10-setro-sda1 blockdev --setro /dev/sda1
st 11-state state
st 12-rereadpt-sda blockdev --rereadpt /dev/sda
st 13-state state
st 14-setro-sdb blockdev --setro /dev/sdb
st 15-rescan-sdb sh_ "echo 1 > /sys/block/sdb/device/rescan"
st 16-state state
sleep 2
kill $MON
