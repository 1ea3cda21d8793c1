//! Checking the checksums a recipe gives while the bytes stream past.

use sha2::Digest as _;

use crate::recipe::{Algorithm, Checksum};

/// Hashes a stream with every algorithm a list of checksums needs, and says
/// which checksum (if any) the stream did not match.
pub(crate) struct Checker {
    wanted: Vec<(Checksum, State)>,
}

enum State {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Blake3(Box<blake3::Hasher>),
}

impl State {
    fn new(algorithm: Algorithm) -> State {
        match algorithm {
            Algorithm::Md5 => State::Md5(md5::Md5::new()),
            Algorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
            Algorithm::Blake3 => State::Blake3(Box::default()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            State::Md5(h) => h.update(bytes),
            State::Sha1(h) => h.update(bytes),
            State::Sha256(h) => h.update(bytes),
            State::Sha512(h) => h.update(bytes),
            State::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn finish(self) -> String {
        let bytes: Vec<u8> = match self {
            State::Md5(h) => h.finalize().to_vec(),
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
            State::Sha512(h) => h.finalize().to_vec(),
            State::Blake3(h) => h.finalize().as_bytes().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A checksum the bytes did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// What the recipe expected.
    pub expected: Checksum,
    /// What the bytes hash to.
    pub actual: String,
}

impl Checker {
    /// A checker for `checksums` (none is fine: it then checks nothing).
    pub(crate) fn new<'a>(checksums: impl IntoIterator<Item = &'a Checksum>) -> Checker {
        Checker {
            wanted: checksums.into_iter().map(|c| (c.clone(), State::new(c.algorithm))).collect(),
        }
    }

    /// Whether there is nothing to check.
    pub(crate) fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Feeds the next bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for (_, state) in &mut self.wanted {
            state.update(bytes);
        }
    }

    /// The first checksum the bytes did not match, if any.
    pub(crate) fn finish(self) -> Option<Mismatch> {
        self.wanted.into_iter().find_map(|(expected, state)| {
            let actual = state.finish();
            (actual != expected.hex).then_some(Mismatch { expected, actual })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(algorithm: Algorithm, input: &str, hex: &str) {
        let sum = Checksum { algorithm, hex: hex.to_string() };
        let mut checker = Checker::new([&sum]);
        // In two pieces: streaming must not change the answer.
        let (a, b) = input.as_bytes().split_at(input.len() / 2);
        checker.update(a);
        checker.update(b);
        assert_eq!(checker.finish(), None, "{} of {input:?}", algorithm.name());
    }

    #[test]
    fn known_answers() {
        check(Algorithm::Md5, "abc", "900150983cd24fb0d6963f7d28e17f72");
        check(Algorithm::Sha1, "abc", "a9993e364706816aba3e25717850c26c9cd0d89d");
        check(
            Algorithm::Sha256,
            "abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        );
        check(
            Algorithm::Sha512,
            "abc",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        );
        check(
            Algorithm::Blake3,
            "abc",
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
        );
    }

    #[test]
    fn a_mismatch_names_the_expected_and_the_actual() {
        let sum = Checksum { algorithm: Algorithm::Md5, hex: "0".repeat(32) };
        let mut checker = Checker::new([&sum]);
        checker.update(b"abc");
        let m = checker.finish().expect("mismatch");
        assert_eq!(m.actual, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(m.expected, sum);
    }
}
