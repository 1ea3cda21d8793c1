//! Copying bytes while hashing them, with the hash on a second thread so that
//! hashing overlaps the reads and writes instead of adding to them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::sync_channel;

use crate::digest::{Digest, Hasher};
use crate::fsutil::read_full;
use crate::progress::Progress;

/// Inputs smaller than this are hashed inline: a thread would cost more.
const SMALL: usize = 64 << 10;
/// The pipeline's chunk size and depth: memory stays at CHUNK * DEPTH.
const CHUNK: usize = 2 << 20;
const DEPTH: usize = 4;

/// Copies a file's bytes elsewhere while they are staged: a folder remote's
/// upload, which so overlaps the hashing instead of following it.
pub trait Follower: Send {
    /// Copies the `len` bytes at `offset` of `staged`, which holds them now.
    /// Ranges come in order; after an error no more come.
    fn follow(&mut self, staged: &File, offset: u64, len: usize) -> io::Result<()>;
}

/// Copies `len` bytes at `offset` of `src` to the same offset of `dst`:
/// inside the kernel where the filesystems allow, else through a buffer.
pub(crate) fn copy_range(src: &File, dst: &File, offset: u64, len: usize) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let mut from = (offset + done as u64) as libc::loff_t;
        let mut to = from;
        // SAFETY: both descriptors are open for the call, and the offsets are
        // ours: the files' own positions are neither used nor moved.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut from,
                dst.as_raw_fd(),
                &mut to,
                len - done,
                0,
            )
        };
        if n > 0 {
            done += n as usize;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the staged file ended early",
            ));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => break,
            _ => return Err(err),
        }
    }
    let mut buf = vec![0u8; CHUNK.min(len - done)];
    while done < len {
        let n = (len - done).min(buf.len());
        let at = offset + done as u64;
        src.read_exact_at(&mut buf[..n], at)?;
        dst.write_all_at(&buf[..n], at)?;
        done += n;
    }
    Ok(())
}

/// Why a copy stopped.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// The input passed the limit; carries the limit.
    TooLarge(u64),
}

/// Copies `reader` to `writer` (if any), hashing everything, and stops with
/// [`CopyError::TooLarge`] once more than `limit` bytes arrive.
pub(crate) fn copy_hashing(
    reader: &mut dyn Read,
    mut writer: Option<&mut dyn Write>,
    limit: u64,
    progress: &dyn Progress,
) -> Result<(Digest, u64), CopyError> {
    let mut first = vec![0u8; SMALL];
    let n = read_full(reader, &mut first).map_err(CopyError::Read)?;
    if n < SMALL {
        if n as u64 > limit {
            return Err(CopyError::TooLarge(limit));
        }
        if let Some(w) = writer.as_mut() {
            w.write_all(&first[..n]).map_err(CopyError::Write)?;
        }
        progress.advance(n as u64);
        return Ok((Digest::of(&first[..n]), n as u64));
    }

    std::thread::scope(|scope| {
        let (to_hasher, hasher_rx) = sync_channel::<(Vec<u8>, usize)>(DEPTH);
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(DEPTH + 1);
        let hasher = scope.spawn(move || {
            let mut hasher = Hasher::new();
            for (buf, len) in hasher_rx {
                hasher.update(&buf[..len]);
                // The pool may be gone if the copy failed; the buffer is then dropped.
                let _ = free_tx.send(buf);
            }
            hasher.finish()
        });

        let mut total = n as u64;
        let mut result = Ok(());
        let mut buf = first;
        let mut len = n;
        let mut allocated = 1;
        loop {
            if total > limit {
                result = Err(CopyError::TooLarge(limit));
                break;
            }
            if let Some(w) = writer.as_mut()
                && let Err(e) = w.write_all(&buf[..len])
            {
                result = Err(CopyError::Write(e));
                break;
            }
            progress.advance(len as u64);
            let done = len < buf.len();
            if to_hasher.send((buf, len)).is_err() || done {
                break;
            }
            buf = match free_rx.try_recv() {
                Ok(b) => b,
                Err(_) if allocated < DEPTH => {
                    allocated += 1;
                    vec![0u8; CHUNK]
                }
                Err(_) => match free_rx.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                },
            };
            if buf.len() < CHUNK {
                buf.resize(CHUNK, 0);
            }
            len = match read_full(reader, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    result = Err(CopyError::Read(e));
                    break;
                }
            };
            total += len as u64;
        }
        drop(to_hasher);
        let digest = hasher.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        result.map(|()| (digest, total))
    })
}

/// Copies the regular file `src` (of `len` bytes, as far as its metadata
/// said) into `dst`, hashing: inside the kernel when it is large enough and the
/// filesystems allow, else through user space. With `durable`, writeback of
/// each copied range starts at once, so the caller's final flush overlaps the
/// hashing instead of following it. Each of `followers` is handed the
/// ranges copied inside the kernel as they land (none if the copy went
/// through user space: they then hold less than the whole).
pub(crate) fn copy_file_to_file(
    src: &mut File,
    len: u64,
    dst: &mut File,
    limit: u64,
    durable: bool,
    followers: &mut [&mut dyn Follower],
    progress: &dyn Progress,
) -> Result<(Digest, u64), CopyError> {
    if len >= KERNEL_COPY_MIN
        && let Some((Some(digest), n)) =
            kernel_copy(src, dst, limit, true, durable, followers, progress)?
    {
        return Ok((digest, n));
    }
    copy_hashing(src, Some(dst), limit, progress)
}

/// Copies the regular file `src` (of `len` bytes) into `dst` without hashing,
/// inside the kernel where possible.
pub(crate) fn copy_file_plain(
    src: &mut File,
    len: u64,
    dst: &mut File,
    progress: &dyn Progress,
) -> Result<u64, CopyError> {
    if len < KERNEL_COPY_MIN {
        // `io::copy` uses `copy_file_range` itself where it can.
        let n = io::copy(src, dst).map_err(CopyError::Write)?;
        progress.advance(n);
        return Ok(n);
    }
    if let Some((_, n)) = kernel_copy(src, dst, u64::MAX, false, false, &mut [], progress)? {
        return Ok(n);
    }
    let n = io::copy(src, dst).map_err(CopyError::Write)?;
    progress.advance(n);
    Ok(n)
}

/// Files at least this large are copied inside the kernel.
const KERNEL_COPY_MIN: u64 = 1 << 20;
/// How much the hasher of a kernel copy reads at a time: small enough that
/// what it reads is still in the CPU's cache when hashed (2 MiB reads hash
/// 10% slower here).
const HASH_READ: usize = 1 << 20;
/// How much one `copy_file_range` call moves.
const KERNEL_STEP: usize = 8 << 20;

/// Copies `src` into `dst` with `copy_file_range`: no bytes pass through user
/// space, and filesystems that share extents make it a reflink. With `hash`, a
/// second thread hashes what has landed in `dst`: hashing the copy, not the
/// source, makes the digest name exactly the stored bytes even if the source
/// changes meanwhile (`dst` must then be open for reading too). With
/// `write_back`, each copied range is handed to the disk at once. Each of
/// `followers` gets every copied range once it is in `dst`.
///
/// Returns `Ok(None)`, having written nothing, when the kernel cannot copy
/// between these files; the caller then copies through user space.
fn kernel_copy(
    src: &File,
    dst: &File,
    limit: u64,
    hash: bool,
    write_back: bool,
    followers: &mut [&mut dyn Follower],
    progress: &dyn Progress,
) -> Result<Option<(Option<Digest>, u64)>, CopyError> {
    std::thread::scope(|scope| {
        // Followers' failures, by follower: one that failed gets no more.
        let mut stopped = vec![false; followers.len()];
        let (ranges, hasher) = if hash {
            let (ranges, ranges_rx) = sync_channel::<(u64, usize)>(16);
            let hasher = scope.spawn(move || -> io::Result<Digest> {
                let mut hasher = Hasher::new();
                let mut buf = vec![0u8; HASH_READ];
                for (offset, len) in ranges_rx {
                    let mut done = 0;
                    while done < len {
                        let n = (len - done).min(buf.len());
                        dst.read_exact_at(&mut buf[..n], offset + done as u64)?;
                        hasher.update(&buf[..n]);
                        done += n;
                    }
                }
                Ok(hasher.finish())
            });
            (Some(ranges), Some(hasher))
        } else {
            (None, None)
        };
        let mut total: u64 = 0;
        let mut result = Ok(true);
        loop {
            // SAFETY: both descriptors are open for the call; null offsets use
            // (and advance) the files' own positions.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    KERNEL_STEP,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                let unsupported = matches!(
                    err.raw_os_error(),
                    Some(
                        libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF
                    )
                );
                result = if total == 0 && unsupported {
                    Ok(false)
                } else if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                } else {
                    // The kernel does not say which side failed; a full disk
                    // or quota is the destination's, anything else the source's.
                    match err.kind() {
                        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                            Err(CopyError::Write(err))
                        }
                        _ => Err(CopyError::Read(err)),
                    }
                };
                break;
            }
            if n == 0 {
                break;
            }
            let n = n as usize;
            if write_back {
                // SAFETY: a valid descriptor and a range within the file; this
                // only starts writeback and touches no memory of ours.
                unsafe {
                    libc::sync_file_range(
                        dst.as_raw_fd(),
                        total as libc::off64_t,
                        n as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            if let Some(ranges) = &ranges
                && ranges.send((total, n)).is_err()
            {
                break;
            }
            // Followers copy on this thread, behind the copy into `dst`: with
            // the hasher on a thread of its own, two busy threads keep two
            // CPUs busy, where a thread per follower would take turns with
            // the hasher, which is what the staging waits for.
            for (follower, stopped) in followers.iter_mut().zip(&mut stopped) {
                if !*stopped && let Err(e) = follower.follow(dst, total, n) {
                    tracing::info!("a copy following a staged file stopped: {e}");
                    *stopped = true;
                }
            }
            total += n as u64;
            progress.advance(n as u64);
            if total > limit {
                result = Err(CopyError::TooLarge(limit));
                break;
            }
        }
        drop(ranges);
        let digest = match hasher {
            Some(h) => match h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                Ok(d) => Some(d),
                Err(e) if result.is_ok() => return Err(CopyError::Write(e)),
                Err(_) => None,
            },
            None => None,
        };
        match result {
            Ok(false) => Ok(None),
            Ok(true) => Ok(Some((digest, total))),
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    fn check(len: usize) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut out = Vec::new();
        let (digest, n) =
            copy_hashing(&mut &data[..], Some(&mut out), u64::MAX, &NoProgress).expect("copy");
        assert_eq!(n, len as u64);
        assert_eq!(digest, Digest::of(&data), "len {len}");
        assert!(out == data, "len {len}: copy differs");
    }

    #[test]
    fn copies_and_hashes_every_size() {
        for len in [0, 1, SMALL - 1, SMALL, SMALL + 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3, 9 * CHUNK] {
            check(len);
        }
    }

    #[test]
    fn kernel_copies_hash_what_they_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0usize, 1, KERNEL_STEP - 1, KERNEL_STEP + 5, 3 * KERNEL_STEP] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 997) as u8).collect();
            let src_path = dir.path().join(format!("src-{len}"));
            let dst_path = dir.path().join(format!("dst-{len}"));
            std::fs::write(&src_path, &data).expect("write");
            let src = File::open(&src_path).expect("open");
            let dst = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&dst_path)
                .expect("create");
            let got =
                kernel_copy(&src, &dst, u64::MAX, true, true, &mut [], &NoProgress).expect("copy");
            let Some((Some(digest), n)) = got else {
                // This filesystem cannot copy in the kernel; the fallback is tested above.
                return;
            };
            assert_eq!((digest, n), (Digest::of(&data), len as u64));
            assert!(std::fs::read(&dst_path).expect("read") == data);
        }
    }

    /// Copies every range it is handed into memory.
    struct Collect(Vec<u8>);

    impl Follower for Collect {
        fn follow(&mut self, staged: &File, offset: u64, len: usize) -> io::Result<()> {
            assert_eq!(offset, self.0.len() as u64, "ranges come in order");
            let mut buf = vec![0u8; len];
            staged.read_exact_at(&mut buf, offset)?;
            self.0.extend_from_slice(&buf);
            Ok(())
        }
    }

    #[test]
    fn followers_get_every_byte_staged_in_the_kernel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..3 * KERNEL_STEP + 17).map(|i| (i * 13 + i / 509) as u8).collect();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, &data).expect("write");
        let mut src = File::open(&src_path).expect("open");
        let mut dst = tempfile::tempfile_in(dir.path()).expect("create");
        let (mut a, mut b) = (Collect(Vec::new()), Collect(Vec::new()));
        let (digest, n) = copy_file_to_file(
            &mut src,
            data.len() as u64,
            &mut dst,
            u64::MAX,
            false,
            &mut [&mut a, &mut b],
            &NoProgress,
        )
        .expect("copy");
        assert_eq!((digest, n), (Digest::of(&data), data.len() as u64));
        for follower in [a, b] {
            // Empty where this filesystem cannot copy in the kernel.
            assert!(follower.0.is_empty() || follower.0 == data, "a follower holds the bytes");
        }
    }

    #[test]
    fn copy_range_copies_at_the_same_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..CHUNK * 2 + 5).map(|i| (i % 251) as u8).collect();
        let src = tempfile::tempfile_in(dir.path()).expect("src");
        src.write_all_at(&data, 0).expect("write");
        let dst = tempfile::tempfile_in(dir.path()).expect("dst");
        copy_range(&src, &dst, 0, 10).expect("head");
        copy_range(&src, &dst, 10, data.len() - 10).expect("rest");
        let mut back = vec![0u8; data.len()];
        dst.read_exact_at(&mut back, 0).expect("read");
        assert!(back == data);
        let short = copy_range(&src, &dst, data.len() as u64 - 1, 2);
        assert!(short.is_err(), "a range past the end is an error");
    }

    #[test]
    fn stops_past_the_limit() {
        let data = vec![0u8; 3 * CHUNK];
        for limit in [10, SMALL as u64, CHUNK as u64 * 2] {
            let result = copy_hashing(&mut &data[..], Some(&mut Vec::new()), limit, &NoProgress);
            assert!(matches!(result, Err(CopyError::TooLarge(l)) if l == limit));
        }
    }
}
