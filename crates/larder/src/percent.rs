//! `%XX` escapes, as URLs and paths carry them: one decoder and the
//! encoders larder needs, on the `percent-encoding` crate, so that every
//! place that escapes or unescapes agrees.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What a URL component keeps as it is: RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What a URL path keeps: the unreserved characters and `/`.
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// The bytes `text` stands for with its `%XX` escapes decoded; a `%` not
/// followed by two hex digits stays as it is.
pub fn decode(text: &str) -> Vec<u8> {
    percent_decode_str(text).collect()
}

/// [`decode`] as text; bytes that are not UTF-8 become U+FFFD.
pub fn decode_lossy(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `text` escaped for one component of a URL (a user name, a password, a
/// query value): everything but letters, digits and `-._~`.
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// `text` escaped for a URL path: as [`encode_component`], keeping `/`.
pub fn encode_path(text: &str) -> String {
    utf8_percent_encode(text, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_stray_percents_stay() {
        for (text, expected) in [
            ("a%20b", "a b"),
            ("p%40ss%3Aword", "p@ss:word"),
            ("100%", "100%"),
            ("%zz%4", "%zz%4"),
            ("%C3%A9", "é"),
            ("%FF", "\u{FFFD}"),
        ] {
            assert_eq!(decode_lossy(text), expected, "for {text}");
        }
        assert_eq!(decode("%FF"), vec![0xFF]);
    }

    /// Regression: `u8::from_str_radix` takes a sign, so `%+A` decoded to a
    /// newline.
    #[test]
    fn a_sign_is_not_a_hex_digit() {
        assert_eq!(decode("%+A"), b"%+A");
        assert_eq!(decode("%-1"), b"%-1");
    }

    #[test]
    fn encoders_keep_only_what_their_part_of_a_url_allows() {
        assert_eq!(encode_component("al@ice:p/w é~"), "al%40ice%3Ap%2Fw%20%C3%A9~");
        assert_eq!(encode_path("a b/c%d/e.tar.gz"), "a%20b/c%25d/e.tar.gz");
        for text in ["x/y z", "100%", "é/ü"] {
            assert_eq!(decode_lossy(&encode_path(text)), text);
        }
    }
}
