//! Query strings, decoded as browsers and `curl` encode them
//! (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte, a malformed
//! escape such as `%zz` stays as written).

use std::borrow::Cow;

/// The value of the first query parameter called `name`, decoded; `None` when it is
/// absent or empty.
pub fn param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// `query` as logs may show it: the value of every `id` parameter (a device's unique
/// id, which is never logged) replaced by `REDACTED`, keys decoded as [`param`] does.
pub fn redacted(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        out.append_pair(&key, if key == "id" { "REDACTED" } else { &value });
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_queries_keep_no_id() {
        assert_eq!(redacted("device=esp32&id=serial-42&current=1.0.0"), "device=esp32&id=REDACTED&current=1.0.0");
        // However the key is spelled, as `param` would read it.
        assert_eq!(redacted("%69d=serial-42&id=a&id=b"), "id=REDACTED&id=REDACTED&id=REDACTED");
        assert_eq!(redacted(""), "");
    }

    #[test]
    fn params() {
        assert_eq!(param("device=esp32&id=a%2Fb", "id").as_deref(), Some("a/b"));
        assert_eq!(param("device=esp32", "device").as_deref(), Some("esp32"));
        assert_eq!(param("device=", "device"), None);
        assert_eq!(param("devices=x", "device"), None);
        assert_eq!(param("id=a+b", "id").as_deref(), Some("a b"));
        assert_eq!(param("id=%zz", "id").as_deref(), Some("%zz"));
        assert_eq!(param("", "id"), None);
        assert_eq!(param("device=a&device=b", "device").as_deref(), Some("a"));
    }

    #[test]
    fn plain_values_are_borrowed() {
        assert!(matches!(param("device=esp32", "device"), Some(Cow::Borrowed("esp32"))));
    }
}
