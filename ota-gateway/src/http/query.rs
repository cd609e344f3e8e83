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

#[cfg(test)]
mod tests {
    use super::*;

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
