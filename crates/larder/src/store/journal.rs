//! The file moves a transaction makes, so that they can be undone when it
//! rolls back and finished when it commits. The index and the content folder
//! then agree whichever way a transaction ends.

use std::fs;
use std::path::PathBuf;

use super::same_file;

/// File moves made inside one index transaction.
#[derive(Debug, Default)]
pub(super) struct Journal {
    moves: Vec<Move>,
}

#[derive(Debug)]
enum Move {
    /// `temp` was linked (or renamed) to `dest` in `content/`.
    Linked { dest: PathBuf, temp: PathBuf },
    /// A blob left `content` for `parked` in `tmp/`, to be deleted on commit.
    Evicted { content: PathBuf, parked: PathBuf },
}

impl Journal {
    pub(super) fn linked(&mut self, temp: PathBuf, dest: PathBuf) {
        self.moves.push(Move::Linked { dest, temp });
    }

    pub(super) fn evicted(&mut self, content: PathBuf, parked: PathBuf) {
        self.moves.push(Move::Evicted { content, parked });
    }

    /// A point to roll back to.
    pub(super) fn mark(&self) -> usize {
        self.moves.len()
    }

    /// Undoes every move made since `mark`, newest first.
    pub(super) fn undo_to(&mut self, mark: usize) {
        while self.moves.len() > mark {
            match self.moves.pop() {
                Some(Move::Linked { dest, temp }) => {
                    // Only remove what this transaction put there.
                    if same_file(&dest, &temp) || !temp.exists() {
                        let _ = fs::remove_file(&dest);
                    }
                }
                Some(Move::Evicted { content, parked }) => {
                    let _ = fs::rename(&parked, &content);
                }
                None => break,
            }
        }
    }

    /// Completes the moves once the transaction has committed, or undoes them
    /// all if it did not.
    pub(super) fn finish(mut self, committed: bool) {
        if !committed {
            self.undo_to(0);
            return;
        }
        for m in self.moves {
            if let Move::Evicted { parked, .. } = m {
                let _ = fs::remove_file(parked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_evicted_files_and_removes_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        fs::write(p("content-a"), "a").expect("write");
        fs::write(p("temp-b"), "b").expect("write");
        let mut journal = Journal::default();
        fs::rename(p("content-a"), p("parked-a")).expect("rename");
        journal.evicted(p("content-a"), p("parked-a"));
        let mark = journal.mark();
        fs::hard_link(p("temp-b"), p("content-b")).expect("link");
        journal.linked(p("temp-b"), p("content-b"));
        journal.undo_to(mark);
        assert!(!p("content-b").exists() && p("temp-b").exists());
        assert!(p("parked-a").exists());
        journal.finish(false);
        assert_eq!(fs::read_to_string(p("content-a")).expect("read"), "a");
        assert!(!p("parked-a").exists());
    }

    #[test]
    fn commit_deletes_parked_files_and_keeps_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        fs::write(p("parked"), "x").expect("write");
        fs::write(p("temp"), "y").expect("write");
        fs::hard_link(p("temp"), p("dest")).expect("link");
        let mut journal = Journal::default();
        journal.evicted(p("content"), p("parked"));
        journal.linked(p("temp"), p("dest"));
        journal.finish(true);
        assert!(!p("parked").exists() && !p("content").exists());
        assert!(p("dest").exists());
    }
}
