//! `{field}` templates for the URL, header values and the JSON body.
//!
//! Values never change a request's structure: in the URL they are percent-encoded (every byte but
//! the unreserved ones), so a record cannot add a path segment, a query or a fragment, and the
//! scheme, host and port are literal (placeholders there are config errors). In the body they are
//! JSON values serialized by serde_json, so they are always escaped. In headers a value with CR/LF
//! makes the record invalid instead of splitting the header.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Everything but RFC 3986 unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A placeholder; `slot` is its field's index in the record, set by [`Template::bind`].
    Field {
        name: String,
        slot: usize,
    },
}

/// A string with `{name}` placeholders; `{{` and `}}` stand for literal braces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(close) = rest.find('}') else {
                        return Err(format!("unclosed '{{' at character {i} of {text:?}"));
                    };
                    let name = &rest[..close];
                    if name.is_empty() || name.contains('{') {
                        return Err(format!("invalid placeholder at character {i} of {text:?}"));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Field {
                        name: name.to_string(),
                        slot: usize::MAX,
                    });
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' at character {i} of {text:?} (write '}}}}' for a literal brace)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self { segments })
    }

    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field { name, .. } => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Resolves each placeholder to its record slot.
    pub fn bind(&mut self, slot_of: &impl Fn(&str) -> Option<usize>) -> Result<(), String> {
        for s in &mut self.segments {
            if let Segment::Field { name, slot } = s {
                *slot = slot_of(name)
                    .ok_or_else(|| format!("placeholder {{{name}}} names no field"))?;
            }
        }
        Ok(())
    }

    /// The template as a single placeholder, if that is all it is.
    fn sole_slot(&self) -> Option<usize> {
        match self.segments.as_slice() {
            [Segment::Field { slot, .. }] => Some(*slot),
            _ => None,
        }
    }

    /// Renders with each value passed through `encode`.
    pub fn render(&self, values: &[Value], encode: impl Fn(&str, &mut String)) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Field { slot, .. } => encode(&value_text(&values[*slot]), &mut out),
            }
        }
        out
    }

    /// Renders for a URL: values percent-encoded as one component.
    pub fn render_url(&self, values: &[Value]) -> String {
        self.render(values, |v, out| {
            out.extend(utf8_percent_encode(v, COMPONENT))
        })
    }

    /// Renders verbatim (header values; the caller validates the result).
    pub fn render_raw(&self, values: &[Value]) -> String {
        self.render(values, |v, out| out.push_str(v))
    }
}

/// Percent-encodes `text` as one URL component (every byte but the unreserved ones).
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A value as text: strings as they are, null as empty, everything else as JSON.
pub fn value_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.as_str().into(),
        Value::Null => "".into(),
        other => other.to_string().into(),
    }
}

/// Checks that the URL is absolute http(s) and that no placeholder stands in its scheme, host or
/// port: the authority must be fixed so that no record can send a request elsewhere.
pub fn check_url_template(text: &str, template: &Template) -> Result<(), String> {
    let Some(scheme_end) = text.find("://") else {
        return Err(format!("{text:?} is not an absolute http(s) URL"));
    };
    let after = &text[scheme_end + 3..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    if text[..scheme_end + 3 + authority_end].contains(['{', '}']) {
        return Err("placeholders are not allowed in the scheme, host or port".into());
    }
    let sample: Vec<Value> = template
        .placeholders()
        .map(|_| Value::String("x".into()))
        .collect();
    let mut probe = template.clone();
    let names: Vec<String> = probe.placeholders().map(str::to_string).collect();
    probe.bind(&|n| names.iter().position(|m| m == n))?;
    let url = url::Url::parse(&probe.render_url(&sample))
        .map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} is not an absolute http(s) URL"));
    }
    Ok(())
}

/// A JSON body template: any JSON value whose strings may hold placeholders.
#[derive(Clone, Debug, PartialEq)]
pub enum BodyTemplate {
    Fixed(Value),
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    pub fn parse(value: &Value) -> Result<Self, String> {
        Ok(match value {
            Value::String(s) => {
                let t = Template::parse(s)?;
                if t.placeholders().next().is_some() {
                    BodyTemplate::Text(t)
                } else {
                    BodyTemplate::Fixed(value.clone())
                }
            }
            Value::Array(items) => {
                BodyTemplate::Array(items.iter().map(Self::parse).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => BodyTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => BodyTemplate::Fixed(other.clone()),
        })
    }

    pub fn placeholders(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |t| out.extend(t.placeholders().map(str::to_string)));
        out
    }

    fn visit(&self, f: &mut impl FnMut(&Template)) {
        match self {
            BodyTemplate::Fixed(_) => {}
            BodyTemplate::Text(t) => f(t),
            BodyTemplate::Array(items) => items.iter().for_each(|i| i.visit(f)),
            BodyTemplate::Object(fields) => fields.iter().for_each(|(_, v)| v.visit(f)),
        }
    }

    pub fn bind(&mut self, slot_of: &impl Fn(&str) -> Option<usize>) -> Result<(), String> {
        match self {
            BodyTemplate::Fixed(_) => Ok(()),
            BodyTemplate::Text(t) => t.bind(slot_of),
            BodyTemplate::Array(items) => items.iter_mut().try_for_each(|i| i.bind(slot_of)),
            BodyTemplate::Object(fields) => {
                fields.iter_mut().try_for_each(|(_, v)| v.bind(slot_of))
            }
        }
    }

    /// Builds the JSON value; a string that is exactly one placeholder keeps the value's type.
    pub fn render(&self, values: &[Value]) -> Value {
        match self {
            BodyTemplate::Fixed(v) => v.clone(),
            BodyTemplate::Text(t) => match t.sole_slot() {
                Some(slot) => values[slot].clone(),
                None => Value::String(t.render_raw(values)),
            },
            BodyTemplate::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(values)).collect())
            }
            BodyTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(values)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bound(text: &str, names: &[&str]) -> Template {
        let mut t = Template::parse(text).unwrap();
        t.bind(&|n| names.iter().position(|m| *m == n)).unwrap();
        t
    }

    #[test]
    fn url_values_cannot_change_structure() {
        let t = bound("https://api.example.com/items/{id}?q={q}", &["id", "q"]);
        let nasty = [json!("a/b?c#d"), json!("x&y=z \"quoted\"\nnew line é")];
        let url = t.render_url(&nasty);
        assert_eq!(
            url,
            "https://api.example.com/items/a%2Fb%3Fc%23d?q=x%26y%3Dz%20%22quoted%22%0Anew%20line%20%C3%A9"
        );
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("api.example.com"));
        assert_eq!(parsed.path(), "/items/a%2Fb%3Fc%23d");
        assert_eq!(parsed.fragment(), None);
    }

    #[test]
    fn numbers_and_nulls_render_as_text() {
        let t = bound("http://h/{a}/{b}", &["a", "b"]);
        assert_eq!(t.render_url(&[json!(42), Value::Null]), "http://h/42/");
    }

    #[test]
    fn braces_escape_and_errors() {
        let t = bound("{{literal}} {x}", &["x"]);
        assert_eq!(t.render_raw(&[json!("v")]), "{literal} v");
        assert!(Template::parse("{open").is_err());
        assert!(Template::parse("close}").is_err());
        assert!(Template::parse("{}").is_err());
    }

    #[test]
    fn body_values_are_json_escaped_and_typed() {
        let mut b = BodyTemplate::parse(&json!({
            "id": "{id}", "text": "say {q}", "fixed": [1, "two"], "nested": {"q": "{q}"}
        }))
        .unwrap();
        b.bind(&|n| ["id", "q"].iter().position(|m| *m == n))
            .unwrap();
        let q = "quote \" backslash \\ newline \n unicode ☃ slash / hash #";
        let body = b.render(&[json!(7), json!(q)]);
        assert_eq!(body["id"], json!(7));
        assert_eq!(body["text"], json!(format!("say {q}")));
        assert_eq!(body["nested"]["q"], json!(q));
        assert_eq!(body["fixed"], json!([1, "two"]));
        // Serialized and parsed back, the value is intact: the serializer escaped it.
        let round: Value = serde_json::from_str(&body.to_string()).unwrap();
        assert_eq!(round, body);
    }

    #[test]
    fn url_authority_must_be_fixed() {
        for bad in [
            "https://{h}/x",
            "http://host:{port}/x",
            "{scheme}://host/x",
            "host/{x}",
        ] {
            let t = Template::parse(bad).unwrap();
            assert!(check_url_template(bad, &t).is_err(), "{bad}");
        }
        let ok = "http://127.0.0.1:8080/v1/{x}?y={y}";
        assert!(check_url_template(ok, &Template::parse(ok).unwrap()).is_ok());
    }
}
