//! `%XX` escapes, as URLs and paths carry them.

/// The bytes `text` stands for with its `%XX` escapes decoded; a `%` not
/// followed by two hex digits stays as it is.
pub fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// [`decode`] as text; bytes that are not UTF-8 become U+FFFD.
pub fn decode_lossy(text: &str) -> String {
    String::from_utf8_lossy(&decode(text)).into_owned()
}

#[cfg(test)]
mod tests {
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
            assert_eq!(super::decode_lossy(text), expected, "for {text}");
        }
        assert_eq!(super::decode("%FF"), vec![0xFF]);
    }
}
