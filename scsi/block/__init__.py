"""Driver side: the block layer under sd (block/: blk-mq tag sets and queues, gendisk,
partitions, queue limits, I/O statistics and their sysfs files)."""
