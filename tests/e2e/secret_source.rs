//! The secrets adapter (`fanout_aws::secrets::AwsSecretSource`) and `fanout secret`, on the
//! local AWS's Secrets Manager and KMS: each reference form read back, the errors (naming the
//! reference, never the value), the cache, and the command end to end with the value on stdin.

use std::time::Duration;

use fanout_aws::secrets::AwsSecretSource;
use fanout_core::ports::SecretSource;
use fanout_core::secret::SecretRef;

const VALUE: &str = "sk-live-7f3e1b-DO-NOT-PRINT";

/// The SDK config for the local AWS (no stack: these tests need only the two services).
async fn aws() -> aws_config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the integration tests through `make test` (scripts/with-stack.sh starts the local AWS)"
    );
    fanout_aws::load_config().await
}

/// A secret name unique to this process and test.
fn unique(test: &str) -> String {
    format!("t{}/{test}", std::process::id())
}

fn source(config: &aws_config::SdkConfig, ttl: Duration) -> AwsSecretSource {
    AwsSecretSource::new(
        fanout_aws::secretsmanager_client(config),
        fanout_aws::kms_client(config),
        ttl,
    )
}

fn sm(name: &str, json_key: Option<&str>) -> SecretRef {
    SecretRef::SecretsManager {
        secrets_manager: name.into(),
        json_key: json_key.map(str::to_string),
    }
}

/// Creates secret `name` holding `value`; its ARN.
async fn create(config: &aws_config::SdkConfig, name: &str, value: &str) -> String {
    fanout_aws::secretsmanager_client(config)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("CreateSecret")
        .arn()
        .expect("an ARN")
        .to_string()
}

/// A new symmetric KMS key's id.
async fn kms_key(config: &aws_config::SdkConfig) -> String {
    fanout_aws::kms_client(config)
        .create_key()
        .description("fanout secret_source test")
        .send()
        .await
        .expect("CreateKey")
        .key_metadata()
        .expect("key metadata")
        .key_id()
        .to_string()
}

#[tokio::test]
async fn a_secret_is_read_whole_by_name_or_arn_or_by_json_key() {
    let config = aws().await;
    let plain = unique("plain");
    let arn = create(&config, &plain, VALUE).await;
    let json = unique("json");
    create(
        &config,
        &json,
        &serde_json::json!({"username": "svc", "token": VALUE}).to_string(),
    )
    .await;

    let src = source(&config, Duration::from_secs(300));
    for reference in [sm(&plain, None), sm(&arn, None), sm(&json, Some("token"))] {
        let secret = src.secret(&reference).await.unwrap();
        assert_eq!(secret.expose(), VALUE, "{reference}");
        assert!(!format!("{secret:?} {secret}").contains(VALUE));
    }
    assert_eq!(
        src.secret(&sm(&json, Some("username")))
            .await
            .unwrap()
            .expose(),
        "svc"
    );
    // Without json_key, a JSON secret is its whole string.
    assert!(
        src.secret(&sm(&json, None))
            .await
            .unwrap()
            .expose()
            .starts_with('{')
    );
}

#[tokio::test]
async fn unusable_references_fail_naming_the_reference_and_never_the_value() {
    let config = aws().await;
    let plain = unique("errors-plain");
    create(&config, &plain, VALUE).await;
    let json = unique("errors-json");
    create(
        &config,
        &json,
        &serde_json::json!({"token": VALUE, "port": 5432}).to_string(),
    )
    .await;
    let src = source(&config, Duration::from_secs(300));
    let missing = unique("no-such-secret");
    for (reference, expected) in [
        (sm(&missing, None), "no such secret"),
        (sm(&plain, Some("token")), "not a JSON object"),
        (sm(&json, Some("password")), "has no key \"password\""),
        (sm(&json, Some("port")), "is a number, not a string"),
        (
            SecretRef::Kms {
                kms_ciphertext: "not base64!".into(),
            },
            "not valid base64",
        ),
        (
            SecretRef::Kms {
                kms_ciphertext: "AQICAHhub3QgYSBjaXBoZXJ0ZXh0".into(),
            },
            "KMS Decrypt",
        ),
    ] {
        let err = format!("{:#}", src.secret(&reference).await.unwrap_err());
        assert!(err.contains(&reference.to_string()), "{reference}: {err}");
        assert!(err.contains(expected), "{reference}: {err}");
        assert!(!err.contains(VALUE) && !err.contains("sk-live"), "{err}");
    }
}

#[tokio::test]
async fn a_kms_ciphertext_is_decrypted_with_the_key_it_names() {
    let config = aws().await;
    let key = kms_key(&config).await;
    let secret = fanout_core::secret::Secret::new(VALUE);
    let ciphertext = fanout_aws::secrets::encrypt(&fanout_aws::kms_client(&config), &key, &secret)
        .await
        .unwrap();
    assert!(!ciphertext.contains(VALUE));
    let reference = SecretRef::Kms {
        kms_ciphertext: ciphertext,
    };
    let src = source(&config, Duration::from_secs(300));
    assert_eq!(src.secret(&reference).await.unwrap().expose(), VALUE);
    // The error for a key that does not exist names the key, not the value.
    let err = fanout_aws::secrets::encrypt(
        &fanout_aws::kms_client(&config),
        "alias/fanout-no-such-key",
        &secret,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("alias/fanout-no-such-key") && !err.contains(VALUE),
        "{err}"
    );
}

/// Within the TTL a read is the cached value, even after the secret changed: the second read
/// made no call. A source with a zero TTL reads the new value. Concurrent first reads make one
/// call.
#[tokio::test]
async fn a_value_is_fetched_once_per_ttl() {
    let config = aws().await;
    let name = unique("cache");
    create(&config, &name, "first").await;
    let reference = sm(&name, None);

    let cached = std::sync::Arc::new(source(&config, Duration::from_secs(3600)));
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (cached, reference) = (cached.clone(), reference.clone());
        reads.spawn(async move { cached.secret(&reference).await });
    }
    for read in reads.join_all().await {
        assert_eq!(read.unwrap().expose(), "first");
    }
    assert_eq!(cached.fetches(), 1, "concurrent first reads make one call");

    fanout_aws::secretsmanager_client(&config)
        .put_secret_value()
        .secret_id(&name)
        .secret_string("second")
        .send()
        .await
        .expect("PutSecretValue");
    assert_eq!(cached.secret(&reference).await.unwrap().expose(), "first");
    assert_eq!(cached.fetches(), 1);

    let uncached = source(&config, Duration::ZERO);
    assert_eq!(
        uncached.secret(&reference).await.unwrap().expose(),
        "second"
    );
    assert_eq!(
        uncached.secret(&reference).await.unwrap().expose(),
        "second"
    );
    assert_eq!(uncached.fetches(), 2);

    // A failed read is not cached: once the secret exists, the next read finds it.
    let late = unique("cache-late");
    let err = cached.secret(&sm(&late, None)).await.unwrap_err();
    assert!(err.to_string().contains("no such secret"), "{err}");
    create(&config, &late, "late").await;
    assert_eq!(
        cached.secret(&sm(&late, None)).await.unwrap().expose(),
        "late"
    );
}

/// The `fanout` binary next to this test binary. `cargo test --test e2e` does not build it
/// (`make test` does, in its compile phase), so it must exist and be newer than the sources it
/// is built from here: otherwise this would test an old build.
fn fanout_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/e2e-HASH → target/debug/fanout
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the target directory")
        .join("fanout");
    let build = "build it first: cargo build --workspace --all-targets";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", bin.display()));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<_> = ["cli/src", "shared/aws/src", "shared/core/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if entry.metadata().unwrap().modified().unwrap() > built {
                panic!(
                    "{} is older than {}: {build}",
                    bin.display(),
                    path.display()
                );
            }
        }
    }
    bin
}

/// `fanout secret ARGS` with `stdin` piped in: (success, stdout, stderr).
async fn fanout_secret(args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(fanout_bin())
        .arg("secret")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fanout");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.expect("fanout's output");
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    for printed in [&stdout, &stderr] {
        assert!(
            !printed.contains(VALUE) && !printed.contains("sk-live"),
            "fanout secret {args:?} printed the value: {printed}"
        );
    }
    (out.status.success(), stdout, stderr)
}

/// The reference printed on stdout (its YAML, comments aside).
fn printed_reference(stdout: &str) -> SecretRef {
    serde_norway::from_str(stdout).unwrap_or_else(|e| panic!("not a reference: {e}\n{stdout}"))
}

#[tokio::test]
async fn fanout_secret_put_and_encrypt_take_the_value_on_stdin_and_print_only_references() {
    let config = aws().await;
    let name = unique("cli-put");

    let (ok, stdout, stderr) = fanout_secret(
        &["put", &name, "--description", "API token"],
        &format!("{VALUE}\n"),
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("created secret"), "{stderr}");
    let arn = stdout.lines().next().unwrap().strip_prefix("# ").unwrap();
    assert!(
        arn.starts_with("arn:") && arn.contains(":secretsmanager:"),
        "{stdout}"
    );
    let reference = printed_reference(&stdout);
    assert_eq!(reference, sm(&name, None));
    // The trailing newline of `echo VALUE |` is not part of the value.
    let src = source(&config, Duration::ZERO);
    assert_eq!(src.secret(&reference).await.unwrap().expose(), VALUE);
    assert_eq!(src.secret(&sm(arn, None)).await.unwrap().expose(), VALUE);

    // Again: a new value of the same secret.
    let newer = format!("{VALUE}-rotated");
    let (ok, stdout, stderr) = fanout_secret(&["put", &name], &newer).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("stored a new value"), "{stderr}");
    assert_eq!(printed_reference(&stdout), reference);
    assert_eq!(src.secret(&reference).await.unwrap().expose(), newer);

    // Nothing on stdin: refused, nothing stored.
    let (ok, _, stderr) = fanout_secret(&["put", &unique("cli-empty")], "").await;
    assert!(!ok && stderr.contains("empty"), "{stderr}");

    // The KMS route: the printed ciphertext reads back as the value.
    let key = kms_key(&config).await;
    let (ok, stdout, stderr) = fanout_secret(&["encrypt", "--key-id", &key], VALUE).await;
    assert!(ok, "{stderr}");
    let reference = printed_reference(&stdout);
    assert!(matches!(reference, SecretRef::Kms { .. }), "{stdout}");
    assert_eq!(src.secret(&reference).await.unwrap().expose(), VALUE);
}
