# sgtools-post.sh (sourced by collect.sh as POST_SCRIPT): sg3_utils commands on the real guest.
# Each step keeps the command's output (NAME.txt), its exit status (INDEX.txt) and the kernel log
# lines it caused (NAME.dmesg.txt). sg0 is the 1 GiB boot.img, sg1 (sdb) the 256 MiB test.img.
A=$O/sgtools; mkdir -p $A
st() {
  n=$1; shift
  L0=$(dmesg_lines)
  "$@" > "$A/$n.txt" 2>&1; rc=$?
  printf '%s\trc=%s\t%s\n' "$n" "$rc" "$*" >> $A/INDEX.txt
  sleep 1
  dmesg_since $L0 > $A/$n.dmesg.txt
}
sh_() { /bin/sh -c "$1"; }
log "sgtools: inputs"
$DD if=/dev/zero of=/tmp/z512.bin bs=512 count=1 status=none
$DD if=/dev/zero of=/tmp/z1024.bin bs=1024 count=1 status=none
log "sgtools: opcodes and reports"
st 01-opcodes sg_opcodes /dev/sg0
st 02-opcodes-T sg_opcodes -T /dev/sg0
st 03-opcodes-o28 sg_opcodes -o 0x28 /dev/sg0
st 04-timestamp sg_timestamp /dev/sg0
st 05-rtpg sg_rtpg /dev/sg0
st 06-persist-k sg_persist -i -k /dev/sg0
st 07-persist-c sg_persist -i -c /dev/sg0
st 08-read-buffer sg_read_buffer /dev/sg0
st 09-rep-zones sg_rep_zones /dev/sg0
st 10-ident sg_ident /dev/sg0
st 11-rmsn sg_rmsn /dev/sg0
st 12-stream-ctl sg_stream_ctl --get /dev/sg0
st 13-get-elem-status sg_get_elem_status /dev/sg0
st 14-rdac sg_rdac /dev/sg0
st 15-logs sg_logs /dev/sg0
st 16-logs-a sg_logs -a /dev/sg0
st 17-logs-p0d sg_logs -p 0xd /dev/sg0
st 18-senddiag-l sg_senddiag -l /dev/sg0
st 19-senddiag-test sg_senddiag --test /dev/sg0
st 20-senddiag-selftest1 sg_senddiag --selftest=1 /dev/sg0
st 21-read-long sg_read_long --lba=0 /dev/sg1
log "sgtools: provisioning"
st 30-lba-status sg_get_lba_status /dev/sg1
st 31-lba-status-4096 sg_get_lba_status --lba=4096 /dev/sg1
st 32-unmap sg_unmap --lba=4096 --num=8 /dev/sg1
st 33-ws10 sg_write_same --lba=8192 --num=8 /dev/sg1
st 34-ws16 sg_write_same --16 --lba=8192 --num=8 /dev/sg1
st 35-ws10-unmap sg_write_same --unmap --lba=8192 --num=8 /dev/sg1
st 36-ws16-unmap sg_write_same --16 --unmap --lba=8192 --num=8 /dev/sg1
st 37-ws16-ndob sg_write_same --16 --ndob --lba=8192 --num=8 /dev/sg1
st 38-ws32 sg_write_same --32 --lba=8192 --num=8 /dev/sg1
st 39-dd-after-ws sh_ "sg_dd if=/dev/sg1 of=/tmp/ws.bin bs=512 skip=8192 count=8 2>&1; cmp /tmp/ws.bin /dev/zero 2>&1 | head -1"
log "sgtools: verify, compare, write-verify"
st 40-verify10 sg_verify --lba=100 --count=8 /dev/sg1
st 41-verify16 sg_verify --16 --lba=100 --count=8 /dev/sg1
st 42-dd-lba100 sg_dd if=/dev/sg1 of=/tmp/v.bin bs=512 skip=100 count=1
st 43-verify-bytchk-same sg_verify --ndo=512 --lba=100 --count=1 --in=/tmp/v.bin /dev/sg1
st 44-verify-bytchk-diff sg_verify --ndo=512 --lba=100 --count=1 --in=/tmp/z512.bin /dev/sg1
st 45-caw sg_compare_and_write --in=/tmp/z1024.bin --lba=16384 --num=1 /dev/sg1
st 46-write-verify sg_write_verify --lba=20000 --num=1 --in=/tmp/z512.bin /dev/sg1
st 47-write-verify16 sg_write_verify --16 --lba=20001 --num=1 --in=/tmp/z512.bin /dev/sg1
st 48-seek sg_seek --lba=100 /dev/sg1
st 49-prefetch sg_seek --pre-fetch --lba=100 --num-blocks=8 /dev/sg1
st 50-prefetch16 sg_seek --pre-fetch --16 --lba=100 --num-blocks=8 /dev/sg1
log "sgtools: cache, start/stop, prevent, sanitize"
st 60-sync sg_sync /dev/sg1
st 61-sync16 sg_sync --16 /dev/sg1
st 62-sync-range sg_sync --lba=100 --count=8 /dev/sg1
st 63-stop sg_start --stop /dev/sg1
st 64-turs-stopped sg_turs /dev/sg1
st 65-start sg_start --start /dev/sg1
st 66-turs-started sg_turs /dev/sg1
st 67-eject sg_start --eject /dev/sg1
st 68-load sg_start --load /dev/sg1
st 69-prevent sg_prevent --prevent=1 /dev/sg1
st 70-allow sg_prevent --allow /dev/sg1
st 71-sanitize sg_sanitize --block --quick --early /dev/sg1
st 72-dd-sg1 sg_dd if=/dev/sg1 of=/dev/null bs=512 count=2048
log "sgtools: WCE"
st 80-wce-get sdparm --get WCE /dev/sdb
st 81-wce-clear sdparm --clear WCE /dev/sdb
st 82-wce-get-cleared sdparm --get WCE /dev/sdb
st 83-cache-type-after-clear cat /sys/class/scsi_disk/0:0:0:1/cache_type
st 84-wce-set sdparm --set WCE /dev/sdb
st 85-cache-type-wt sh_ "echo 'write through' > /sys/class/scsi_disk/0:0:0:1/cache_type; echo rc=\$?; cat /sys/class/scsi_disk/0:0:0:1/cache_type"
st 86-wce-get-wt sdparm --get WCE /dev/sdb
st 87-cache-type-wb sh_ "echo 'write back' > /sys/class/scsi_disk/0:0:0:1/cache_type; echo rc=\$?; cat /sys/class/scsi_disk/0:0:0:1/cache_type"
st 88-cache-type-bad sh_ "echo 'sometimes' > /sys/class/scsi_disk/0:0:0:1/cache_type; echo rc=\$?; cat /sys/class/scsi_disk/0:0:0:1/cache_type"
log "sgtools: resets"
st 90-reset-d sg_reset -d /dev/sg1
st 91-turs-after-d sg_turs /dev/sg1
st 92-reset-t sg_reset -t /dev/sg1
st 93-turs-after-t sg_turs /dev/sg1
st 94-reset-b sg_reset -b /dev/sg1
st 95-turs-after-b sg_turs /dev/sg1
st 96-reset-H sg_reset -H /dev/sg1
st 97-turs-after-H sg_turs /dev/sg1
st 98-turs-sg0 sg_turs /dev/sg0
log "sgtools: done"
