//! Appending an upload's bytes to its file.
//!
//! A request's bytes go into the file through the page cache, and every
//! [`WINDOW`] of them the kernel is told to start writing that window to the disk at
//! once (`sync_file_range`); two windows are written at a time, and the one before
//! them is waited for and then dropped from the cache, even when it is an earlier
//! request's. So a request is answered as soon as its last
//! bytes are in the kernel's hands (a crash of the process loses none of them; making
//! them durable is the `fsync` that publishing does, which then finds little left to
//! write), the disk writes while the bytes arrive, and an upload does not fill the
//! cache with bytes nobody reads before it is published. A client that sends an
//! upload as many requests, each its own connection or even process, needs exactly
//! this: written directly, every 8 MiB PATCH waited after its last byte for its last
//! buffer to reach the disk.
//!
//! The page cache costs CPU per byte, though (allocating, writing back and freeing
//! every page), which a long request, limited by the CPU rather than by waiting,
//! feels. A request that has appended [`DIRECT_AFTER`] bytes therefore goes on, where
//! the filesystem allows it (Linux, not tmpfs), with `O_DIRECT`: the bytes go from
//! one reused, aligned buffer straight to the disk.
//!
//! Direct I/O needs the memory address, file offset and length of every write aligned
//! to the device's block size. Appends start anywhere, so the block the file ends in
//! is read back into the buffer first and rewritten whole; a short last block is
//! padded with zeros and the file then truncated to its true length.
//!
//! The disk is given big writes, one after the other without a gap: the append's own
//! thread writes each full buffer while the next ones fill, and always has the next
//! one queued when it finishes one ([`QUEUED_WRITES`]). Waiting for a buffer to
//! come back before handing over the next put two thread wake-ups between any two
//! writes, and on a 2-core machine busy hashing and receiving, each wake-up waited
//! for a core: the disk then idled between writes, and a single-request upload was
//! as slow as the disk's writes and those gaps together.
//!
//! A request that announces its length (a `Content-Length`) writes its last buffer in
//! [`TAIL_WRITE`] pieces as it fills, so that once its last byte has arrived only a
//! piece is left to write, not up to a whole buffer (8 MiB took 4-6 ms here, the
//! disk's answer then stood between the last byte and the client's answer).
//!
//! A direct append holds up to three 8 MiB buffers, so only [`DIRECT_MAX`] appends run
//! directly at once; the others stay in the page cache, so that many clients pushing
//! at once do not cost the server 24 MiB each.

use std::fs::File;

/// Alignment of direct writes: the largest logical block size in common use.
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write: the disk takes fewer, larger writes
/// faster. With 4 MiB buffers (three queued), a 256 MiB upload ran 9 % slower
/// (`bench/put_ab.py`, medians of 25 rounds).
const DIRECT_BUFFER: usize = 8 * 1024 * 1024;
/// Full buffers handed to an append's writer thread and not yet back: the one it
/// writes and the one it writes next. With one, a 256 MiB upload ran 5 % slower
/// (`bench/put_ab.py`, medians of 21 rounds).
const QUEUED_WRITES: usize = 2;
/// Bytes of a direct write once the announced end is less than a buffer away.
const TAIL_WRITE: usize = 2 * 1024 * 1024;
/// Bytes of one request written through the page cache before it goes on directly.
const DIRECT_AFTER: u64 = 16 * 1024 * 1024;
/// Bytes handed to the disk's writeback at a time, from the page cache.
const WINDOW: u64 = 4 * 1024 * 1024;
/// Bytes of an upload being written back at once at most (not yet waited for).
const IN_FLIGHT: u64 = 2 * WINDOW;
/// Appends written directly at once at most (each holds up to three `DIRECT_BUFFER`s,
/// so 96 MiB in all). Four keep a 2-core machine's disk busy; with eight (and 4 MiB
/// buffers), 50 clients pushing at once had ten buffers resident at a peak RSS of
/// 168 MiB.
const DIRECT_MAX: usize = 4;
/// The places for direct appends (a permit each, given back when the append ends).
static DIRECT_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DIRECT_MAX);

/// A direct append's place among the `DIRECT_MAX`.
type DirectSlot = tokio::sync::SemaphorePermit<'static>;

pub(crate) enum Appender {
    Cached(Cached),
    Direct(DirectAppender),
}

impl Appender {
    /// Open `path` for appending at its current end; `length` is how many bytes the
    /// append is announced to bring, if known (it only shapes the writes). Returns
    /// the appender and the file's current size.
    pub(crate) fn open(
        path: &std::path::Path,
        length: Option<u64>,
    ) -> std::io::Result<(Appender, u64)> {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let size = file.metadata()?.len();
        // Appends go through the file's cursor, which the vectored write has.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(size))?;
        let cached = Cached {
            path: path.to_owned(),
            file,
            size,
            // The request before this one left its last windows being written; they
            // are waited for as this one's first windows start.
            started: size,
            settled: size.saturating_sub(IN_FLIGHT),
            direct_after: size + DIRECT_AFTER,
            end: length.and_then(|n| size.checked_add(n)),
        };
        Ok((Appender::Cached(cached), size))
    }

    #[cfg(test)]
    pub(crate) fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_parts(&[data])
    }

    /// Append `parts`, one after the other. Through the page cache they go in one
    /// vectored write: a body arrives in chunks of 64-400 KiB, and a write call per
    /// chunk cost a system call each and, on a journalling filesystem, the inode's
    /// time update each.
    pub(crate) fn write_parts<B: AsRef<[u8]>>(&mut self, parts: &[B]) -> std::io::Result<()> {
        match self {
            Appender::Cached(c) => {
                c.write_parts(parts)?;
                if c.size >= c.direct_after {
                    if let Some(direct) = c.go_direct()? {
                        *self = Appender::Direct(direct);
                    }
                }
                Ok(())
            }
            Appender::Direct(d) => {
                for part in parts {
                    let mut data = part.as_ref();
                    while !data.is_empty() {
                        let n = d.take(data);
                        data = &data[n..];
                        if d.len >= d.limit() {
                            d.write_buffer()?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Write out everything gathered, leaving the file exactly as long as the bytes
    /// appended: they are the kernel's then (in its cache or on the disk). Making them
    /// durable is `fsync`'s job.
    pub(crate) fn finish(self) -> std::io::Result<()> {
        match self {
            Appender::Cached(c) => c.finish(),
            Appender::Direct(d) => d.finish(),
        }
    }
}

/// Appending through the page cache, its writeback started window by window.
pub(crate) struct Cached {
    path: std::path::PathBuf,
    file: File,
    size: u64,
    /// Bytes before this are being written back (or were).
    started: u64,
    /// Bytes before this are written back and dropped from the cache.
    settled: u64,
    /// Where to try going on directly (moved on when no direct slot is free).
    direct_after: u64,
    /// Where the append is announced to end, if known.
    end: Option<u64>,
}

impl Cached {
    fn write_parts<B: AsRef<[u8]>>(&mut self, parts: &[B]) -> std::io::Result<()> {
        use std::io::{IoSlice, Write};
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p.as_ref())).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            // At most the system's limit of parts a call (`IOV_MAX`) goes at once.
            let n = match self.file.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.size += n as u64;
            IoSlice::advance_slices(&mut rest, n);
        }
        while self.size - self.started >= WINDOW {
            writeback::start(&self.file, self.started, WINDOW)?;
            self.started += WINDOW;
            // The next window fills while the last two are written; the one before
            // them is waited for. So a request never waits for its own last bytes to
            // reach the disk: an 8 MiB PATCH is answered as soon as it is in the
            // cache, and the next PATCH of the upload waits for it if the disk is
            // still behind.
            while self.started - self.settled > IN_FLIGHT {
                writeback::wait(&self.file, self.settled, WINDOW)?;
                writeback::uncache(&self.file, self.settled, WINDOW);
                self.settled += WINDOW;
            }
        }
        Ok(())
    }

    /// The same append going on directly, if a direct slot is free and the
    /// filesystem has direct I/O.
    fn go_direct(&mut self) -> std::io::Result<Option<DirectAppender>> {
        self.direct_after = self.size + DIRECT_AFTER;
        #[cfg(target_os = "linux")]
        if let Ok(slot) = DIRECT_SLOTS.try_acquire() {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
            {
                Ok(file) => {
                    self.start_rest()?;
                    return DirectAppender::new(file, self.size, self.end, slot).map(Some);
                }
                // EINVAL: this filesystem has no direct I/O (tmpfs); stay cached.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_after = u64::MAX;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Start writing back what is not yet on its way.
    fn start_rest(&mut self) -> std::io::Result<()> {
        if self.size > self.started {
            writeback::start(&self.file, self.started, self.size - self.started)?;
            self.started = self.size;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.start_rest()
    }
}

/// The page cache's writeback of a file's byte range, started, waited for, and the
/// range dropped from the cache. Linux has calls for each; elsewhere they do nothing
/// and the `fsync` that publishes an upload writes it all.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod writeback {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    /// A byte range as the system calls take it.
    fn range(offset: u64, len: u64) -> Option<(i64, i64)> {
        Some((i64::try_from(offset).ok()?, i64::try_from(len).ok()?))
    }

    fn sync_file_range(file: &File, offset: u64, len: u64, flags: u32) -> std::io::Result<()> {
        let Some((offset, len)) = range(offset, len) else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        };
        // SAFETY: plain integers only; the descriptor stays open for the call, as
        // `file` is borrowed.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if unsupported(&e) {
            // This filesystem cannot write back a range; the `fsync` at publishing
            // writes it all, as it would anyway.
            return Ok(());
        }
        Err(e)
    }

    /// An error that says the filesystem has no range writeback, not that writing
    /// failed (a failed write is EIO or ENOSPC, and fails the append).
    pub(super) fn unsupported(e: &std::io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ESPIPE | libc::ENOSYS | libc::EOPNOTSUPP)
        )
    }

    /// Start writing the range's dirty pages to the disk; does not wait.
    pub(super) fn start(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
        sync_file_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE)
    }

    /// Wait until the range's pages are written (those not yet started are started).
    pub(super) fn wait(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
        sync_file_range(
            file,
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    /// Drop the range's clean pages from the cache. Advice only: the kernel keeps
    /// every page not yet written, so nothing is lost however this goes.
    pub(super) fn uncache(file: &File, offset: u64, len: u64) {
        let Some((offset, len)) = range(offset, len) else {
            return;
        };
        // SAFETY: as above.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
mod writeback {
    use std::fs::File;

    pub(super) fn start(_: &File, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }

    pub(super) fn wait(_: &File, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }

    pub(super) fn uncache(_: &File, _: u64, _: u64) {}
}

/// `DIRECT_BUFFER` bytes whose address is aligned for direct I/O.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
}

/// Buffers kept for the next appends. A fresh buffer is mapped memory whose every
/// page faults (and is zeroed) on first touch, and unmapped again when dropped: for a
/// client that sends an upload as many small PATCHes, each one its own request, that
/// was a cost paid on every chunk.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Buffers kept at most (each `DIRECT_BUFFER`, resident).
const SPARE_MAX: usize = 2;

impl Aligned {
    fn new() -> std::io::Result<Self> {
        let spare = SPARE.lock().ok().and_then(|mut s| s.pop());
        let storage = spare.unwrap_or_else(|| vec![0u8; DIRECT_BUFFER + ALIGN]);
        let start = storage.as_ptr().align_offset(ALIGN);
        if start >= ALIGN {
            return Err(std::io::Error::other("cannot align the direct I/O buffer"));
        }
        Ok(Aligned { storage, start })
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + DIRECT_BUFFER]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + DIRECT_BUFFER]
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // Only what is written is ever read back (a short last block is zero-padded
        // before it is written), so old contents never leak into a file.
        if let Ok(mut spare) = SPARE.lock() {
            if spare.len() < SPARE_MAX {
                spare.push(std::mem::take(&mut self.storage));
            }
        }
    }
}

/// A full buffer on its way to the disk.
struct Job {
    buffer: Aligned,
    len: usize,
    offset: u64,
}

/// The thread that writes full buffers while the next ones fill (hashing and
/// copying on one core, the disk busy meanwhile). Started at the first full buffer,
/// so small appends never start it.
struct Writer {
    jobs: std::sync::mpsc::SyncSender<Job>,
    done: std::sync::mpsc::Receiver<std::io::Result<Aligned>>,
    in_flight: usize,
}

impl Writer {
    fn start(file: File) -> Writer {
        use std::os::unix::fs::FileExt;
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUED_WRITES);
        let (report, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for job in queue {
                let written = file
                    .write_all_at(&job.buffer.bytes()[..job.len], job.offset)
                    .map(|()| job.buffer);
                if report.send(written).is_err() {
                    return;
                }
            }
        });
        Writer {
            jobs,
            done,
            in_flight: 0,
        }
    }

    /// A buffer back from a finished write, or that write's error.
    fn wait(&mut self) -> std::io::Result<Aligned> {
        let written = self
            .done
            .recv()
            .map_err(|_| std::io::Error::other("the upload writer thread stopped"))?;
        self.in_flight -= 1;
        written
    }
}

pub(crate) struct DirectAppender {
    file: File,
    current: Aligned,
    /// Bytes of `current` in use; they belong at `file_offset` onwards.
    len: usize,
    file_offset: u64,
    /// The file's true length: everything appended so far.
    size: u64,
    /// Where the append is announced to end, if known.
    end: Option<u64>,
    /// Writes the other of the (at most) two buffers while `current` fills.
    writer: Option<Writer>,
    _slot: DirectSlot,
}

impl DirectAppender {
    /// Go on appending to `file`, now `size` bytes long, announced to end at `end`.
    fn new(file: File, size: u64, end: Option<u64>, slot: DirectSlot) -> std::io::Result<Self> {
        let mut d = DirectAppender {
            file,
            current: Aligned::new()?,
            len: 0,
            file_offset: size - size % ALIGN as u64,
            size,
            end,
            writer: None,
            _slot: slot,
        };
        let tail = (size % ALIGN as u64) as usize;
        if tail > 0 {
            // The file ends inside a block: read that block back to rewrite it whole.
            // One aligned read of the whole block: it stops short at the end of file.
            use std::os::unix::fs::FileExt;
            let block = &mut d.current.bytes_mut()[..ALIGN];
            let got = d.file.read_at(block, d.file_offset)?;
            if got < tail {
                return Err(std::io::Error::other(format!(
                    "read {got} of the last block's {tail} bytes back"
                )));
            }
            d.len = tail;
        }
        Ok(d)
    }

    /// Bytes to gather in `current` before it is written: all of it, or a
    /// `TAIL_WRITE` piece once the announced end is less than a buffer away. Changes
    /// only when a write moves `file_offset` on, so `len` never exceeds it.
    fn limit(&self) -> usize {
        match self.end {
            Some(end) if end.saturating_sub(self.file_offset) < DIRECT_BUFFER as u64 => TAIL_WRITE,
            _ => DIRECT_BUFFER,
        }
    }

    /// Copy as much of `data` as fits before the limit; returns how much.
    fn take(&mut self, data: &[u8]) -> usize {
        let at = self.len;
        let n = data.len().min(self.limit().saturating_sub(at));
        self.current.bytes_mut()[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        self.size += n as u64;
        n
    }

    /// Hand the buffer (filled to its limit) to the writer thread and go on with an
    /// empty one.
    fn write_buffer(&mut self) -> std::io::Result<()> {
        if self.writer.is_none() {
            self.writer = Some(Writer::start(self.file.try_clone()?));
        }
        let writer = self.writer.as_mut().expect("started above");
        let next = if writer.in_flight < QUEUED_WRITES {
            Aligned::new()?
        } else {
            writer.wait()?
        };
        let job = Job {
            buffer: std::mem::replace(&mut self.current, next),
            len: self.len,
            offset: self.file_offset,
        };
        writer
            .jobs
            .send(job)
            .map_err(|_| std::io::Error::other("the upload writer thread stopped"))?;
        writer.in_flight += 1;
        self.file_offset += self.len as u64;
        self.len = 0;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            while writer.in_flight > 0 {
                writer.wait()?;
            }
        }
        if self.len == 0 {
            return Ok(());
        }
        // Pad the last block with zeros, write it whole, then cut the padding off.
        use std::os::unix::fs::FileExt;
        let padded = self.len.div_ceil(ALIGN) * ALIGN;
        let len = self.len;
        self.current.bytes_mut()[len..padded].fill(0);
        self.file
            .write_all_at(&self.current.bytes()[..padded], self.file_offset)?;
        self.file.set_len(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(path: &std::path::Path, parts: &[&[u8]]) -> u64 {
        let (mut a, _) = Appender::open(path, None).unwrap();
        for p in parts {
            a.write_all(p).unwrap();
        }
        a.finish().unwrap();
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn appends_of_any_length_at_any_offset_keep_every_byte() {
        // The test's temp dir is usually on a disk (direct I/O); on tmpfs this
        // exercises the plain path, which must agree too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::File::create(&path).unwrap();
        let mut expected = Vec::new();
        let pattern = |n: usize, seed: u8| -> Vec<u8> {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        let sizes = [
            1usize,
            4095,
            4096,
            4097,
            10,
            DIRECT_BUFFER + 3,
            0,
            12_345,
            3 * DIRECT_BUFFER + 4096,
            // Long enough to go on directly part-way, from a file ending inside a block.
            DIRECT_AFTER as usize + DIRECT_BUFFER + 4097,
            // Every buffer in use at once: two queued for the writer, one filling.
            DIRECT_AFTER as usize + (QUEUED_WRITES + 1) * DIRECT_BUFFER + 513,
            77,
            2 * DIRECT_AFTER as usize + 5,
        ];
        for (k, n) in sizes.iter().enumerate() {
            let a = pattern(*n / 2, k as u8);
            let b = pattern(*n - *n / 2, 100 + k as u8);
            let len = append(&path, &[&a, &b]);
            expected.extend_from_slice(&a);
            expected.extend_from_slice(&b);
            assert_eq!(len, expected.len() as u64, "after append {k} of {n} bytes");
        }
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn an_announced_length_shapes_the_writes_not_the_bytes() {
        // The last buffer before the announced end goes out in pieces. A body cut
        // short of its announcement, or longer, or an announcement of nothing, keeps
        // exactly the bytes appended all the same.
        let n = DIRECT_AFTER as usize + 2 * DIRECT_BUFFER + 2 * TAIL_WRITE + 4097;
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        let mib = 1024 * 1024;
        for announced in [n, n + 3 * mib, n - 3 * mib, n - DIRECT_BUFFER - 5, 0] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("upload");
            // The append starts inside a block, as a second chunk does.
            std::fs::write(&path, b"0123456789").unwrap();
            let (mut a, size) = Appender::open(&path, Some(announced as u64)).unwrap();
            assert_eq!(size, 10);
            for part in data.chunks(300_001) {
                a.write_all(part).unwrap();
            }
            a.finish().unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len(), 10 + n, "announced {announced}");
            assert!(got[..10] == *b"0123456789" && got[10..] == data[..]);
        }
    }

    #[test]
    fn many_parts_in_one_write_keep_their_order() {
        // More parts than one vectored write takes (IOV_MAX is 1024 on Linux), empty
        // ones among them, and enough bytes to cross writeback windows and go direct.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::File::create(&path).unwrap();
        let parts: Vec<Vec<u8>> = (0..3000usize)
            .map(|i| vec![(i % 251) as u8; (i * 7919) % 20_011])
            .collect();
        let (mut a, _) = Appender::open(&path, None).unwrap();
        a.write_parts(&parts[..1500]).unwrap();
        a.write_parts(&parts[1500..]).unwrap();
        a.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == parts.concat());
    }

    #[test]
    fn long_appends_beyond_the_direct_ones_stay_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut open = Vec::new();
        let len = DIRECT_AFTER as usize + DIRECT_BUFFER + 10;
        for k in 0..DIRECT_MAX + 3 {
            let path = dir.path().join(format!("upload{k}"));
            std::fs::File::create(&path).unwrap();
            let (mut a, _) = Appender::open(&path, None).unwrap();
            let data = vec![k as u8; len];
            a.write_all(&data[..DIRECT_AFTER as usize]).unwrap();
            a.write_all(&data[DIRECT_AFTER as usize..]).unwrap();
            open.push((path, a));
        }
        // Other tests of this binary may hold slots too, so count from this side:
        // never more direct appends than the cap, and at least the three past it plain.
        let direct = open
            .iter()
            .filter(|(_, a)| matches!(a, Appender::Direct(_)))
            .count();
        assert!(direct <= DIRECT_MAX, "{direct} direct appends at once");
        assert!(open.len() - direct >= 3);
        for (k, (path, a)) in open.into_iter().enumerate() {
            a.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == vec![k as u8; len]);
        }
        // Their places are free again.
        let path = dir.path().join("after");
        std::fs::File::create(&path).unwrap();
        let (mut a, _) = Appender::open(&path, None).unwrap();
        a.write_all(&vec![1u8; DIRECT_AFTER as usize]).unwrap();
        a.write_all(&[2u8; 3]).unwrap();
        a.finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), DIRECT_AFTER + 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_failed_write_back_fails_an_append() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        for n in [libc::EINVAL, libc::ESPIPE, libc::ENOSYS, libc::EOPNOTSUPP] {
            assert!(writeback::unsupported(&e(n)), "{n}");
        }
        for n in [libc::EIO, libc::ENOSPC, libc::EBADF, libc::ENOMEM] {
            assert!(!writeback::unsupported(&e(n)), "{n}");
        }
    }

    #[test]
    fn a_short_append_stays_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::File::create(&path).unwrap();
        let (mut a, _) = Appender::open(&path, None).unwrap();
        a.write_all(&vec![3u8; DIRECT_AFTER as usize - 1]).unwrap();
        assert!(matches!(a, Appender::Cached(_)));
        a.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == vec![3u8; DIRECT_AFTER as usize - 1]);
    }

    #[test]
    fn reports_the_current_size_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let (a, size) = Appender::open(&path, None).unwrap();
        assert_eq!(size, 5000);
        a.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);
    }
}
