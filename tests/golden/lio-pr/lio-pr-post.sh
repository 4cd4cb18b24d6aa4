# lio-pr: after the main collection. A second I_T nexus (tpgt_0, nexus naa.5001405000000003)
# maps the test backstore as its lun_0 (0:0:0:0); then PR, SPC-2, UNMAP/WRITE SAME, CAW,
# LOG SENSE, XCOPY commands through sg_raw on both nexuses.
D=$O/lio/pr; mkdir -p $D
T=/sys/kernel/config/target/loopback/naa.5001405000000001
{
  mkdir $T/tpgt_0; echo "mkdir tpgt_0 rc=$?"
  echo -n naa.5001405000000003 > $T/tpgt_0/nexus; echo "nexus rc=$?"
  mkdir $T/tpgt_0/lun/lun_0; echo "mkdir lun_0 rc=$?"
  ln -s /sys/kernel/config/target/core/fileio_0/test $T/tpgt_0/lun/lun_0/5eed7e5701; echo "link rc=$?"
} > $D/00_second_nexus.txt 2>&1
n=0; while [ -z "$(hctl_sg 0:0:0:0)" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
sleep 1
N1=$(hctl_sg 0:0:1:1); N2=$(hctl_sg 0:0:0:0); B=$(hctl_sg 0:0:1:0)
echo "N1=$N1 N2=$N2 BOOT=$B" >> $D/00_second_nexus.txt
ls -la /var/target /etc/target >> $D/00_second_nexus.txt 2>&1
cat /sys/kernel/config/target/core/fileio_0/test/attrib/emulate_tpu /sys/kernel/config/target/core/fileio_0/test/attrib/emulate_tpws >> $D/00_second_nexus.txt 2>&1
R="5e 00 00 00 00 00 00 00 ff 00"
rawcmd $D /dev/$N1 01_pri_caps 8 5e 02 00 00 00 00 00 00 08 00
rawcmd $D /dev/$N1 02_pri_keys_empty 255 $R
rawcmd $D /dev/$N1 03_pro_register_no_pr_dir - --in /p_reg_ab.bin 24 5f 00 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 04_pri_keys_after 255 $R
mkdir -p /var/target/pr
rawcmd $D /dev/$N1 05_pro_register_ignore - --in /p_reg_ab.bin 24 5f 06 00 00 00 00 00 00 18 00
(ls -la /var/target/pr; for f in /var/target/pr/*; do echo "== $f"; xxd $f; done) > $D/05b_aptpl_file.txt 2>&1
rawcmd $D /dev/$N1 06_pro_reserve_we - --in /p_res_ab.bin 24 5f 01 01 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 07_pri_read_reservation 255 5e 01 00 00 00 00 00 00 ff 00
rawcmd $D /dev/$N1 08_pri_full_status 255 5e 03 00 00 00 00 00 00 ff 00
rawcmd $D /dev/$N1 08b_pri_full_status_30 30 5e 03 00 00 00 00 00 00 1e 00
rawcmd $D /dev/$N1 08c_pri_full_status_20 20 5e 03 00 00 00 00 00 00 14 00
rawcmd $D /dev/$N2 09_n2_write10_we - --in /ws_block.bin 512 2a 00 00 06 1a 80 00 00 01 00
rawcmd $D /dev/$N2 10_n2_read10_we 512 28 00 00 06 1a 80 00 00 01 00
rawcmd $D /dev/$N2 11_n2_tur_we - 00 00 00 00 00 00
rawcmd $D /dev/$N2 11b_n2_sync_we - 35 00 00 00 00 00 00 00 00 00
rawcmd $D /dev/$N2 12_n2_register - --in /p_reg_cd.bin 24 5f 00 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N2 13_n2_preempt_ea - --in /p_preempt.bin 24 5f 04 03 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 14_n1_tur_after_preempt - 00 00 00 00 00 00
rawcmd $D /dev/$N1 14b_n1_read10_ea 512 28 00 00 06 1a 80 00 00 01 00
rawcmd $D /dev/$N2 15_n2_keys 255 $R
rawcmd $D /dev/$N2 16_n2_resv 255 5e 01 00 00 00 00 00 00 ff 00
rawcmd $D /dev/$N2 16b_n2_full_status 255 5e 03 00 00 00 00 00 00 ff 00
rawcmd $D /dev/$N2 17_n2_clear - --in /p_clear_cd.bin 24 5f 03 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N2 18_n2_keys_after_clear 255 $R
rawcmd $D /dev/$N1 19_n1_reserve6 - 16 00 00 00 00 00
rawcmd $D /dev/$N2 20_n2_tur_spc2 - 00 00 00 00 00 00
rawcmd $D /dev/$N2 21_n2_inquiry_spc2 36 12 00 00 00 24 00
rawcmd $D /dev/$N2 21b_n2_report_luns_spc2 64 a0 00 00 00 00 00 00 00 00 40 00 00
rawcmd $D /dev/$N1 22_n1_pri_keys_spc2 255 $R
rawcmd $D /dev/$N2 23_n2_release6 - 17 00 00 00 00 00
rawcmd $D /dev/$N2 23b_n2_read10_spc2 512 28 00 00 06 1a 80 00 00 01 00
rawcmd $D /dev/$N1 24_n1_release10 - 57 00 00 00 00 00 00 00 00 00
rawcmd $D /dev/$N2 25_n2_tur_after_release - 00 00 00 00 00 00
rawcmd $D /dev/$N1 26_n1_register_aptpl - --in /p_reg_aptpl.bin 24 5f 00 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 27_n1_reserve6_registered - 16 00 00 00 00 00
rawcmd $D /dev/$N1 28_n1_pro_reserve_ea_aptpl - --in /p_res_1234.bin 24 5f 01 03 00 00 00 00 00 18 00
(for f in /var/target/pr/*; do echo "== $f"; xxd $f; done) > $D/28b_aptpl_file.txt 2>&1
rawcmd $D /dev/$N1 29_pri_caps_aptpl 8 5e 02 00 00 00 00 00 00 08 00
rawcmd $D /dev/$N1 30_pro_len16 - --in /p_16.bin 16 5f 00 00 00 00 00 00 00 10 00
rawcmd $D /dev/$N1 31_pro_len32 - --in /p_32.bin 32 5f 00 00 00 00 00 00 00 20 00
rawcmd $D /dev/$N1 32_pri_bad_sa 255 5e 04 00 00 00 00 00 00 ff 00
rawcmd $D /dev/$N1 33_pro_clear - --in /p_res_1234.bin 24 5f 03 00 00 00 00 00 00 18 00
(for f in /var/target/pr/*; do echo "== $f"; xxd $f; done) > $D/33b_aptpl_file.txt 2>&1
rawcmd $D /dev/$N1 40_unmap_tpu0 - --in /unmap1.bin 24 42 00 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 41_ws16_unmap_tpws0 - --in /ws_block.bin 512 93 08 00 00 00 00 00 06 1a 80 00 00 00 08 00 00
rawcmd $D /dev/$N1 42_ws10 - --in /ws_block.bin 512 41 00 00 06 1a 80 00 00 04 00
dd if=/dev/vdb bs=512 skip=400000 count=5 2>/dev/null | xxd > $D/42b_ws10_result.txt
rawcmd $D /dev/$N1 43_ws16_zero_blocks - --in /ws_block.bin 512 93 00 00 00 00 00 00 06 1a 80 00 00 00 00 00 00
rawcmd $D /dev/$N1 44_ws16_too_many - --in /ws_block.bin 512 93 00 00 00 00 00 00 06 1a 80 00 00 10 01 00 00
rawcmd $D /dev/$N1 45_ws16_ndob - --in /ws_block.bin 512 93 01 00 00 00 00 00 06 1a 80 00 00 00 01 00 00
A=/sys/kernel/config/target/core/fileio_0/test/attrib
(echo 1 > $A/emulate_tpu; echo "tpu rc=$? $(cat $A/emulate_tpu)"; echo 1 > $A/emulate_tpws; echo "tpws rc=$? $(cat $A/emulate_tpws)"; cat $A/max_unmap_lba_count $A/max_unmap_block_desc_count $A/unmap_granularity $A/unmap_zeroes_data) > $D/46_set_tpu.txt 2>&1
rawcmd $D /dev/$N1 47_unmap_tpu1 - --in /unmap1.bin 24 42 00 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 48_unmap_two_desc - --in /unmap2.bin 40 42 00 00 00 00 00 00 00 28 00
rawcmd $D /dev/$N1 49_unmap_anchor - --in /unmap1.bin 24 42 01 00 00 00 00 00 00 18 00
rawcmd $D /dev/$N1 49b_evpd_b0_tpu 64 12 01 b0 00 40 00
rawcmd $D /dev/$N1 49c_evpd_b2_tpu 64 12 01 b2 00 40 00
rawcmd $D /dev/$N1 49d_rc16_tpu 32 9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00
rawcmd $D /dev/$N1 49e_ws16_unmap_tpws1 - --in /ws_block.bin 512 93 08 00 00 00 00 00 06 1a 80 00 00 00 08 00 00
(echo 0 > $A/emulate_tpws; echo 0 > $A/emulate_tpu; cat $A/emulate_tpu $A/emulate_tpws) >> $D/46_set_tpu.txt 2>&1
dd if=/dev/vdb bs=512 skip=400300 count=1 of=/tmp/cur.bin 2>/dev/null; cat /tmp/cur.bin /new_block.bin > /tmp/caw.bin
cp /new_block.bin /tmp/v2.bin; printf '\000' | dd of=/tmp/v2.bin bs=1 seek=300 conv=notrunc 2>/dev/null; cat /tmp/v2.bin /new_block.bin > /tmp/caw2.bin
rawcmd $D /dev/$N1 50_caw_match - --in /tmp/caw.bin 1024 89 00 00 00 00 00 00 06 1b ac 00 00 00 01 00 00
dd if=/dev/vdb bs=512 skip=400300 count=1 2>/dev/null | xxd > $D/50b_caw_result.txt
rawcmd $D /dev/$N1 51_caw_miscompare - --in /tmp/caw2.bin 1024 89 00 00 00 00 00 00 06 1b ac 00 00 00 01 00 00
rawcmd $D /dev/$N1 52_caw_nolb2 - --in /tmp/caw.bin 1024 89 00 00 00 00 00 00 06 1b ac 00 00 00 02 00 00
rawcmd $D /dev/$N1 52b_caw_short - --in /tmp/caw.bin 512 89 00 00 00 00 00 00 06 1b ac 00 00 00 01 00 00
rawcmd $D /dev/$N1 53_log_sense 255 4d 00 00 00 00 00 00 00 ff 00
rawcmd $D /dev/$N1 53b_log_sense_pc1 255 4d 00 40 00 00 00 00 00 ff 00
rawcmd $D /dev/$N1 54_rcr_op_params 256 84 03 00 00 00 00 00 00 00 00 00 00 01 00 00 00
rawcmd $D /dev/$N1 54b_rcr_copy_status 256 84 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00
rawcmd $D /dev/$N1 55_xcopy_boot_to_test - --in /xcopy.bin 108 83 00 00 00 00 00 00 00 00 00 00 00 00 6c 00 00
(dd if=/dev/vda bs=512 count=8 2>/dev/null | md5sum; dd if=/dev/vdb bs=512 skip=400200 count=8 2>/dev/null | md5sum) > $D/55b_xcopy_md5.txt
rawcmd $D /dev/$N1 56_xcopy_bad_naa - --in /xcopy_bad.bin 108 83 00 00 00 00 00 00 00 00 00 00 00 00 6c 00 00
rawcmd $D /dev/$N1 57_xcopy_lid4 - --in /xcopy.bin 108 83 01 00 00 00 00 00 00 00 00 00 00 00 6c 00 00
$DMESG | tail -n 60 > $D/99_dmesg_tail.txt
