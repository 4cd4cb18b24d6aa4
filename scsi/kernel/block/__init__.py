"""Driver side: the block layer under sd (block/: blk-mq tag sets and queues, gendisk,
partitions, queue limits, I/O statistics and their sysfs files).

Modules: _blk_types (request/ops contract), _limits (queue_limits, blk-settings setters),
_blk_mq (tag sets, hctxs, queues, request alloc/dispatch/completion), _stat (I/O accounting),
_blkdev (the gendisk/block_device types), _bio (byte-range I/O on disks and partitions),
_filemap (buffered reads: the page cache and its read-ahead), _partitions (msdos/GPT parsing), _genhd (registering disks and partitions, bdi, opens, /proc
texts), _blk_sysfs (queue/, mq/, disk attrs), _null_blk (a memory-backed blk-mq driver for running the layer without SCSI under it).
"""

from vscsifs.scsi.kernel.base._fops import FMODE_READ, FMODE_WRITE
from vscsifs.scsi.kernel.block._bio import (bdev_block_size, bdev_discard, bdev_flush, bdev_read, bdev_read_view, bdev_write, bdev_zeroout, bio_split_discard,
                   bio_split_rw)
from vscsifs.scsi.kernel.block._blk_mq import (BlkEhTimerReturn, BlkMqFlag, BlkMqHwCtx, BlkMqReqFlag, BlkMqTags, BlkMqTagSet, RequestQueue,
                      blk_execute_rq, blk_execute_rq_nowait, blk_mq_alloc_request, blk_mq_alloc_tag_set,
                      blk_mq_complete_request, blk_mq_destroy_queue, blk_mq_end_request, blk_mq_free_request,
                      blk_mq_free_tag_set, blk_mq_init_queue, blk_mq_map_queues, blk_mq_requeue_request,
                      blk_mq_rq_from_tag, blk_mq_start_request, blk_mq_unique_tag, blk_mq_update_nr_requests,
                      blk_mq_virtio_map_queues, blk_status_to_errno, elevator_switch)
from vscsifs.scsi.kernel.block._blk_types import SECTOR_SHIFT, SECTOR_SIZE, BlkMqOps, BlkStatus, ReqFlag, ReqOp, Request
from vscsifs.scsi.kernel.block._blkdev import (DISK_EVENT_FLAG_POLL, DISK_EVENT_FLAG_UEVENT, BackingDevInfo,
                                               BlockDeviceOperations)
from vscsifs.scsi.kernel.block._genhd import (BLOCK_EXT_MAJOR, DISK_EVENT_EJECT_REQUEST,
                     DISK_EVENT_MEDIA_CHANGE, GENHD_FL_HIDDEN, GENHD_FL_NO_PART,
                     GENHD_FL_REMOVABLE, BlockDevice, Gendisk,
                     add_partition, bdev_disk_changed, blkdev_get, blkdev_put, blkdev_reread_part,
                     disk_check_media_change, bdev_read_only, blk_drop_partitions, blk_mq_alloc_disk,
                     blk_mq_alloc_disk_for_queue, del_gendisk, delete_partition, device_add_disk,
                     disk_scan_partitions, disk_update_readahead, genhd_device_init, get_disk_ro, proc_devices_text,
                     proc_diskstats_text, proc_partitions_text, register_blkdev, set_capacity,
                     set_capacity_and_notify, set_disk_ro, unregister_blkdev)
from vscsifs.scsi.kernel.block._limits import (BlkZoned, QueueFlag, QueueLimits, blk_queue_alignment_offset, blk_queue_bounce_limit,
                      blk_queue_chunk_sectors, blk_queue_dma_alignment, blk_queue_flag_clear, blk_queue_flag_set,
                      blk_queue_flag_test, blk_queue_io_min, blk_queue_io_opt, blk_queue_logical_block_size,
                      blk_queue_max_discard_sectors, blk_queue_max_discard_segments, blk_queue_max_hw_sectors,
                      blk_queue_max_secure_erase_sectors, blk_queue_max_segment_size, blk_queue_max_segments,
                      blk_queue_max_write_zeroes_sectors, blk_queue_max_zone_append_sectors,
                      blk_queue_physical_block_size, blk_queue_rq_timeout, blk_queue_segment_boundary,
                      blk_queue_set_zoned, blk_queue_update_dma_alignment, blk_queue_virt_boundary,
                      blk_queue_write_cache, blk_queue_zone_write_granularity, blk_queue_zoned_model,
                      blk_set_default_limits)
from vscsifs.scsi.kernel.block._filemap import FileRaState, filemap_read, page_cache_open, page_cache_release
from vscsifs.scsi.kernel.block._null_blk import Completion, NullBlk
from vscsifs.scsi.kernel.block._partitions import ParsedPartitions, PartitionMetaInfo, check_partition, efi_partition, msdos_partition
from vscsifs.scsi.kernel.block._stat import DiskStats, StatGroup

# the QUEUE_FLAG_* names as module constants, as drivers spell them (blk_queue_flag_set(QUEUE_FLAG_NONROT, q))
globals().update({f.name: f for f in QueueFlag})

__all__ = [name for name in dir() if not name.startswith("_")]
