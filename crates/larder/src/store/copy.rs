//! Copying bytes while hashing them, with the hash on a second thread so that
//! hashing overlaps the reads and writes instead of adding to them.

use std::io::{self, Read, Write};
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
    fn stops_past_the_limit() {
        let data = vec![0u8; 3 * CHUNK];
        for limit in [10, SMALL as u64, CHUNK as u64 * 2] {
            let result = copy_hashing(&mut &data[..], Some(&mut Vec::new()), limit, &NoProgress);
            assert!(matches!(result, Err(CopyError::TooLarge(l)) if l == limit));
        }
    }
}
