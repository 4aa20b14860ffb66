//! The template's CloudWatch dashboard, fetched and drawn locally: `fanout dashboard` reads the
//! DashboardBody of template.yaml, asks GetMetricData for every metric row, and renders one SVG
//! chart per widget (the same charts as the job report), so the dashboard can be reviewed on the
//! local stack.

use std::collections::BTreeMap;
use std::fmt::Write;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat};
use serde_json::Value;

use crate::charts::{self, Series, esc};

/// One row of a widget's `metrics`.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    Metric {
        id: Option<String>,
        namespace: String,
        name: String,
        dimensions: Vec<(String, String)>,
        stat: String,
        period: i32,
        label: String,
        visible: bool,
    },
    /// `x / PERIOD(x)`: a per-second rate of row `x`.
    PerSecond { of: String, label: String },
    /// `SEARCH('{Ns,Dim} MetricName="X"', 'Stat', period)`: every metric of that schema.
    Search {
        namespace: String,
        dimension_names: Vec<String>,
        name: String,
        stat: String,
        period: i32,
    },
    /// An expression this tool does not evaluate.
    Other { expression: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Widget {
    Text(String),
    Metric {
        title: String,
        rows: Vec<Row>,
        reference: Option<(String, f64)>,
    },
    Alarms(Vec<String>),
}

/// The dashboard body of a SAM/CloudFormation template, with `${...}` replaced from `subs`
/// (unknown names become "unknown", so the body stays valid JSON where they stand in strings).
pub fn dashboard_body(
    template_yaml: &str,
    subs: &BTreeMap<String, String>,
) -> anyhow::Result<Value> {
    let t: serde_norway::Value = serde_norway::from_str(template_yaml)?;
    let resources = t
        .get("Resources")
        .and_then(|r| r.as_mapping())
        .ok_or_else(|| anyhow::anyhow!("the template has no Resources"))?;
    let body = resources
        .values()
        .find(|r| r.get("Type").and_then(|t| t.as_str()) == Some("AWS::CloudWatch::Dashboard"))
        .and_then(|d| d.get("Properties")?.get("DashboardBody"))
        .ok_or_else(|| anyhow::anyhow!("the template has no dashboard"))?;
    let text = match body {
        serde_norway::Value::Tagged(t) => t.value.as_str().map(str::to_string),
        serde_norway::Value::String(s) => Some(s.clone()),
        _ => None,
    }
    .ok_or_else(|| anyhow::anyhow!("DashboardBody is not a !Sub string"))?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| anyhow::anyhow!("unclosed ${{ in the dashboard"))?
            + start;
        let name = &rest[start + 2..end];
        out.push_str(subs.get(name).map_or("unknown", String::as_str));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(serde_json::from_str(&out)?)
}

/// What `${...}` stands for on a stack: the template's parameter defaults, the stack's name and
/// region, and the names of its queues, table and functions.
pub fn substitutions(
    template_yaml: &str,
    stack_name: &str,
    region: &str,
    names: &[(&str, &str)],
) -> anyhow::Result<BTreeMap<String, String>> {
    let t: serde_norway::Value = serde_norway::from_str(template_yaml)?;
    let mut subs = BTreeMap::new();
    for (k, v) in t
        .get("Parameters")
        .and_then(|p| p.as_mapping())
        .into_iter()
        .flatten()
    {
        let default = match v.get("Default") {
            Some(serde_norway::Value::Number(n)) => n.to_string(),
            Some(serde_norway::Value::String(s)) => s.clone(),
            _ => continue,
        };
        subs.insert(k.as_str().unwrap_or_default().to_string(), default);
    }
    subs.insert("AWS::StackName".into(), stack_name.into());
    subs.insert("AWS::Region".into(), region.into());
    subs.insert("AWS::Partition".into(), "aws".into());
    subs.insert("AWS::AccountId".into(), "123456789012".into());
    for (k, v) in names {
        subs.insert((*k).to_string(), (*v).to_string());
    }
    Ok(subs)
}

/// The widgets of a dashboard body.
pub fn widgets(body: &Value) -> Vec<Widget> {
    let mut out = Vec::new();
    for w in body["widgets"].as_array().into_iter().flatten() {
        let p = &w["properties"];
        match w["type"].as_str() {
            Some("text") => out.push(Widget::Text(p["markdown"].as_str().unwrap_or("").into())),
            Some("alarm") => out.push(Widget::Alarms(
                p["alarms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect(),
            )),
            Some("metric") => {
                let period = p["period"].as_i64().unwrap_or(300) as i32;
                let stat = p["stat"].as_str().unwrap_or("Average");
                let rows = p["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_array().map(|r| row(r, stat, period)))
                    .collect();
                let reference = p["annotations"]["horizontal"][0]["value"]
                    .as_f64()
                    .map(|v| {
                        let label = p["annotations"]["horizontal"][0]["label"]
                            .as_str()
                            .unwrap_or("");
                        (label.to_string(), v)
                    });
                out.push(Widget::Metric {
                    title: p["title"].as_str().unwrap_or("").into(),
                    rows,
                    reference,
                });
            }
            _ => {}
        }
    }
    out
}

fn row(r: &[Value], widget_stat: &str, widget_period: i32) -> Row {
    let opts = r
        .iter()
        .find(|v| v.is_object())
        .cloned()
        .unwrap_or_default();
    let label = opts["label"].as_str().map(str::to_string);
    if let Some(expr) = opts["expression"].as_str() {
        let e = expr.replace(' ', "");
        if let Some((x, y)) = e.split_once("/PERIOD(")
            && y.trim_end_matches(')') == x
        {
            return Row::PerSecond {
                of: x.to_string(),
                label: label.unwrap_or_else(|| expr.to_string()),
            };
        }
        if let Some(search) = search_row(expr, widget_period) {
            return search;
        }
        return Row::Other {
            expression: expr.to_string(),
        };
    }
    let strings: Vec<&str> = r.iter().filter_map(Value::as_str).collect();
    let name = strings.get(1).copied().unwrap_or("").to_string();
    Row::Metric {
        id: opts["id"].as_str().map(str::to_string),
        namespace: strings.first().copied().unwrap_or("").to_string(),
        dimensions: strings[2.min(strings.len())..]
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect(),
        stat: opts["stat"].as_str().unwrap_or(widget_stat).to_string(),
        period: opts["period"].as_i64().map_or(widget_period, |p| p as i32),
        label: label.unwrap_or_else(|| name.clone()),
        name,
        visible: opts["visible"].as_bool().unwrap_or(true),
    }
}

fn search_row(expr: &str, widget_period: i32) -> Option<Row> {
    let s = &expr[expr.find("SEARCH(")?..];
    let schema = &s[s.find('{')? + 1..s.find('}')?];
    let mut parts = schema
        .split(',')
        .map(|p| p.trim().trim_matches('"').to_string());
    let namespace = parts.next()?;
    let dimension_names: Vec<String> = parts.collect();
    let after = &s[s.find("MetricName=")? + "MetricName=".len()..];
    let name: String = after
        .trim_start_matches(['"', '\\'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let args: Vec<&str> = s.split(',').collect();
    let stat = args
        .iter()
        .rev()
        .nth(1)
        .map(|a| a.trim().trim_matches('\'').to_string())
        .unwrap_or_else(|| "Sum".into());
    let period = args
        .last()
        .and_then(|a| a.trim().trim_end_matches(')').parse().ok())
        .unwrap_or(widget_period);
    Some(Row::Search {
        namespace,
        dimension_names,
        name,
        stat,
        period,
    })
}

/// A widget with its data.
pub struct Fetched {
    pub widget: Widget,
    pub series: Vec<(Series, String)>,
    /// Rows that could not be fetched or evaluated, and why.
    pub notes: Vec<String>,
}

/// Restricts every row of `namespace` to one pipeline (adds the Pipeline dimension).
pub fn for_pipeline(widgets: &mut [Widget], namespace: &str, pipeline: &str) {
    for w in widgets {
        if let Widget::Metric { rows, .. } = w {
            for r in rows {
                if let Row::Metric {
                    namespace: ns,
                    dimensions,
                    ..
                } = r
                    && ns == namespace
                    && dimensions.is_empty()
                {
                    dimensions.push((
                        fanout_core::metrics::DIMENSION_PIPELINE.into(),
                        pipeline.into(),
                    ));
                }
            }
        }
    }
}

async fn query(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    name: &str,
    dimensions: &[(String, String)],
    stat: &str,
    period: i32,
    range: (DateTime, DateTime),
) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut metric = Metric::builder().namespace(namespace).metric_name(name);
    for (k, v) in dimensions {
        metric = metric.dimensions(Dimension::builder().name(k).value(v).build());
    }
    let q = MetricDataQuery::builder()
        .id("m")
        .metric_stat(
            MetricStat::builder()
                .metric(metric.build())
                .period(period)
                .stat(stat)
                .build(),
        )
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(q)
        .start_time(range.0)
        .end_time(range.1)
        .send()
        .await
        .map_err(short_error)?;
    let mut points: Vec<(f64, f64)> = out
        .metric_data_results()
        .iter()
        .flat_map(|r| {
            r.timestamps()
                .iter()
                .zip(r.values())
                .map(|(t, v)| (t.secs() as f64, *v))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(points)
}

/// The status, code and message of a failed call, without the SDK's whole context (which would
/// fill the page).
fn short_error<
    E: aws_sdk_cloudwatch::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
>(
    e: aws_sdk_cloudwatch::error::SdkError<E, aws_sdk_cloudwatch::config::http::HttpResponse>,
) -> anyhow::Error {
    use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
    let status = e.raw_response().map(|r| r.status().as_u16());
    match (status, e.code(), e.message()) {
        (_, Some(code), message) => anyhow::anyhow!("{code}: {}", message.unwrap_or("")),
        (Some(status), None, _) => anyhow::anyhow!("the endpoint answered HTTP {status}"),
        _ => anyhow::anyhow!("{}", aws_sdk_cloudwatch::error::DisplayErrorContext(e)),
    }
}

/// Fetches every widget's data for `[start, end]`.
pub async fn fetch(
    cw: &aws_sdk_cloudwatch::Client,
    widgets: Vec<Widget>,
    start: std::time::SystemTime,
    end: std::time::SystemTime,
) -> Vec<Fetched> {
    let range = (DateTime::from(start), DateTime::from(end));
    // Charts show minutes before the end of the range (0 = the end).
    let end_secs = DateTime::from(end).secs() as f64;
    let minutes = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        points
            .into_iter()
            .map(|(t, v)| (((t - end_secs) / 60.0 * 100.0).round() / 100.0, v))
            .collect()
    };
    let mut out = Vec::new();
    for widget in widgets {
        let (mut series, mut notes) = (Vec::new(), Vec::new());
        let mut by_id: BTreeMap<String, (Vec<(f64, f64)>, i32)> = BTreeMap::new();
        if let Widget::Metric { rows, .. } = &widget {
            // Expressions read other rows by id, wherever those stand: evaluate them last.
            let (derived, fetched_first): (Vec<&Row>, Vec<&Row>) = rows
                .iter()
                .partition(|r| matches!(r, Row::PerSecond { .. }));
            for r in fetched_first.into_iter().chain(derived) {
                match r {
                    Row::Metric {
                        id,
                        namespace,
                        name,
                        dimensions,
                        stat,
                        period,
                        label,
                        visible,
                    } => match query(cw, namespace, name, dimensions, stat, *period, range).await {
                        Ok(points) => {
                            let points = minutes(points);
                            if let Some(id) = id {
                                by_id.insert(id.clone(), (points.clone(), *period));
                            }
                            if *visible {
                                series.push((
                                    Series {
                                        label: label.clone(),
                                        points,
                                    },
                                    stat.clone(),
                                ));
                            }
                        }
                        Err(e) => notes.push(format!("{namespace}/{name} {stat}: {e}")),
                    },
                    Row::PerSecond { of, label } => match by_id.get(of) {
                        Some((points, period)) => series.push((
                            Series {
                                label: label.clone(),
                                points: points
                                    .iter()
                                    .map(|(t, v)| (*t, v / f64::from(*period)))
                                    .collect(),
                            },
                            "per second".into(),
                        )),
                        None => notes.push(format!("{label}: no row with id {of}")),
                    },
                    Row::Search {
                        namespace,
                        dimension_names,
                        name,
                        stat,
                        period,
                    } => {
                        let mut list = cw.list_metrics().namespace(namespace).metric_name(name);
                        for d in dimension_names {
                            list = list.dimensions(DimensionFilter::builder().name(d).build());
                        }
                        match list.send().await {
                            Ok(found) => {
                                let mut seen = std::collections::BTreeSet::new();
                                for m in found.metrics() {
                                    let dims: Vec<(String, String)> = m
                                        .dimensions()
                                        .iter()
                                        .map(|d| {
                                            (
                                                d.name().unwrap_or("").to_string(),
                                                d.value().unwrap_or("").to_string(),
                                            )
                                        })
                                        .collect();
                                    let names: Vec<&String> = dims.iter().map(|d| &d.0).collect();
                                    if names != dimension_names.iter().collect::<Vec<_>>()
                                        || !seen.insert(dims.clone())
                                    {
                                        continue;
                                    }
                                    let label = dims
                                        .iter()
                                        .map(|d| d.1.as_str())
                                        .collect::<Vec<_>>()
                                        .join(" ");
                                    match query(cw, namespace, name, &dims, stat, *period, range)
                                        .await
                                    {
                                        Ok(points) => series.push((
                                            Series {
                                                label,
                                                points: minutes(points),
                                            },
                                            stat.clone(),
                                        )),
                                        Err(e) => notes.push(format!("{name} {label}: {e}")),
                                    }
                                }
                            }
                            Err(e) => notes.push(format!(
                                "SEARCH {name}: {}",
                                aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                            )),
                        }
                    }
                    Row::Other { expression } => {
                        notes.push(format!("expression not evaluated here: {expression}"))
                    }
                }
            }
        }
        out.push(Fetched {
            widget,
            series,
            notes,
        });
    }
    out
}

/// The dashboard page: one chart per metric widget, with each series' total and last value.
pub fn render(title: &str, fetched: &[Fetched]) -> String {
    let mut html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}.grid{{display:flex;flex-wrap:wrap;gap:16px}}\
.widget{{border:1px solid #ddd;padding:8px;background:#fafafa}}table{{border-collapse:collapse;font-size:12px}}\
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td.l{{text-align:left}}.note{{color:#8a5300;font-size:12px}}pre{{white-space:pre-wrap;max-width:1100px}}\
</style></head><body><h1>{t}</h1><div class=\"grid\">",
        t = esc(title)
    );
    for f in fetched {
        match &f.widget {
            Widget::Text(md) => {
                let _ = write!(
                    html,
                    "<div class=\"widget text\"><pre>{}</pre></div>",
                    esc(md)
                );
            }
            Widget::Alarms(alarms) => {
                let _ = write!(
                    html,
                    "<div class=\"widget alarms\"><b>Alarms</b> (states are not fetched)<ul>"
                );
                for a in alarms {
                    let _ = write!(html, "<li>{}</li>", esc(a.rsplit(':').next().unwrap_or(a)));
                }
                html.push_str("</ul></div>");
            }
            Widget::Metric {
                title, reference, ..
            } => {
                let series: Vec<Series> = f
                    .series
                    .iter()
                    .map(|(s, _)| Series {
                        label: s.label.clone(),
                        points: s.points.clone(),
                    })
                    .collect();
                let _ = write!(
                    html,
                    "<div class=\"widget metric\" data-title=\"{}\">",
                    esc(title)
                );
                html.push_str(&charts::line_chart(
                    title,
                    "minutes (0 = the end of the range)",
                    "",
                    &series,
                    reference.as_ref().map(|(l, v)| (l.as_str(), *v)),
                ));
                html.push_str("<table><tr><th class=\"l\">series</th><th>stat</th><th>total</th><th>last</th></tr>");
                for (s, stat) in &f.series {
                    let total: f64 = s.points.iter().map(|p| p.1).sum();
                    let last = s
                        .points
                        .last()
                        .map_or("–".to_string(), |p| charts::short(p.1));
                    let _ = write!(
                        html,
                        "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"total\" data-series=\"{}\" data-total=\"{total}\">{}</td><td>{last}</td></tr>",
                        esc(&s.label),
                        esc(stat),
                        esc(&s.label),
                        charts::short(total)
                    );
                }
                html.push_str("</table>");
                for n in &f.notes {
                    let _ = write!(html, "<p class=\"note\">{}</p>", esc(n));
                }
                html.push_str("</div>");
            }
        }
    }
    html.push_str("</div></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../template.yaml");

    fn subs() -> BTreeMap<String, String> {
        substitutions(TEMPLATE, "local", "us-east-1", &[("LedgerTable", "t")]).unwrap()
    }

    #[test]
    fn the_templates_dashboard_parses_into_widgets() {
        let body = dashboard_body(TEMPLATE, &subs()).unwrap();
        let ws = widgets(&body);
        let titles: Vec<&str> = ws
            .iter()
            .filter_map(|w| match w {
                Widget::Metric { title, .. } => Some(title.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            titles.contains(&"Records ok / failed / rejected"),
            "{titles:?}"
        );
        let calls = ws
            .iter()
            .find_map(|w| match w {
                Widget::Metric {
                    title,
                    rows,
                    reference,
                } if title.starts_with("API calls/s") => Some((rows.clone(), reference.clone())),
                _ => None,
            })
            .unwrap();
        // The limit line is the RateLimitPerSecond parameter's default.
        assert_eq!(calls.1, Some(("rate limit".to_string(), 100.0)));
        assert_eq!(subs()["LedgerTable"], "t");
        assert!(matches!(&calls.0[0], Row::PerSecond { of, .. } if of == "calls"));
        assert!(
            matches!(&calls.0[1], Row::Metric { id: Some(id), visible: false, stat, .. } if id == "calls" && stat == "Sum")
        );
        let search = ws.iter().flat_map(|w| match w {
            Widget::Metric { rows, .. } => rows.clone(),
            _ => vec![],
        });
        assert!(search.into_iter().any(|r| r
            == Row::Search {
                namespace: "S3ApiFanout".into(),
                dimension_names: vec!["Pipeline".into()],
                name: "RecordsSucceeded".into(),
                stat: "Sum".into(),
                period: 300,
            }));
    }

    #[test]
    fn a_pipeline_narrows_only_the_custom_metrics() {
        let mut ws = widgets(&dashboard_body(TEMPLATE, &subs()).unwrap());
        for_pipeline(&mut ws, "S3ApiFanout", "users");
        for w in &ws {
            if let Widget::Metric { rows, .. } = w {
                for r in rows {
                    if let Row::Metric {
                        namespace,
                        dimensions,
                        ..
                    } = r
                    {
                        let has = dimensions
                            .iter()
                            .any(|d| d.0 == "Pipeline" && d.1 == "users");
                        assert_eq!(has, namespace == "S3ApiFanout", "{r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn rendered_series_carry_their_totals() {
        let html = render(
            "d",
            &[Fetched {
                widget: Widget::Metric {
                    title: "t".into(),
                    rows: vec![],
                    reference: None,
                },
                series: vec![(
                    Series {
                        label: "ok".into(),
                        points: vec![(1.0, 2.0), (2.0, 3.0)],
                    },
                    "Sum".into(),
                )],
                notes: vec!["n".into()],
            }],
        );
        assert!(
            html.contains(r#"data-series="ok" data-total="5""#),
            "{html}"
        );
        assert_eq!(html.matches("class=\"pt\"").count(), 2);
    }
}
