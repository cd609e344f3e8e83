//! What a key or token is, wherever it comes from: an inline value in a hand-written
//! config, a mounted Secret's file, a Secret read through the API. One rule for all of
//! them (the store's write and read keys, the upload tokens, a mirror's key, the
//! operator's webhook token), so a key that works in one place works in every other:
//!
//! - whitespace around it is not part of it: the newline `echo` and editors leave at the
//!   end of a file, the spaces of a hand-written YAML value (ASCII whitespace only);
//! - a value that is empty once trimmed is no key at all: it is refused where it is
//!   configured and grants nothing where it is presented.

/// The key in `raw`, trimmed of surrounding ASCII whitespace; `None` when nothing is
/// left.
pub fn key(raw: &[u8]) -> Option<&[u8]> {
    Some(raw.trim_ascii()).filter(|k| !k.is_empty())
}

/// [`key`] of a text value.
pub(crate) fn key_str(raw: &str) -> Option<&str> {
    Some(raw.trim_ascii()).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_not_part_of_a_key() {
        assert_eq!(key(b"s3cret\n"), Some(&b"s3cret"[..]));
        assert_eq!(key(b"  s3cret \r\n"), Some(&b"s3cret"[..]));
        assert_eq!(key(b"\ts3 cret\t"), Some(&b"s3 cret"[..]), "inner whitespace stays");
        assert_eq!(key_str(" tok\n"), Some("tok"));
    }

    #[test]
    fn an_empty_or_whitespace_only_value_is_no_key() {
        for raw in ["", " ", "\n", "\r\n", " \t \n"] {
            assert_eq!(key(raw.as_bytes()), None, "{raw:?}");
            assert_eq!(key_str(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn only_ascii_whitespace_is_trimmed() {
        // A no-break space is a character of the key, as in the bytes a client sends.
        assert_eq!(key_str("\u{a0}k\u{a0}"), Some("\u{a0}k\u{a0}"));
    }
}
