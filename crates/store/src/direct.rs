//! Appending an upload's bytes to its file. Where the filesystem allows it (Linux,
//! not tmpfs), the file is written with `O_DIRECT`: the bytes go from one reused,
//! aligned buffer straight to the disk instead of through the page cache. An upload is
//! written once and read back rarely before it is published, so caching it buys
//! nothing, while filling gigabytes of cache costs a copy per byte, evicts what
//! readers need, and leaves all the writeback to the `fsync` that publishing waits
//! for. Elsewhere the file is written through a plain buffer.
//!
//! Direct I/O needs the memory address, file offset and length of every write aligned
//! to the device's block size. Appends start anywhere, so the block the file ends in
//! is read back into the buffer first and rewritten whole; a short last block is
//! padded with zeros and the file then truncated to its true length.
//!
//! A direct append holds up to two 4 MiB buffers, so only [`DIRECT_MAX`] appends run
//! directly at once; the others write through the page cache with a small buffer, so
//! that many clients pushing at once do not cost the server 8 MiB each.

use std::fs::File;
use std::io::Write;

/// Alignment of direct writes: the largest logical block size in common use.
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
const DIRECT_BUFFER: usize = 4 * 1024 * 1024;
/// Bytes gathered before one buffered write.
const PLAIN_BUFFER: usize = 256 * 1024;
/// Appends written directly at once at most (each holds up to two `DIRECT_BUFFER`s,
/// so 32 MiB in all). Four keep a 2-core machine's disk busy; with eight, 50 clients
/// pushing at once had ten 4 MiB buffers resident at a peak RSS of 168 MiB.
const DIRECT_MAX: usize = 4;
/// The places for direct appends (a permit each, given back when the append ends).
static DIRECT_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DIRECT_MAX);

/// A direct append's place among the `DIRECT_MAX`.
type DirectSlot = tokio::sync::SemaphorePermit<'static>;

pub(crate) enum Appender {
    Direct(DirectAppender),
    Plain(std::io::BufWriter<File>),
}

impl Appender {
    /// Open `path` for appending at its current end, directly where possible. Returns
    /// the appender and the file's current size.
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<(Appender, u64)> {
        #[cfg(target_os = "linux")]
        if let Ok(slot) = DIRECT_SLOTS.try_acquire() {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(file) => {
                    let direct = DirectAppender::new(file, slot)?;
                    let size = direct.size;
                    return Ok((Appender::Direct(direct), size));
                }
                // EINVAL: this filesystem has no direct I/O (tmpfs); write through it.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok((
            Appender::Plain(std::io::BufWriter::with_capacity(PLAIN_BUFFER, file)),
            size,
        ))
    }

    pub(crate) fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        match self {
            Appender::Plain(out) => out.write_all(data),
            Appender::Direct(d) => {
                while !data.is_empty() {
                    let n = d.take(data);
                    data = &data[n..];
                    if d.len == DIRECT_BUFFER {
                        d.write_full_buffer()?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Write out everything gathered, leaving the file exactly as long as the bytes
    /// appended. Data reaches the disk; making it durable is `fsync`'s job.
    pub(crate) fn finish(self) -> std::io::Result<()> {
        match self {
            Appender::Plain(mut out) => out.flush(),
            Appender::Direct(d) => d.finish(),
        }
    }
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
/// Buffers kept at most (each `DIRECT_BUFFER`, resident): one upload's pair.
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

/// The thread that writes full buffers while the next one fills (hashing and
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
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(1);
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
    /// Writes the other of the (at most) two buffers while `current` fills.
    writer: Option<Writer>,
    _slot: DirectSlot,
}

impl DirectAppender {
    fn new(file: File, slot: DirectSlot) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        let mut d = DirectAppender {
            file,
            current: Aligned::new()?,
            len: 0,
            file_offset: size - size % ALIGN as u64,
            size,
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

    /// Copy as much of `data` as fits into the buffer; returns how much.
    fn take(&mut self, data: &[u8]) -> usize {
        let at = self.len;
        let n = data.len().min(DIRECT_BUFFER - at);
        self.current.bytes_mut()[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        self.size += n as u64;
        n
    }

    /// Hand the full buffer to the writer thread and go on with an empty one.
    fn write_full_buffer(&mut self) -> std::io::Result<()> {
        if self.writer.is_none() {
            self.writer = Some(Writer::start(self.file.try_clone()?));
        }
        let writer = self.writer.as_mut().expect("started above");
        let next = if writer.in_flight == 0 {
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
        let (mut a, _) = Appender::open(path).unwrap();
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
    fn appends_beyond_the_direct_ones_go_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut open = Vec::new();
        for k in 0..DIRECT_MAX + 3 {
            let path = dir.path().join(format!("upload{k}"));
            std::fs::File::create(&path).unwrap();
            let (mut a, _) = Appender::open(&path).unwrap();
            a.write_all(&vec![k as u8; DIRECT_BUFFER + 10]).unwrap();
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
            assert!(std::fs::read(&path).unwrap() == vec![k as u8; DIRECT_BUFFER + 10]);
        }
        // Their places are free again.
        let path = dir.path().join("after");
        std::fs::File::create(&path).unwrap();
        let (a, _) = Appender::open(&path).unwrap();
        a.finish().unwrap();
    }

    #[test]
    fn reports_the_current_size_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let (a, size) = Appender::open(&path).unwrap();
        assert_eq!(size, 5000);
        a.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);
    }
}
