//! `application/x-www-form-urlencoded` decoding, shared by query strings (the
//! API key in a query parameter) and token request bodies (RFC 6749 §3.2).

use percent_encoding::percent_decode_str;

/// Name/value pairs in order, duplicates kept (the token endpoint must see
/// them to refuse them). Invalid UTF-8 is replaced rather than rejected: a
/// mangled credential then simply fails to match.
pub(crate) fn pairs(encoded: &str) -> Vec<(String, String)> {
    encoded
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// One form-encoded component: `+` is a space, then percent-decoding.
pub(crate) fn decode(component: &str) -> String {
    let spaced = component.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_bare_names() {
        let decoded = pairs("a=1+2&b=%2B%26%3D&&flag&a=x");
        let expected = [("a", "1 2"), ("b", "+&="), ("flag", ""), ("a", "x")];
        let expected: Vec<_> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
    }
}
