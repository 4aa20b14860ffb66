//! Request building: a pipeline config bound to an input's columns renders records into requests.

use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{ConfigError, FieldType, InputFormat, PipelineConfig};
use crate::record::{RecordParser, SchemaField, Source};
use crate::template::{BodyTemplate, Template};

/// One HTTP request, ready to send (and to send again, unchanged, on retry).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<bytes::Bytes>,
}

/// The request templates of a pipeline, bound to record slots. Shared by all in-flight calls.
#[derive(Clone, Debug)]
pub struct RequestRenderer {
    method: http::Method,
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<BodyTemplate>,
    idempotency_header: Option<HeaderName>,
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
            fields
        }
    };
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
    let body = match &config.request.body {
        Some(b) => {
            let mut t = BodyTemplate::parse(b).map_err(|m| err("request.body", m))?;
            t.bind(&slot_of).map_err(|m| err("request.body", m))?;
            Some(t)
        }
        None => None,
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
    let parser = RecordParser::new(input.format, fields, input.delimiter as u8, columns);
    Ok((
        parser,
        RequestRenderer {
            method,
            url,
            headers,
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
        let url = self.url.render_url(values);
        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        for (name, t) in &self.headers {
            let v = t.render_raw(values);
            let v = HeaderValue::from_str(&v).map_err(|_| {
                format!("header {name}: value has CR, LF or another control character")
            })?;
            headers.push((name.clone(), v));
        }
        if let Some(h) = &self.idempotency_header {
            let key = HeaderValue::from_str(&idempotency_key(job_id, offset))
                .map_err(|e| format!("idempotency key: {e}"))?;
            headers.push((h.clone(), key));
        }
        let body = self.body.as_ref().map(|b| {
            headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
            bytes::Bytes::from(b.render(values).to_string())
        });
        Ok(ApiRequest {
            method: self.method.clone(),
            url,
            headers,
            body,
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
}
