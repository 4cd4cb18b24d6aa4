# lio-pr2: all-registrants and registrants-only reservations with their unit attentions,
# REGISTER AND MOVE, register errors, PREEMPT AND ABORT, ALL_TG_PT, UA interlock.
D=$O/lio/pr2; mkdir -p $D
T=/sys/kernel/config/target/loopback/naa.5001405000000001
{ mkdir $T/tpgt_0; echo -n naa.5001405000000003 > $T/tpgt_0/nexus; mkdir $T/tpgt_0/lun/lun_0
  ln -s /sys/kernel/config/target/core/fileio_0/test $T/tpgt_0/lun/lun_0/5eed7e5701; echo rc=$?; } > $D/00_second_nexus.txt 2>&1
n=0; while [ -z "$(hctl_sg 0:0:0:0)" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
sleep 1
mkdir -p /var/target/pr
N1=$(hctl_sg 0:0:1:1); N2=$(hctl_sg 0:0:0:0)
echo "N1=$N1 N2=$N2" >> $D/00_second_nexus.txt
R="5e 00 00 00 00 00 00 00 ff 00"; RR="5e 01 00 00 00 00 00 00 ff 00"; RF="5e 03 00 00 00 00 00 00 ff 00"
O5="00 00 00 00 00 18 00"
RD="28 00 00 06 1a 80 00 00 01 00"; WR="2a 00 00 06 1a 80 00 00 01 00"
rawcmd $D /dev/$N1 01_n1_reg_a - --in /q_reg_a.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N2 02_n2_reg_b - --in /q_reg_b.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 03_n1_reserve_wero - --in /q_key_a.bin 24 5f 01 05 $O5
rawcmd $D /dev/$N2 04_n2_write_wero_registered - --in /ws_block.bin 512 $WR
rawcmd $D /dev/$N1 05_n1_release_wrong_type - --in /q_key_a.bin 24 5f 02 01 $O5
rawcmd $D /dev/$N1 06_n1_release_wero - --in /q_key_a.bin 24 5f 02 05 $O5
rawcmd $D /dev/$N2 07_n2_tur_after_release - 00 00 00 00 00 00
rawcmd $D /dev/$N1 08_n1_reserve_eaar - --in /q_key_a.bin 24 5f 01 08 $O5
rawcmd $D /dev/$N2 09_n2_resv_eaar 255 $RR
rawcmd $D /dev/$N2 10_n2_full_eaar 255 $RF
rawcmd $D /dev/$N2 11_n2_read_eaar 512 $RD
rawcmd $D /dev/$N1 12_n1_unregister - --in /q_unreg_a.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 13_n1_read_unregistered 512 $RD
rawcmd $D /dev/$N2 14_n2_resv_after_unreg 255 $RR
rawcmd $D /dev/$N2 15_n2_full_after_unreg 255 $RF
rawcmd $D /dev/$N2 16_n2_preempt_sa0 - --in /q_preempt_b0.bin 24 5f 04 01 $O5
rawcmd $D /dev/$N2 17_n2_resv_after_preempt 255 $RR
rawcmd $D /dev/$N2 18_n2_clear - --in /q_key_b.bin 24 5f 03 00 $O5
rawcmd $D /dev/$N1 19_n1_reg_11 - --in /q_reg_11.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 20_n1_reserve_we_11 - --in /q_key_11.bin 24 5f 01 01 $O5
rawcmd $D /dev/$N1 21_n1_register_and_move - --in /q_move.bin 48 5f 07 00 00 00 00 00 00 30 00
rawcmd $D /dev/$N2 22_n2_resv_after_move 255 $RR
rawcmd $D /dev/$N2 23_n2_full_after_move 255 $RF
rawcmd $D /dev/$N1 24_n1_write_after_move - --in /ws_block.bin 512 $WR
rawcmd $D /dev/$N1 24b_n1_read_after_move 512 $RD
rawcmd $D /dev/$N2 25_n2_clear - --in /q_key_22.bin 24 5f 03 00 $O5
rawcmd $D /dev/$N1 25b_n1_tur_after_clear - 00 00 00 00 00 00
rawcmd $D /dev/$N1 26_n1_reg_31 - --in /q_reg_31.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 27_n1_register_wrong_key - --in /q_wrong_32.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 28_n1_register_spec_i_pt - --in /q_spec_31.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N2 29_n2_reserve_unregistered - --in /q_key_41.bin 24 5f 01 01 $O5
rawcmd $D /dev/$N2 30_n2_reg_41 - --in /q_reg_41.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 31_n1_reserve_we_31 - --in /q_key_31.bin 24 5f 01 01 $O5
rawcmd $D /dev/$N2 35_n2_clear - --in /q_key_41.bin 24 5f 03 00 $O5
rawcmd $D /dev/$N1 35b_n1_tur - 00 00 00 00 00 00
rawcmd $D /dev/$N1 36_n1_reg_all_tg_pt - --in /q_reg_atp.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 37_n1_full_all_tg_pt 255 $RF
rawcmd $D /dev/$N1 38_n1_unreg_without_atp - --in /q_key_51.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 39_n1_clear - --in /q_key_51.bin 24 5f 03 00 $O5
A=/sys/kernel/config/target/core/fileio_0/test/attrib
(echo 2 > $A/emulate_ua_intlck_ctrl; echo "rc=$? $(cat $A/emulate_ua_intlck_ctrl)") > $D/40_set_intlck.txt 2>&1
rawcmd $D /dev/$N1 41_n1_reserve6 - 16 00 00 00 00 00
rawcmd $D /dev/$N2 42_n2_tur_conflict - 00 00 00 00 00 00
rawcmd $D /dev/$N2 43_n2_tur_ua_pending - 00 00 00 00 00 00
rawcmd $D /dev/$N2 44_n2_tur_again - 00 00 00 00 00 00
rawcmd $D /dev/$N2 45_n2_request_sense 18 03 00 00 00 12 00
rawcmd $D /dev/$N1 46_n1_release6 - 17 00 00 00 00 00
rawcmd $D /dev/$N2 47_n2_tur_released - 00 00 00 00 00 00
(echo 0 > $A/emulate_ua_intlck_ctrl; cat $A/emulate_ua_intlck_ctrl) >> $D/40_set_intlck.txt 2>&1
# last: PREEMPT AND ABORT, in the background (it hung the guest in a first attempt)
rawcmd $D /dev/$N2 50_n2_reg_41 - --in /q_reg_41.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 51_n1_reg_31 - --in /q_reg_31.bin 24 5f 00 00 $O5
rawcmd $D /dev/$N1 52_n1_reserve_we_31 - --in /q_key_31.bin 24 5f 01 01 $O5
( rawcmd $D /dev/$N2 53_n2_preempt_and_abort - --in /q_pa_41_31.bin 24 5f 05 01 $O5; echo finished > $D/53b_pa_finished.txt ) &
sleep 8
[ -f $D/53b_pa_finished.txt ] || echo "PREEMPT AND ABORT did not complete within 8 s" > $D/53b_pa_finished.txt
$DMESG | tail -n 60 > $D/99_dmesg_tail.txt
