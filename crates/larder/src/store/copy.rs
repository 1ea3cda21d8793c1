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
/// hashing instead of following it.
pub(crate) fn copy_file_to_file(
    src: &mut File,
    len: u64,
    dst: &mut File,
    limit: u64,
    durable: bool,
    progress: &dyn Progress,
) -> Result<(Digest, u64), CopyError> {
    if len >= KERNEL_COPY_MIN
        && let Some((Some(digest), n)) = kernel_copy(src, dst, limit, true, durable, progress)?
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
    if let Some((_, n)) = kernel_copy(src, dst, u64::MAX, false, false, progress)? {
        return Ok(n);
    }
    let n = io::copy(src, dst).map_err(CopyError::Write)?;
    progress.advance(n);
    Ok(n)
}

/// Files at least this large are copied inside the kernel.
const KERNEL_COPY_MIN: u64 = 1 << 20;
/// How much one `copy_file_range` call moves.
const KERNEL_STEP: usize = 8 << 20;

/// Copies `src` into `dst` with `copy_file_range`: no bytes pass through user
/// space, and filesystems that share extents make it a reflink. With `hash`, a
/// second thread hashes what has landed in `dst`: hashing the copy, not the
/// source, makes the digest name exactly the stored bytes even if the source
/// changes meanwhile (`dst` must then be open for reading too). With
/// `write_back`, each copied range is handed to the disk at once.
///
/// Returns `Ok(None)`, having written nothing, when the kernel cannot copy
/// between these files; the caller then copies through user space.
fn kernel_copy(
    src: &File,
    dst: &File,
    limit: u64,
    hash: bool,
    write_back: bool,
    progress: &dyn Progress,
) -> Result<Option<(Option<Digest>, u64)>, CopyError> {
    std::thread::scope(|scope| {
        let (ranges, hasher) = if hash {
            let (ranges, ranges_rx) = sync_channel::<(u64, usize)>(16);
            let hasher = scope.spawn(move || -> io::Result<Digest> {
                let mut hasher = Hasher::new();
                let mut buf = vec![0u8; CHUNK];
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
            let got = kernel_copy(&src, &dst, u64::MAX, true, true, &NoProgress).expect("copy");
            let Some((Some(digest), n)) = got else {
                // This filesystem cannot copy in the kernel; the fallback is tested above.
                return;
            };
            assert_eq!((digest, n), (Digest::of(&data), len as u64));
            assert!(std::fs::read(&dst_path).expect("read") == data);
        }
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
