# geometry-post.sh (sourced by collect.sh as POST_SCRIPT): HDIO_GETGEO on the real guest.
# Each step keeps the command's output (NAME.txt) and exit status (INDEX.txt).
A=$O/geometry; mkdir -p $A
st() { n=$1; shift; "$@" > "$A/$n.txt" 2>&1; printf '%s\trc=%s\t%s\n' "$n" "$?" "$*" >> $A/INDEX.txt; }
sh_() { /bin/sh -c "$1"; }
ls -l /sys/block/ > $A/block.txt
for d in sda sdb sdb1 sdc sdd sde sdf; do
  st hdparm-g-$d hdparm -g /dev/$d
  st sfdisk-g-$d sfdisk -g /dev/$d
done
# a new DOS label on each blank disk: libfdisk fills the entries' CHS from the device geometry
for d in sda sdc sdd sdf; do
  st label-$d sh_ "printf 'label: dos\nlabel-id: 0x5eed9e00\n\n2048,,83\n' | sfdisk --no-reread --no-tell-kernel /dev/$d > /dev/null; echo rc=\$?; dd if=/dev/$d bs=512 count=1 2>/dev/null | hexdump -C"
  st fdisk-l-$d sfdisk -l /dev/$d
done
st label-sde-gpt sh_ "printf 'label: gpt\nlabel-id: 5EED9E00-0000-4000-8000-000000000001\n\n2048,,L,uuid=5EED9E00-0000-4000-8000-000000000002\n' | sfdisk --no-reread --no-tell-kernel /dev/sde > /dev/null; echo rc=\$?; dd if=/dev/sde bs=512 count=1 2>/dev/null | hexdump -C"
