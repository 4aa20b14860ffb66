//! Request building: a pipeline config bound to an input's columns renders records into requests.

use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{ConfigError, FieldType, InputFormat, PipelineConfig};
use crate::record::{RecordParser, SchemaField, Source};
use crate::template::{self, BodyTemplate, Template};

/// One HTTP request, ready to send (and to send again, unchanged, on retry).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<bytes::Bytes>,
    /// The records this request carries: 1, or the size of a batch call. The rate limit takes
    /// a token per record when `client.rate_limit_counts` is `records`.
    pub records: u32,
}

/// The request templates of a pipeline, bound to record slots. Shared by all in-flight calls.
#[derive(Clone, Debug)]
pub struct RequestRenderer {
    method: http::Method,
    url: Template,
    /// Appended to the URL's query: names already encoded.
    query: Vec<(String, Template)>,
    headers: Vec<(HeaderName, Template)>,
    /// `request.user_agent`; None leaves the HTTP client's own.
    user_agent: Option<HeaderValue>,
    body: Option<Body>,
    idempotency_header: Option<HeaderName>,
}

/// A request body template, by kind; each kind has its Content-Type.
#[derive(Clone, Debug)]
enum Body {
    /// `request.body`: JSON, values typed and escaped by serde_json.
    Json(BodyTemplate),
    /// `request.form`: `application/x-www-form-urlencoded`, each value encoded whole once
    /// rendered (names already encoded).
    Form(Vec<(String, Template)>),
    /// `request.text`: the rendered template as it is.
    Text {
        template: Template,
        content_type: HeaderValue,
    },
}

/// Content-Type of a `request.text` body when `request.content_type` is not set.
pub const DEFAULT_TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

impl Body {
    fn content_type(&self) -> HeaderValue {
        match self {
            Body::Json(_) => HeaderValue::from_static("application/json"),
            Body::Form(_) => HeaderValue::from_static("application/x-www-form-urlencoded"),
            Body::Text { content_type, .. } => content_type.clone(),
        }
    }

    fn render(&self, values: &[Value]) -> bytes::Bytes {
        match self {
            Body::Json(t) => t.render(values).to_string().into(),
            Body::Form(fields) => join_pairs(fields, values, form_encode).into(),
            Body::Text { template, .. } => template.render_raw(values).into(),
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `name=value&...`, each value rendered verbatim then encoded whole by `encode`.
fn join_pairs(
    pairs: &[(String, Template)],
    values: &[Value],
    encode: fn(&str) -> String,
) -> String {
    let mut out = String::new();
    for (name, t) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(&encode(&t.render_raw(values)));
    }
    out
}

/// `url` with `query` appended to its query, before any fragment.
fn with_query(url: String, query: &str) -> String {
    if query.is_empty() {
        return url;
    }
    let (base, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url.as_str(), ""),
    };
    let separator = match base.find('?') {
        None => "?",
        Some(i) if i + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{separator}{query}{fragment}")
}

/// The record fields CSV results show.
fn output_record_fields(config: &PipelineConfig) -> Vec<String> {
    crate::csv_output::CsvLayout::new(&config.output.columns)
        .record_fields()
        .to_vec()
}

/// Binds a validated config to the input's shape. `header` is the CSV header (None for JSONL).
/// Errors name the config file and field, like [`PipelineConfig::validate`].
pub fn compile(
    config: &PipelineConfig,
    header: Option<&[String]>,
    file: &str,
) -> Result<(RecordParser, RequestRenderer), ConfigError> {
    let err = |field: &str, message: String| ConfigError {
        file: file.into(),
        field: field.into(),
        message,
    };
    let referenced = config.referenced_fields().map_err(|(f, m)| err(&f, m))?;
    let input = &config.input;
    let fields: Vec<SchemaField> = match input.format {
        InputFormat::Csv => {
            let header =
                header.ok_or_else(|| err("input.format", "CSV input needs a header row".into()))?;
            let column = |name: &str| header.iter().position(|c| c == name);
            let columns = header.join(", ");
            for (field, name) in &referenced {
                if column(name).is_none() && !input.fields.iter().any(|f| &f.name == name) {
                    return Err(err(
                        field,
                        format!("placeholder {{{name}}} names no CSV column (columns: {columns})"),
                    ));
                }
            }
            if input.fields.is_empty() {
                header
                    .iter()
                    .enumerate()
                    .map(|(i, name)| SchemaField {
                        name: name.clone(),
                        ty: FieldType::String,
                        required: false,
                        source: Source::CsvColumn(i),
                    })
                    .collect()
            } else {
                input
                    .fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let col = column(&f.name).ok_or_else(|| {
                            err(
                                &format!("input.fields[{i}].name"),
                                format!("{:?} is not a CSV column (columns: {columns})", f.name),
                            )
                        })?;
                        Ok(SchemaField {
                            name: f.name.clone(),
                            ty: f.ty,
                            required: f.required,
                            source: Source::CsvColumn(col),
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        }
        InputFormat::Jsonl => {
            let mut fields: Vec<SchemaField> = input
                .fields
                .iter()
                .map(|f| SchemaField {
                    name: f.name.clone(),
                    ty: f.ty,
                    required: f.required,
                    source: Source::JsonKey(f.name.clone()),
                })
                .collect();
            for (_, name) in &referenced {
                if !fields.iter().any(|f| &f.name == name) {
                    fields.push(SchemaField {
                        name: name.clone(),
                        ty: FieldType::Any,
                        required: true,
                        source: Source::JsonKey(name.clone()),
                    });
                }
            }
            // Fields that only CSV results show: kept when present, never required.
            for name in output_record_fields(config) {
                if !fields.iter().any(|f| f.name == name) {
                    fields.push(SchemaField {
                        name: name.clone(),
                        ty: FieldType::Any,
                        required: false,
                        source: Source::JsonKey(name),
                    });
                }
            }
            fields
        }
    };
    for (i, column) in config.output.columns.iter().enumerate() {
        if let Ok((_, crate::csv_output::Source::Record(name))) = column.parse()
            && !fields.iter().any(|f| f.name == name)
        {
            let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            return Err(err(
                &format!("output.columns[{i}]"),
                format!(
                    "record.{name}: {name:?} is not a field of the input (fields: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    let slot_of = |name: &str| fields.iter().position(|f| f.name == name);
    let mut url = Template::parse(&config.request.url).map_err(|m| err("request.url", m))?;
    url.bind(&slot_of).map_err(|m| err("request.url", m))?;
    let mut headers = Vec::new();
    for (name, value) in &config.request.headers {
        let field = format!("request.headers.{name}");
        let mut t = Template::parse(value).map_err(|m| err(&field, m))?;
        t.bind(&slot_of).map_err(|m| err(&field, m))?;
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| err(&field, e.to_string()))?;
        headers.push((name, t));
    }
    let template = |field: &str, text: &str| {
        let mut t = Template::parse(text).map_err(|m| err(field, m))?;
        t.bind(&slot_of).map_err(|m| err(field, m))?;
        Ok::<_, ConfigError>(t)
    };
    let mut query = Vec::new();
    for (name, value) in &config.request.query {
        let t = template(&format!("request.query.{name}"), value)?;
        query.push((template::encode_component(name), t));
    }
    let user_agent = match &config.request.user_agent {
        Some(ua) => {
            Some(HeaderValue::from_str(ua).map_err(|e| err("request.user_agent", e.to_string()))?)
        }
        None => None,
    };
    let request = &config.request;
    let body = match (&request.body, &request.form, &request.text) {
        (Some(b), None, None) => {
            let mut t = BodyTemplate::parse(b).map_err(|m| err("request.body", m))?;
            t.bind(&slot_of).map_err(|m| err("request.body", m))?;
            Some(Body::Json(t))
        }
        (None, Some(form), None) => {
            let mut fields = Vec::new();
            for (name, value) in form {
                let t = template(&format!("request.form.{name}"), value)?;
                fields.push((form_encode(name), t));
            }
            Some(Body::Form(fields))
        }
        (None, None, Some(text)) => {
            let content_type = request
                .content_type
                .as_deref()
                .unwrap_or(DEFAULT_TEXT_CONTENT_TYPE);
            Some(Body::Text {
                template: template("request.text", text)?,
                content_type: HeaderValue::from_str(content_type)
                    .map_err(|e| err("request.content_type", e.to_string()))?,
            })
        }
        (None, None, None) => None,
        _ => {
            return Err(err(
                "request.body",
                "set only one of request.body, request.form, request.text".into(),
            ));
        }
    };
    let method = http::Method::from_bytes(config.request.method.as_bytes())
        .map_err(|e| err("request.method", e.to_string()))?;
    let idempotency_header = match config.request.idempotency_header.as_str() {
        "" => None,
        h => Some(
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|e| err("request.idempotency_header", e.to_string()))?,
        ),
    };
    let columns = header.map_or(0, <[String]>::len);
    let parser = RecordParser::new(input.format, fields, input.delimiter as u8, columns)
        .with_quoting(input.quoting);
    Ok((
        parser,
        RequestRenderer {
            method,
            url,
            query,
            headers,
            user_agent,
            body,
            idempotency_header,
        },
    ))
}

/// The idempotency key of a record: the same for every attempt and every redelivery.
pub fn idempotency_key(job_id: &str, offset: u64) -> String {
    format!("{job_id}-{offset}")
}

impl RequestRenderer {
    /// Renders a parsed record; an error is a reason to reject the record.
    pub fn render(
        &self,
        values: &[Value],
        job_id: &str,
        offset: u64,
    ) -> Result<ApiRequest, String> {
        let query = join_pairs(&self.query, values, template::encode_component);
        let url = with_query(self.url.render_url(values), &query);
        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        for (name, t) in &self.headers {
            let v = t.render_raw(values);
            let v = HeaderValue::from_str(&v).map_err(|_| {
                format!("header {name}: value has CR, LF or another control character")
            })?;
            headers.push((name.clone(), v));
        }
        if let Some(ua) = &self.user_agent {
            headers.push((http::header::USER_AGENT, ua.clone()));
        }
        if let Some(h) = &self.idempotency_header {
            let key = HeaderValue::from_str(&idempotency_key(job_id, offset))
                .map_err(|e| format!("idempotency key: {e}"))?;
            headers.push((h.clone(), key));
        }
        let body = self.body.as_ref().map(|b| {
            // A Content-Type in request.headers (allowed before body kinds existed) wins.
            if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
                headers.push((http::header::CONTENT_TYPE, b.content_type()));
            }
            b.render(values)
        });
        Ok(ApiRequest {
            method: self.method.clone(),
            url,
            headers,
            body,
            records: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> PipelineConfig {
        PipelineConfig::from_yaml("p.yaml", yaml).unwrap()
    }

    #[test]
    fn csv_placeholder_must_be_a_column() {
        let c = config("input: {format: csv}\nrequest: {url: 'http://h/{nope}'}\n");
        let header = vec!["id".to_string(), "name".to_string()];
        let e = compile(&c, Some(&header), "p.yaml").unwrap_err();
        assert_eq!(e.field, "request.url");
        assert!(
            e.to_string()
                .contains("{nope} names no CSV column (columns: id, name)"),
            "{e}"
        );
    }

    #[test]
    fn declared_field_must_be_a_column() {
        let c = config(
            "input: {format: csv, fields: [{name: idx}]}\nrequest: {url: 'http://h/{idx}'}\n",
        );
        let e = compile(&c, Some(&["id".to_string()]), "p.yaml").unwrap_err();
        assert_eq!(e.field, "input.fields[0].name");
    }

    #[test]
    fn renders_url_headers_body_and_idempotency_key() {
        let c = config(
            "input: {format: csv}\nrequest:\n  method: POST\n  url: 'http://h:1/u/{id}'\n  headers: {X-Id: 'i={id}'}\n  body: {name: '{name}'}\n",
        );
        let header = vec!["id".to_string(), "name".to_string()];
        let (mut parser, renderer) = compile(&c, Some(&header), "p.yaml").unwrap();
        let values = parser.parse("a/b,\"Zoë\"".as_bytes()).unwrap();
        let req = renderer.render(&values, "job1", 42).unwrap();
        assert_eq!(req.url, "http://h:1/u/a%2Fb");
        assert_eq!(req.method, http::Method::POST);
        let get = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-id").as_deref(), Some("i=a/b"));
        assert_eq!(get("idempotency-key").as_deref(), Some("job1-42"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(req.body.as_deref(), Some(r#"{"name":"Zoë"}"#.as_bytes()));
    }

    #[test]
    fn header_injection_rejects_the_record() {
        let c =
            config("input: {format: jsonl}\nrequest: {url: 'http://h/x', headers: {X-V: '{v}'}}\n");
        let (mut parser, renderer) = compile(&c, None, "p.yaml").unwrap();
        let values = parser.parse(br#"{"v": "a\r\nX-Evil: 1"}"#).unwrap();
        assert!(
            renderer
                .render(&values, "j", 0)
                .unwrap_err()
                .contains("CR, LF")
        );
    }

    fn render_one(yaml: &str, record: &[u8]) -> ApiRequest {
        let (mut parser, renderer) = compile(&config(yaml), None, "p.yaml").unwrap();
        let values = parser.parse(record).unwrap();
        renderer.render(&values, "j", 0).unwrap()
    }

    fn header(req: &ApiRequest, name: &str) -> Option<String> {
        req.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap().to_string())
    }

    #[test]
    fn form_body_is_url_encoded_with_its_content_type() {
        let req = render_one(
            "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x', form: {q: 'name: {v}', 'a b': '1'}}\n",
            br#"{"v": "Zo\u00eb & co=1"}"#,
        );
        assert_eq!(
            req.body.as_deref(),
            Some("a+b=1&q=name%3A+Zo%C3%AB+%26+co%3D1".as_bytes())
        );
        assert_eq!(
            header(&req, "content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
    }

    #[test]
    fn text_body_is_sent_as_rendered_with_its_content_type() {
        let yaml = "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x', text: \"id={v}\\n\"}\n";
        let req = render_one(yaml, br#"{"v": "a&b"}"#);
        assert_eq!(req.body.as_deref(), Some("id=a&b\n".as_bytes()));
        assert_eq!(
            header(&req, "content-type").as_deref(),
            Some(DEFAULT_TEXT_CONTENT_TYPE)
        );
        let yaml = "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x', text: '{v}', content_type: text/csv}\n";
        let req = render_one(yaml, br#"{"v": "1,2"}"#);
        assert_eq!(header(&req, "content-type").as_deref(), Some("text/csv"));
    }

    #[test]
    fn query_is_encoded_and_appended_before_the_fragment() {
        let req = render_one(
            "input: {format: jsonl}\nrequest: {url: 'http://h/x?k=1#f', query: {q: '{v}', 'a b': 'c'}, user_agent: fanout/1}\n",
            br#"{"v": "a&b=c d"}"#,
        );
        assert_eq!(req.url, "http://h/x?k=1&a%20b=c&q=a%26b%3Dc%20d#f");
        assert_eq!(header(&req, "user-agent").as_deref(), Some("fanout/1"));
        assert_eq!(with_query("http://h/x".into(), "q=1"), "http://h/x?q=1");
        assert_eq!(with_query("http://h/x?".into(), "q=1"), "http://h/x?q=1");
    }
}
