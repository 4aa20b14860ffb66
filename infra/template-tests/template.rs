//! template.yaml against the code: metric names (both ways), environment variables, ledger keys,
//! queue settings, build settings, least-privilege IAM and alarms. Runs without AWS or an emulator.
//!
//! The template uses CloudFormation's short-form tags (`!Ref`, `!Sub`, ...): serde_norway reads them
//! as tagged values, which [`untag`] looks through.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fanout_core::metrics;
use serde_json::Value as Json;
use serde_norway::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn load_template() -> Value {
    let path = repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_template(&text)
}

fn parse_template(text: &str) -> Value {
    serde_norway::from_str(text).expect("template.yaml is valid YAML")
}

/// The value under a short-form tag (`!Ref X` -> `X`), or the value itself.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// The tag of a short-form intrinsic (`Ref`, `Sub`, ...), or the long-form key.
fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((
            t.tag.to_string().trim_start_matches('!').to_string(),
            &t.value,
        )),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next()?;
            let k = k.as_str()?;
            (k == "Ref" || k.starts_with("Fn::"))
                .then(|| (k.trim_start_matches("Fn::").to_string(), inner))
        }
        _ => None,
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = untag(v);
    for key in path {
        cur = untag(cur.get(*key)?);
    }
    Some(cur)
}

/// Like [`get`], but the value found keeps its tag (for `!Ref`/`!GetAtt` checks).
fn get_raw<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    get(v, parents)?.get(*last)
}

fn resources(t: &Value) -> BTreeMap<String, &Value> {
    get(t, &["Resources"])
        .and_then(Value::as_mapping)
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v))
        .collect()
}

fn resources_of_type<'a>(t: &'a Value, ty: &str) -> BTreeMap<String, &'a Value> {
    resources(t)
        .into_iter()
        .filter(|(_, r)| get(r, &["Type"]).and_then(Value::as_str) == Some(ty))
        .collect()
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    get(t, &["Resources", id]).unwrap_or_else(|| panic!("resource {id} is missing"))
}

fn ref_name(v: &Value) -> Option<String> {
    match intrinsic(v)? {
        (tag, inner) if tag == "Ref" => inner.as_str().map(str::to_string),
        _ => None,
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v.map(untag) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| untag(i).as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

// ------------------------------------------------------------------------------ metric names

/// One metric a dashboard widget or an alarm names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MetricRef {
    namespace: String,
    name: String,
    dimensions: Vec<String>,
    place: String,
}

/// The dashboard body as JSON: `${...}` substitutions become `1` (a valid number in value
/// position and a valid string content in a string).
fn dashboard_json(t: &Value) -> Json {
    let dashboards = resources_of_type(t, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "exactly one dashboard");
    let body = get(
        dashboards.values().next().unwrap(),
        &["Properties", "DashboardBody"],
    )
    .expect("DashboardBody");
    let text = match body {
        Value::String(s) => s.clone(),
        Value::Sequence(parts) => untag(&parts[0]).as_str().expect("Sub text").to_string(),
        other => panic!("DashboardBody must be a !Sub string, found {other:?}"),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unclosed ${") + start;
        out.push('1');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("dashboard body is not JSON: {e}"))
}

/// Metrics named inside a metric-math expression: `SEARCH('{Ns,Dim} MetricName="X"', ...)` and
/// Metrics Insights `SELECT F(X) FROM SCHEMA("Ns", Dim)`.
fn metrics_in_expression(expr: &str, place: &str) -> Vec<MetricRef> {
    let mut found = Vec::new();
    if let Some(i) = expr.find("SEARCH(") {
        let s = &expr[i..];
        let schema = s
            .find('{')
            .and_then(|a| s[a + 1..].find('}').map(|b| &s[a + 1..a + 1 + b]))
            .unwrap_or_else(|| panic!("{place}: SEARCH without {{namespace,...}}: {expr}"));
        let mut parts = schema
            .split(',')
            .map(|p| p.trim().trim_matches('"').to_string());
        let namespace = parts.next().unwrap_or_default();
        let dimensions: Vec<String> = parts.collect();
        let mut rest = s;
        while let Some(j) = rest.find("MetricName=") {
            let after = rest[j + "MetricName=".len()..].trim_start_matches(['"', '\\']);
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(MetricRef {
                namespace: namespace.clone(),
                name,
                dimensions: dimensions.clone(),
                place: place.to_string(),
            });
            rest = &rest[j + 1..];
        }
        assert!(
            !found.is_empty(),
            "{place}: SEARCH must name its metric with MetricName=\"...\": {expr}"
        );
    }
    if let Some(i) = expr.to_ascii_uppercase().find("SCHEMA(") {
        let select = &expr[..i];
        let schema = &expr[i + "SCHEMA(".len()..];
        let schema = &schema[..schema.find(')').expect("SCHEMA(...)")];
        let mut parts = schema
            .split(',')
            .map(|p| p.trim().trim_matches('"').to_string());
        let namespace = parts.next().unwrap_or_default();
        let dimensions: Vec<String> = parts.collect();
        let open = select.find('(').expect("SELECT F(metric)");
        let close = select.find(')').expect("SELECT F(metric)");
        found.push(MetricRef {
            namespace,
            name: select[open + 1..close].trim().to_string(),
            dimensions,
            place: place.to_string(),
        });
    }
    found
}

fn dashboard_metrics(t: &Value) -> Vec<MetricRef> {
    let body = dashboard_json(t);
    let mut found = Vec::new();
    for (w, widget) in body["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .enumerate()
    {
        let title = widget["properties"]["title"].as_str().unwrap_or("");
        let place = format!("dashboard widget {w} ({title})");
        let Some(rows) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        for row in rows {
            let row = row.as_array().expect("a metrics row is an array");
            match row.first() {
                Some(Json::Object(o)) => {
                    if let Some(expr) = o.get("expression").and_then(Json::as_str) {
                        found.extend(metrics_in_expression(expr, &place));
                    }
                }
                Some(Json::String(namespace)) => {
                    assert!(
                        namespace != "." && namespace != "...",
                        "{place}: write metrics rows in full, without the '.'/'...' shorthand"
                    );
                    let strings: Vec<&str> = row.iter().filter_map(Json::as_str).collect();
                    assert!(
                        strings.len() >= 2 && strings.chunks(2).all(|pair| pair.len() == 2),
                        "{place}: {row:?}"
                    );
                    found.push(MetricRef {
                        namespace: namespace.clone(),
                        name: strings[1].to_string(),
                        dimensions: strings[2..]
                            .iter()
                            .step_by(2)
                            .map(|s| s.to_string())
                            .collect(),
                        place: place.clone(),
                    });
                }
                other => panic!("{place}: unexpected metrics row start {other:?}"),
            }
        }
    }
    found
}

fn alarm_metrics(t: &Value) -> Vec<MetricRef> {
    let mut found = Vec::new();
    for (id, alarm) in resources_of_type(t, "AWS::CloudWatch::Alarm") {
        let props = get(alarm, &["Properties"]).expect("alarm Properties");
        let place = format!("alarm {id}");
        let dims = |m: &Value| -> Vec<String> {
            get(m, &["Dimensions"])
                .and_then(Value::as_sequence)
                .map(|ds| {
                    ds.iter()
                        .filter_map(|d| get(d, &["Name"]).and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(name) = get(props, &["MetricName"]).and_then(Value::as_str) {
            found.push(MetricRef {
                namespace: get(props, &["Namespace"])
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{place}: MetricName without Namespace"))
                    .to_string(),
                name: name.to_string(),
                dimensions: dims(props),
                place: place.clone(),
            });
        }
        for q in get(props, &["Metrics"])
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(m) = get(q, &["MetricStat", "Metric"]) {
                found.push(MetricRef {
                    namespace: get(m, &["Namespace"])
                        .and_then(Value::as_str)
                        .unwrap()
                        .into(),
                    name: get(m, &["MetricName"])
                        .and_then(Value::as_str)
                        .unwrap()
                        .into(),
                    dimensions: dims(m),
                    place: place.clone(),
                });
            }
            if let Some(expr) = get(q, &["Expression"]).and_then(Value::as_str) {
                found.extend(metrics_in_expression(expr, &place));
            }
        }
    }
    found
}

/// Every problem with the template's metric names, as messages (empty: all good).
fn metric_name_problems(t: &Value) -> Vec<String> {
    let known: BTreeSet<&str> = metrics::ALL.iter().copied().collect();
    let dashboard = dashboard_metrics(t);
    let alarms = alarm_metrics(t);
    let mut problems = Vec::new();
    for m in dashboard.iter().chain(&alarms) {
        if m.namespace.starts_with("AWS/") {
            continue;
        }
        if m.namespace != metrics::NAMESPACE {
            problems.push(format!(
                "{}: namespace {:?} is neither AWS/* nor {:?}",
                m.place,
                m.namespace,
                metrics::NAMESPACE
            ));
            continue;
        }
        if !known.contains(m.name.as_str()) {
            problems.push(format!(
                "{}: metric {:?} is not in fanout_core::metrics::ALL (the code does not emit it)",
                m.place, m.name
            ));
        }
        for d in &m.dimensions {
            if d != metrics::DIMENSION_PIPELINE {
                problems.push(format!(
                    "{}: dimension {d:?} of {:?}: the code emits only {:?}",
                    m.place,
                    m.name,
                    metrics::DIMENSION_PIPELINE
                ));
            }
        }
    }
    let shown: BTreeSet<&str> = dashboard
        .iter()
        .filter(|m| m.namespace == metrics::NAMESPACE)
        .map(|m| m.name.as_str())
        .collect();
    for name in metrics::ALL {
        if !shown.contains(name) {
            problems.push(format!(
                "metric {name:?} is emitted by the code but shown nowhere on the dashboard"
            ));
        }
    }
    problems
}

#[test]
fn dashboard_and_alarms_name_exactly_the_metrics_the_code_emits() {
    let t = load_template();
    let problems = metric_name_problems(&t);
    assert!(
        problems.is_empty(),
        "metric names:\n{}",
        problems.join("\n")
    );
    // The checker sees both sources.
    assert!(dashboard_metrics(&t).len() > metrics::ALL.len());
    assert!(
        alarm_metrics(&t)
            .iter()
            .any(|m| m.namespace == metrics::NAMESPACE)
    );
}

#[test]
fn the_metric_check_catches_unknown_and_missing_names() {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    // An alarm on a metric the code does not emit.
    let bad_alarm = text.replacen("MetricName: JobsFailed", "MetricName: JobsFailedTypo", 1);
    assert_ne!(bad_alarm, text);
    let problems = metric_name_problems(&parse_template(&bad_alarm));
    assert!(
        problems.iter().any(|p| p.contains("JobsFailedTypo")),
        "{problems:?}"
    );
    // A dashboard that no longer shows one of the code's metrics.
    let missing = text.replace(
        r#"["S3ApiFanout", "BytesRead", {"stat": "Sum", "label": "bytes read", "yAxis": "right"}]"#,
        r#"["AWS/Lambda", "Invocations", {"stat": "Sum", "label": "bytes read", "yAxis": "right"}]"#,
    );
    assert_ne!(missing, text);
    let problems = metric_name_problems(&parse_template(&missing));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("\"BytesRead\" is emitted")),
        "{problems:?}"
    );
    // A wrong namespace and a dimension the code does not emit.
    let bad_ns = text.replacen(
        r#"["S3ApiFanout", "Retries", {"label": "retries"}]"#,
        r#"["S3ApiFanOut", "Retries", "Job", "x", {"label": "retries"}]"#,
        1,
    );
    let problems = metric_name_problems(&parse_template(&bad_ns));
    assert!(
        problems.iter().any(|p| p.contains("S3ApiFanOut")),
        "{problems:?}"
    );
    // Expressions are read too.
    let found = metrics_in_expression(
        r#"SEARCH('{S3ApiFanout,Pipeline} MetricName="ApiCalls"', 'Sum', 60)"#,
        "x",
    );
    assert_eq!(found[0].name, "ApiCalls");
    assert_eq!(found[0].dimensions, vec!["Pipeline".to_string()]);
    let found = metrics_in_expression(
        r#"SELECT SUM(Status429) FROM SCHEMA("S3ApiFanout", Pipeline)"#,
        "x",
    );
    assert_eq!(found[0].name, "Status429");
    assert_eq!(found[0].namespace, "S3ApiFanout");
}

// ------------------------------------------------------------------------------ functions

fn function_props<'a>(t: &'a Value, id: &str) -> &'a Value {
    let f = resource(t, id);
    assert_eq!(
        get(f, &["Type"]).and_then(Value::as_str),
        Some("AWS::Serverless::Function")
    );
    get(f, &["Properties"]).unwrap()
}

#[test]
fn functions_default_to_arm64_al2023_and_are_built_with_cargo_lambda_from_their_crates() {
    let t = load_template();
    let globals = get(&t, &["Globals", "Function"]).expect("Globals.Function");
    for (id, binary) in [
        ("SplitterFunction", "splitter"),
        ("WorkerFunction", "worker"),
    ] {
        let f = resource(&t, id);
        let props = function_props(&t, id);
        let setting = |k: &str| get(props, &[k]).or_else(|| get(globals, &[k]));
        assert_eq!(
            setting("Runtime").and_then(Value::as_str),
            Some("provided.al2023"),
            "{id}"
        );
        // The architecture is the Architecture parameter, arm64 unless a deploy overrides it
        // (samconfig.toml's local environment builds x86_64, see there why).
        let architectures = setting("Architectures")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("{id}: Architectures is a list"));
        let [architecture] = architectures.as_slice() else {
            panic!("{id}: one architecture, got {architectures:?}");
        };
        let resolved = match ref_name(architecture) {
            Some(parameter) => get(&t, &["Parameters", &parameter, "Default"])
                .and_then(Value::as_str)
                .map(str::to_owned),
            None => untag(architecture).as_str().map(str::to_owned),
        };
        assert_eq!(resolved.as_deref(), Some("arm64"), "{id}");
        assert_eq!(
            setting("Handler").and_then(Value::as_str),
            Some("bootstrap")
        );
        assert_eq!(
            get(f, &["Metadata", "BuildMethod"]).and_then(Value::as_str),
            Some("rust-cargolambda"),
            "{id}"
        );
        assert_eq!(
            get(f, &["Metadata", "BuildProperties", "Binary"]).and_then(Value::as_str),
            Some(binary),
            "{id}"
        );
        // CodeUri is the crate whose package builds that binary.
        let code_uri = get(props, &["CodeUri"]).and_then(Value::as_str).unwrap();
        let manifest = std::fs::read_to_string(repo_root().join(code_uri).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{id}: CodeUri {code_uri} has no Cargo.toml: {e}"));
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{id}: {code_uri}/Cargo.toml does not build {binary}"
        );
        assert!(
            get(props, &["ReservedConcurrentExecutions"]).is_some(),
            "{id}: reserved concurrency"
        );
        assert!(
            get(props, &["LoggingConfig", "LogGroup"]).is_some(),
            "{id}: own log group"
        );
    }
}

/// Rust source files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The string literals of `text` that look like environment variable names (`QUEUE_URL`);
/// with `after`, only those that follow it directly (e.g. `env::var(`).
fn env_names(text: &str, after: Option<&str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices('"') {
        if let Some(prefix) = after
            && !text[..i].ends_with(prefix)
        {
            continue;
        }
        let rest = &text[i + 1..];
        let Some(end) = rest.find('"') else { break };
        let lit = &rest[..end];
        let looks = lit.len() > 2
            && lit.starts_with(|c: char| c.is_ascii_uppercase())
            && lit
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if looks {
            names.insert(lit.to_string());
        }
    }
    names
}

/// Variables the shared code reads that the template must not set: Lambda sets
/// `AWS_LAMBDA_LOG_LEVEL` from the function's `LoggingConfig.ApplicationLogLevel`, and the rest
/// are overrides for local runs.
const NOT_FROM_THE_TEMPLATE: &[(&str, &str)] = &[
    (
        "AWS_LAMBDA_LOG_LEVEL",
        "set by Lambda from LoggingConfig.ApplicationLogLevel",
    ),
    (
        "RUST_LOG",
        "a local override of the log level (shared/handlers/src/telemetry.rs)",
    ),
    (
        "FANOUT_S3_PATH_STYLE",
        "local S3 emulators only (shared/aws/src/lib.rs)",
    ),
];

/// Both ways: every variable a function's code reads is set by the template (or is one of
/// [`NOT_FROM_THE_TEMPLATE`]), and every variable the template sets is read by the code. A
/// function's code is its crate (functions/<name>/src: every all-caps string literal there is an
/// environment variable) and the `env::var` calls of the shared crates; the splitter also reads
/// [`fanout_core::stack_defaults::VARS`] through `StackDefaults::from_vars`.
#[test]
fn functions_get_the_environment_the_code_reads() {
    let t = load_template();
    let root = repo_root();
    let mut shared = BTreeSet::new();
    for file in rust_files(&root.join("shared")) {
        let text = std::fs::read_to_string(&file).unwrap();
        // Test modules come last in a file; what they read is not the function's.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for prefix in ["env::var(", "env::var_os("] {
            shared.extend(env_names(code, Some(prefix)));
        }
    }
    let allowed: BTreeSet<String> = NOT_FROM_THE_TEMPLATE
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(shared, allowed, "the shared crates' environment");
    for (id, dir) in [
        ("SplitterFunction", "splitter"),
        ("WorkerFunction", "worker"),
    ] {
        let mut reads = BTreeSet::new();
        for file in rust_files(&root.join("functions").join(dir).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            reads.extend(env_names(&text, None));
            if text.contains("StackDefaults::from_vars") {
                reads.extend(
                    fanout_core::stack_defaults::VARS
                        .iter()
                        .map(|v| v.to_string()),
                );
            }
        }
        let env = get(function_props(&t, id), &["Environment", "Variables"])
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{id}: Environment.Variables"));
        let set: BTreeSet<String> = env
            .keys()
            .map(|k| k.as_str().expect("a variable name").to_string())
            .collect();
        assert_eq!(
            set, reads,
            "{id}: the template's variables (left) against those functions/{dir}/src reads (right)"
        );
        for name in &allowed {
            assert!(
                !set.contains(name),
                "{id} sets {name}, which is not the template's"
            );
        }
        // Lambda sets AWS_LAMBDA_LOG_LEVEL from this (with JSON logs, as the code writes).
        let logging = get(function_props(&t, id), &["LoggingConfig"]).expect("LoggingConfig");
        assert_eq!(
            get(logging, &["LogFormat"]).and_then(Value::as_str),
            Some("JSON"),
            "{id}"
        );
        assert_eq!(
            ref_name(get_raw(logging, &["ApplicationLogLevel"]).expect("ApplicationLogLevel"))
                .as_deref(),
            Some("LogLevel"),
            "{id}"
        );
    }
    let env = get(
        function_props(&t, "SplitterFunction"),
        &["Environment", "Variables"],
    )
    .unwrap();
    assert_eq!(
        ref_name(env.get("QUEUE_URL").unwrap()).as_deref(),
        Some("ManifestQueue")
    );
    // The rate-limit leases are sized for the most containers that can run: the reserved concurrency.
    let worker = function_props(&t, "WorkerFunction");
    let env = get(worker, &["Environment", "Variables"]).unwrap();
    assert_eq!(
        ref_name(env.get("FLEET_SIZE").unwrap()),
        ref_name(get_raw(worker, &["ReservedConcurrentExecutions"]).unwrap())
    );
    for id in ["SplitterFunction", "WorkerFunction"] {
        let env = get(function_props(&t, id), &["Environment", "Variables"]).unwrap();
        assert_eq!(
            ref_name(env.get("TABLE_NAME").unwrap()).as_deref(),
            Some("LedgerTable")
        );
    }
    assert_eq!(
        ref_name(env.get("SECRET_CACHE_SECONDS").unwrap()).as_deref(),
        Some("SecretCacheSeconds")
    );
}

#[test]
fn worker_pollers_never_exceed_its_reserved_concurrency() {
    let t = load_template();
    let props = function_props(&t, "WorkerFunction");
    let reserved = ref_name(get_raw(props, &["ReservedConcurrentExecutions"]).unwrap())
        .expect("reserved concurrency from a parameter");
    let events = get(props, &["Events"]).and_then(Value::as_mapping).unwrap();
    let sqs: Vec<&Value> = events
        .values()
        .filter(|e| get(e, &["Type"]).and_then(Value::as_str) == Some("SQS"))
        .collect();
    assert_eq!(sqs.len(), 1, "one SQS event source");
    let ev = get(sqs[0], &["Properties"]).unwrap();
    let (tag, target) = intrinsic(ev.get("Queue").unwrap()).expect("!GetAtt");
    assert_eq!(
        (tag.as_str(), target.as_str()),
        ("GetAtt", Some("ManifestQueue.Arn"))
    );
    assert_eq!(
        ref_name(get_raw(ev, &["ScalingConfig", "MaximumConcurrency"]).unwrap()),
        Some(reserved.clone()),
        "MaximumConcurrency must be the reserved concurrency"
    );
    assert_eq!(
        str_list(get(ev, &["FunctionResponseTypes"])),
        vec!["ReportBatchItemFailures"]
    );
    // MaximumConcurrency is at least 2, so the reserved concurrency parameter must be too.
    let min = get(&t, &["Parameters", &reserved, "MinValue"]).and_then(Value::as_u64);
    assert!(min.is_some_and(|m| m >= 2), "{reserved} MinValue >= 2");
    // Batch sizes above 10 need a batching window.
    let batch = ref_name(get_raw(ev, &["BatchSize"]).unwrap()).unwrap();
    let max = get(&t, &["Parameters", &batch, "MaxValue"]).and_then(Value::as_u64);
    assert!(max.is_some_and(|m| m <= 10), "{batch} MaxValue <= 10");
}

// ------------------------------------------------------------------------------ queue and table

#[test]
fn manifest_queue_visibility_is_six_times_the_worker_timeout_and_redrives() {
    let t = load_template();
    let timeouts = get(&t, &["Parameters", "WorkerTimeout", "AllowedValues"])
        .and_then(Value::as_sequence)
        .expect("WorkerTimeout AllowedValues");
    let q = get(resource(&t, "ManifestQueue"), &["Properties"]).unwrap();
    let (tag, args) = intrinsic(q.get("VisibilityTimeout").unwrap()).expect("!FindInMap");
    assert_eq!(tag, "FindInMap");
    let map_name = untag(&args[0]).as_str().unwrap();
    assert_eq!(ref_name(&args[1]).as_deref(), Some("WorkerTimeout"));
    for timeout in timeouts {
        let secs: u64 = match untag(timeout) {
            Value::String(s) => s.parse().expect("a timeout in seconds"),
            other => other.as_u64().expect("a timeout in seconds"),
        };
        let vis = get(&t, &["Mappings", map_name, &secs.to_string(), "Seconds"])
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no visibility for worker timeout {secs}"));
        assert!(vis >= 6 * secs, "timeout {secs}: visibility {vis} < 6x");
        assert!(vis <= 43200, "visibility above the SQS maximum");
    }
    let redrive = get(q, &["RedrivePolicy"]).unwrap();
    assert_eq!(
        get(redrive, &["maxReceiveCount"]).and_then(Value::as_u64),
        Some(u64::from(fanout_core::claims::MAX_RECEIVE_COUNT)),
        "the local stack (cli/src/local.rs) mirrors the template"
    );
    let dlq = get(resource(&t, "ManifestDeadLetterQueue"), &["Properties"]).unwrap();
    assert_eq!(
        get(dlq, &["MessageRetentionPeriod"]).and_then(Value::as_u64),
        Some(14 * 24 * 3600)
    );
    for id in [
        "ManifestQueue",
        "ManifestDeadLetterQueue",
        "SplitterFailureQueue",
    ] {
        let p = get(resource(&t, id), &["Properties"]).unwrap();
        assert_eq!(
            ref_name(p.get("KmsMasterKeyId").unwrap()).as_deref(),
            Some("Key"),
            "{id}"
        );
    }
}

#[test]
fn ledger_table_has_the_code_keys_ttl_pitr_and_the_key() {
    let t = load_template();
    let p = get(resource(&t, "LedgerTable"), &["Properties"]).unwrap();
    let keys: Vec<(String, String)> = get(p, &["KeySchema"])
        .and_then(Value::as_sequence)
        .unwrap()
        .iter()
        .map(|k| {
            (
                get(k, &["AttributeName"])
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string(),
                get(k, &["KeyType"])
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    assert_eq!(
        get(p, &["TimeToLiveSpecification", "AttributeName"]).and_then(Value::as_str),
        Some("expires_at")
    );
    assert_eq!(
        get(
            p,
            &[
                "PointInTimeRecoverySpecification",
                "PointInTimeRecoveryEnabled"
            ]
        )
        .and_then(Value::as_bool),
        Some(true)
    );
    assert_eq!(
        get(p, &["BillingMode"]).and_then(Value::as_str),
        Some("PAY_PER_REQUEST")
    );
    assert_eq!(
        get(p, &["SSESpecification", "SSEType"]).and_then(Value::as_str),
        Some("KMS")
    );
}

// ------------------------------------------------------------------------------ IAM

#[test]
fn iam_policies_have_no_wildcard_action_or_resource() {
    let t = load_template();
    let mut checked = 0;
    for (id, policy) in resources_of_type(&t, "AWS::IAM::Policy") {
        let statements = get(policy, &["Properties", "PolicyDocument", "Statement"])
            .and_then(Value::as_sequence)
            .unwrap();
        for s in statements {
            for action in str_list(get(s, &["Action"])) {
                assert!(!action.contains('*'), "{id}: wildcard action {action}");
            }
            assert!(get(s, &["NotAction"]).is_none() && get(s, &["NotResource"]).is_none());
            for r in str_list(get(s, &["Resource"])) {
                // PutMetricData takes no resource but "*"; the namespace condition narrows it.
                let metrics_only = str_list(get(s, &["Action"])) == ["cloudwatch:PutMetricData"]
                    && get(s, &["Condition", "StringEquals", "cloudwatch:namespace"])
                        .and_then(Value::as_str)
                        == Some(metrics::NAMESPACE);
                assert!(r != "*" || metrics_only, "{id}: wildcard resource");
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "the function policies were found");
    // The functions use their own roles, not roles SAM would extend with managed policies.
    for id in ["SplitterFunction", "WorkerFunction"] {
        let props = function_props(&t, id);
        assert!(get(props, &["Role"]).is_some(), "{id}: explicit Role");
        assert!(get(props, &["Policies"]).is_none(), "{id}: no SAM Policies");
    }
    for (id, role) in resources_of_type(&t, "AWS::IAM::Role") {
        let p = get(role, &["Properties"]).unwrap();
        assert!(
            get(p, &["ManagedPolicyArns"]).is_none(),
            "{id}: no managed policies"
        );
        assert!(
            get(p, &["Policies"]).is_none(),
            "{id}: policies are separate resources"
        );
    }
}

/// The worker streams a large output part as a multipart upload (its parts are s3:PutObject) and
/// aborts it when the manifest fails; an upload an abort missed is removed by the data bucket's
/// lifecycle rule, whatever its prefix.
#[test]
fn the_worker_may_abort_its_uploads_and_the_data_bucket_expires_incomplete_ones() {
    let t = load_template();
    let statements = get(
        resource(&t, "WorkerPolicy"),
        &["Properties", "PolicyDocument", "Statement"],
    )
    .and_then(Value::as_sequence)
    .unwrap();
    let writes: Vec<Vec<String>> = statements
        .iter()
        .map(|s| str_list(get(s, &["Action"])))
        .filter(|actions| actions.iter().any(|a| a == "s3:PutObject"))
        .collect();
    assert!(!writes.is_empty(), "the worker writes its outputs");
    for actions in writes {
        // The same statement: the same output prefixes.
        assert!(
            actions.iter().any(|a| a == "s3:AbortMultipartUpload"),
            "WorkerPolicy: s3:PutObject without s3:AbortMultipartUpload: {actions:?}"
        );
    }
    let rules = get(
        resource(&t, "DataBucket"),
        &["Properties", "LifecycleConfiguration", "Rules"],
    )
    .and_then(Value::as_sequence)
    .unwrap();
    let abort = rules
        .iter()
        .find(|r| get(r, &["AbortIncompleteMultipartUpload"]).is_some())
        .expect("DataBucket: an AbortIncompleteMultipartUpload rule");
    assert_eq!(
        get(abort, &["Status"]).and_then(Value::as_str),
        Some("Enabled")
    );
    assert!(
        get(abort, &["Prefix"]).is_none() && get(abort, &["Filter"]).is_none(),
        "DataBucket: the abort rule covers every prefix"
    );
    let days = get(
        abort,
        &["AbortIncompleteMultipartUpload", "DaysAfterInitiation"],
    )
    .and_then(Value::as_u64)
    .unwrap();
    assert!((1..=7).contains(&days), "{days} days");
}

/// The encryption context's `purpose` of the shared OAuth2 tokens: `PURPOSE` in
/// shared/aws/src/token_store.rs (this crate depends on the core alone).
const OAUTH2_TOKEN_PURPOSE: &str = "fanout-oauth2-token";

#[test]
fn the_worker_encrypts_with_the_stack_key_only_shared_oauth2_tokens() {
    let t = load_template();
    // functions/worker/src/lib.rs reads KMS_KEY_ID: the key the token store encrypts with.
    let env = get(
        function_props(&t, "WorkerFunction"),
        &["Environment", "Variables"],
    )
    .unwrap();
    assert_eq!(
        ref_name(
            env.get("KMS_KEY_ID")
                .expect("WorkerFunction lacks KMS_KEY_ID")
        )
        .as_deref(),
        Some("Key")
    );
    let mut encrypting = Vec::new();
    for (id, policy) in resources_of_type(&t, "AWS::IAM::Policy") {
        let statements = get(policy, &["Properties", "PolicyDocument", "Statement"])
            .and_then(Value::as_sequence)
            .unwrap();
        for s in statements {
            let actions = str_list(get(s, &["Action"]));
            if !actions.iter().any(|a| a == "kms:Encrypt") {
                continue;
            }
            // A statement of its own: the condition must not narrow the other KMS uses.
            assert_eq!(actions, ["kms:Encrypt"], "{id}: kms:Encrypt alone");
            let (tag, target) = intrinsic(get_raw(s, &["Resource"]).unwrap()).expect("!GetAtt");
            assert_eq!(
                (tag.as_str(), target.as_str()),
                ("GetAtt", Some("Key.Arn")),
                "{id}"
            );
            assert_eq!(
                get(
                    s,
                    &["Condition", "StringEquals", "kms:EncryptionContext:purpose"]
                )
                .and_then(Value::as_str),
                Some(OAUTH2_TOKEN_PURPOSE),
                "{id}: only with the tokens' encryption context"
            );
            encrypting.push(id.clone());
        }
    }
    assert_eq!(encrypting, ["WorkerPolicy"]);
}

// ------------------------------------------------------------------------------ alarms, outputs

#[test]
fn every_alarm_explains_what_to_do_and_notifies_the_topic() {
    let t = load_template();
    let alarms = resources_of_type(&t, "AWS::CloudWatch::Alarm");
    for required in [
        "ManifestDlqNotEmptyAlarm",
        "OldestManifestAgeAlarm",
        "WorkerErrorsAlarm",
        "WorkerThrottlesAlarm",
        "ApiErrorRateAlarm",
        "Status429RateAlarm",
        "CircuitBreakerOpenedAlarm",
        "JobFailedAlarm",
    ] {
        assert!(alarms.contains_key(required), "alarm {required} is missing");
    }
    for (id, alarm) in &alarms {
        let p = get(alarm, &["Properties"]).unwrap();
        let description = get(p, &["AlarmDescription"])
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(
            description.len() >= 100,
            "{id}: the description must say what to do"
        );
        let actions = get(p, &["AlarmActions"])
            .and_then(Value::as_sequence)
            .unwrap();
        assert!(
            actions
                .iter()
                .any(|a| ref_name(a).as_deref() == Some("AlarmTopic")),
            "{id} must notify AlarmTopic"
        );
    }
}

#[test]
fn outputs_name_what_an_operator_needs() {
    let t = load_template();
    let outputs = get(&t, &["Outputs"]).and_then(Value::as_mapping).unwrap();
    for name in [
        "DataBucketName",
        "ManifestQueueUrl",
        "ManifestDeadLetterQueueUrl",
        "LedgerTableName",
        "AlarmTopicArn",
        "DashboardUrl",
    ] {
        assert!(outputs.contains_key(name), "output {name} is missing");
    }
}

#[test]
fn dashboard_shows_every_alarm_by_name() {
    let t = load_template();
    let body = dashboard_json(&t);
    let listed: Vec<String> = body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["type"] == "alarm")
        .flat_map(|w| w["properties"]["alarms"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for (id, alarm) in resources_of_type(&t, "AWS::CloudWatch::Alarm") {
        // AlarmName is !Sub ${AWS::StackName}-<suffix>; the widget names it by ARN (built from the
        // name, so the dashboard needs no !GetAtt of the alarm).
        let name = get(alarm, &["Properties", "AlarmName"])
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{id}: AlarmName"));
        let suffix = name
            .strip_prefix("${AWS::StackName}")
            .unwrap_or_else(|| panic!("{id}: AlarmName starts with the stack name"));
        // "${...}" became "1" in dashboard_json.
        assert!(
            listed
                .iter()
                .any(|a| a.ends_with(&format!(":alarm:1{suffix}"))),
            "{id} ({name}) is not on the dashboard's alarm widget"
        );
    }
}
