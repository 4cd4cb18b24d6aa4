"""Buffered reads of a block device: the page cache and its read-ahead (mm/filemap.c
filemap_read, mm/readahead.c ondemand_readahead).

A guest program that opens /dev/sdX without O_DIRECT (udevd's blkid builtin, dd without
iflag=direct) never sends its own read sizes to the disk: a read finds its pages in the block
device's page cache or makes the read-ahead fetch them, one READ per run of missing pages, in
windows that start at 4 pages and ramp up to the disk's read_ahead_kb for a sequential reader,
while a small random read fetches just its own pages. A file advised POSIX_FADV_RANDOM (libblkid
advises it on every block device it probes) reads only the pages each read covers. The disk's
stat and CDB trace show those READs, and a probe that reads the same superblock areas twice
sends them once.

Pages are read whole (block_read_full_folio) through _bio, a failed read-ahead leaves its pages
out (the read that needs one of them reads that page alone and fails with EIO if it fails
again), and the block device mappings have no large folios, so page_cache_ra_order always
falls back to do_page_cache_ra.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from vscsifs.scsi.kernel.block._bio import bdev_block_size, bdev_check_live, bdev_read
from vscsifs.scsi.kernel.block._blkdev import AddressSpace, BlockDevice
from vscsifs.scsi.kernel.block._limits import PAGE_SHIFT, PAGE_SIZE

_ULONG_MASK = (1 << 64) - 1
FORCE_RA_CHUNK = (2 * 1024 * 1024) // PAGE_SIZE   # force_page_cache_ra's 2 MiB units


@dataclass(eq=False, slots=True)
class FileRaState:
    """struct file_ra_state of one open file (file_ra_state_init: the bdi's ra_pages, no
    previous read), and whether the file is FMODE_RANDOM (posix_fadvise POSIX_FADV_RANDOM:
    a miss reads only the pages the read covers, no window)."""

    ra_pages: int
    random: bool = False
    start: int = 0
    size: int = 0
    async_size: int = 0
    prev_pos: int = -1


def page_cache_open(bdev: BlockDevice, random: bool = False) -> FileRaState:
    """A buffered open of ``bdev`` (``random``: its opener advises POSIX_FADV_RANDOM, as
    libblkid does on every block device it probes): the file's read-ahead state; the mapping
    lives until the matching page_cache_release()."""
    bdev.mapping.users += 1
    return FileRaState(ra_pages=bdev.disk.bdi.current_ra_pages(), random=random)


def page_cache_release(bdev: BlockDevice) -> None:
    """The close of a buffered open: the last one empties the mapping (kill_bdev)."""
    mapping = bdev.mapping
    mapping.users = max(0, mapping.users - 1)
    if not mapping.users:
        mapping.truncate()


def _get_init_ra_size(size: int, max_pages: int) -> int:
    newsize = 1 << (size - 1).bit_length() if size > 1 else 1     # roundup_pow_of_two
    if newsize <= max_pages // 32:
        return newsize * 4
    if newsize <= max_pages // 4:
        return newsize * 2
    return max_pages


def _get_next_ra_size(ra: FileRaState, max_pages: int) -> int:
    cur = ra.size
    if cur < max_pages // 16:
        return 4 * cur
    if cur <= max_pages // 2:
        return 2 * cur
    return max_pages


def _next_miss(mapping: AddressSpace, index: int, max_scan: int) -> int:
    """page_cache_next_miss(): the first absent index from ``index`` on, or one past the
    scanned range."""
    for i in range(index, index + max_scan):
        if i not in mapping.pages:
            return i
    return index + max_scan


def _prev_miss(mapping: AddressSpace, index: int, max_scan: int) -> int:
    """page_cache_prev_miss(): the first absent index from ``index`` down, or one before the
    scanned range."""
    for i in range(index, index - max_scan, -1):
        if i < 0 or i not in mapping.pages:
            return i
    return index - max_scan


async def block_read_full_folio(bdev: BlockDevice, index: int) -> bytes | None:
    """blkdev_read_folio -> block_read_full_folio(): page ``index`` of the whole disk ``bdev``,
    one bio per buffer of the page cache's block size (set_init_blocksize: the whole page,
    unless the disk's size is not a multiple of it) and none for the blocks past the end, which
    read as zeroes; None when any buffer failed."""
    bs = min(bdev_block_size(bdev), PAGE_SIZE)
    base = index * PAGE_SIZE
    page = bytearray(PAGE_SIZE)
    size = bdev.size_bytes
    for off in range(0, PAGE_SIZE, bs):
        if base + off >= size:
            break
        try:
            data = await bdev_read(bdev, base + off, bs)
        except OSError:
            return None
        page[off:off + len(data)] = data
    return bytes(page)


async def read_mapping_page(bdev: BlockDevice, index: int) -> bytes | None:
    """read_mapping_folio() on the whole disk ``bdev``: the cached page, else read, and kept
    while a buffered open holds the mapping (its last close empties it, as kill_bdev does)."""
    mapping = bdev.mapping
    page = mapping.pages.get(index)
    if page is None:
        page = await block_read_full_folio(bdev, index)
        if page is not None and mapping.users:
            mapping.add(index, page)
    return page


async def _read_pages(bdev: BlockDevice, first: int, count: int, mark: int) -> None:
    """read_pages(): one run of absent pages read whole (bdev_read stops the last page at the
    device's last whole block; the rest of it is zeroes); a failed read adds nothing."""
    try:
        data = await bdev_read(bdev, first << PAGE_SHIFT, count << PAGE_SHIFT)
    except OSError:
        return
    if not data:
        return
    mapping = bdev.mapping
    for i in range(count):
        page = bytes(data[i << PAGE_SHIFT:(i + 1) << PAGE_SHIFT])
        mapping.add(first + i, page.ljust(PAGE_SIZE, b"\0"), first + i == mark)


async def _page_cache_ra_unbounded(bdev: BlockDevice, index: int, nr_to_read: int, lookahead: int) -> None:
    """Read the absent pages of [index, index + nr_to_read), a READ per contiguous run; the
    page ``lookahead`` from the end gets PG_readahead if this call adds it."""
    pages = bdev.mapping.pages
    mark = index + nr_to_read - lookahead if lookahead else -1
    run = 0
    for i in range(index, index + nr_to_read):
        if i in pages:
            if run:
                await _read_pages(bdev, i - run, run, mark)
                run = 0
            continue
        run += 1
    if run:
        await _read_pages(bdev, index + nr_to_read - run, run, mark)


async def _do_page_cache_ra(bdev: BlockDevice, index: int, nr_to_read: int, lookahead: int) -> None:
    """do_page_cache_ra(): nothing past the page holding the device's last byte."""
    isize = bdev.size_bytes
    if not isize:
        return
    end_index = (isize - 1) >> PAGE_SHIFT
    if index > end_index:
        return
    nr_to_read = min(nr_to_read, end_index - index + 1)
    await _page_cache_ra_unbounded(bdev, index, nr_to_read, lookahead)


async def _force_page_cache_ra(bdev: BlockDevice, ra: FileRaState, index: int, nr_to_read: int) -> None:
    nr_to_read = min(nr_to_read, max(bdev.disk.bdi.io_pages, ra.ra_pages))
    while nr_to_read:
        chunk = min(FORCE_RA_CHUNK, nr_to_read)
        await _do_page_cache_ra(bdev, index, chunk, 0)
        index += chunk
        nr_to_read -= chunk


async def _ondemand_readahead(bdev: BlockDevice, ra: FileRaState, index: int, marked: bool, req_size: int) -> None:
    """ondemand_readahead(): ``marked`` when a PG_readahead page was hit (the async call)."""
    mapping = bdev.mapping
    max_pages = ra.ra_pages
    io_pages = bdev.disk.bdi.io_pages
    if req_size > max_pages and io_pages > max_pages:
        max_pages = min(req_size, io_pages)
    initial = index == 0
    if not initial:
        if index == ra.start + ra.size - ra.async_size or index == ra.start + ra.size:
            # the expected index: a sequential reader, push the window forward
            ra.start += ra.size
            ra.size = max(ra.size, _get_next_ra_size(ra, max_pages))
            ra.async_size = ra.size
        elif marked:
            # a marked page without matching state (interleaved readers): ramp up from what
            # the cache holds after it
            start = _next_miss(mapping, index + 1, max_pages)
            if not start or start - index > max_pages:
                return
            ra.start = start
            ra.size = start - index + req_size
            ra.size = _get_next_ra_size(ra, max_pages)
            ra.async_size = ra.size
        elif req_size > max_pages:
            initial = True                      # an oversize read
        elif (index - ((ra.prev_pos & _ULONG_MASK) >> PAGE_SHIFT)) & _ULONG_MASK <= 1:
            initial = True                      # a sequential cache miss
        else:
            # try_context_readahead(): cached history pages before it make it a stream
            history = index - 1 - _prev_miss(mapping, index - 1, max_pages)
            if history <= req_size:
                # a standalone small random read: read as is, keep the state
                await _do_page_cache_ra(bdev, index, req_size, 0)
                return
            if history >= index:
                history *= 2
            ra.start = index
            ra.size = min(history + req_size, max_pages)
            ra.async_size = 1
    if initial:
        ra.start = index
        ra.size = _get_init_ra_size(req_size, max_pages)
        ra.async_size = ra.size - req_size if ra.size > req_size else ra.size
    # will this read hit its own marker? merge the next window into this one
    if index == ra.start and ra.size == ra.async_size:
        add_pages = _get_next_ra_size(ra, max_pages)
        if ra.size + add_pages <= max_pages:
            ra.async_size = add_pages
            ra.size += add_pages
        else:
            ra.size = max_pages
            ra.async_size = max_pages >> 1
    await _do_page_cache_ra(bdev, ra.start, ra.size, ra.async_size)


async def page_cache_sync_ra(bdev: BlockDevice, ra: FileRaState, index: int, req_count: int) -> None:
    """A read missed the cache at ``index``: read ahead; read only the request's pages for an
    FMODE_RANDOM file, only its first page when read-ahead is off."""
    if not ra.ra_pages:
        await _force_page_cache_ra(bdev, ra, index, 1)
    elif ra.random:
        await _force_page_cache_ra(bdev, ra, index, req_count)
    else:
        await _ondemand_readahead(bdev, ra, index, False, req_count)


async def page_cache_async_ra(bdev: BlockDevice, ra: FileRaState, index: int, req_count: int) -> None:
    """A read reached the PG_readahead page ``index``: fetch the next window before it is needed."""
    if not ra.ra_pages:
        return
    bdev.mapping.readahead.discard(index)
    await _ondemand_readahead(bdev, ra, index, True, req_count)


def _get_read_batch(mapping: AddressSpace, index: int, last: int) -> list[tuple[int, bytes]]:
    """filemap_get_read_batch(): the cached pages from ``index`` on, up to the first gap or
    the first page marked PG_readahead (included)."""
    batch: list[tuple[int, bytes]] = []
    pages, marked = mapping.pages, mapping.readahead
    for i in range(index, last + 1):
        page = pages.get(i)
        if page is None:
            break
        batch.append((i, page))
        if i in marked:
            break
    return batch


async def _get_pages(bdev: BlockDevice, ra: FileRaState, pos: int, count: int) -> list[tuple[int, bytes]]:
    """filemap_get_pages(): the next batch of pages for the read at ``pos``."""
    mapping = bdev.mapping
    index = pos >> PAGE_SHIFT
    last_index = -(-(pos + count) // PAGE_SIZE)
    batch = _get_read_batch(mapping, index, last_index - 1)
    if not batch:
        await page_cache_sync_ra(bdev, ra, index, last_index - index)
        batch = _get_read_batch(mapping, index, last_index - 1)
    if not batch:
        # filemap_create_folio(): read this one page alone; its failure is the read's
        await _read_pages(bdev, index, 1, -1)
        page = mapping.pages.get(index)
        if page is None:
            raise OSError(errno.EIO, f"{bdev.name}: I/O error reading page {index}")
        return [(index, page)]
    last = batch[-1][0]
    if last in mapping.readahead:
        await page_cache_async_ra(bdev, ra, last, last_index - last)
    return batch


async def filemap_read(bdev: BlockDevice, ra: FileRaState, pos: int, count: int) -> bytes:
    """read() on a buffered open of ``bdev``: ``count`` bytes at ``pos`` from the page cache,
    short at the end of the device; an error after some bytes were copied makes a short read."""
    bdev_check_live(bdev)
    if pos < 0 or count < 0:
        raise OSError(errno.EINVAL, f"{bdev.name}: negative offset or length")
    out = bytearray()
    while count > 0 and pos < bdev.size_bytes:
        try:
            batch = await _get_pages(bdev, ra, pos, count)
        except OSError:
            if out:
                break
            raise
        end = min(bdev.size_bytes, pos + count)
        for index, page in batch:
            page_pos = index << PAGE_SHIFT
            if end <= page_pos:
                break
            off = pos - page_pos
            n = min(end - pos, PAGE_SIZE - off)
            out += page[off:off + n]
            pos += n
            count -= n
            ra.prev_pos = pos
        if pos >= end:
            break
    return bytes(out)
