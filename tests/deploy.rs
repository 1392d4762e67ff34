//! The container image and the Kubernetes manifests agree with the binary
//! and with each other: the ConfigMap's configuration is valid once the
//! Secret's files exist (and refused, naming the key, with the example's
//! placeholders), the probes, port, user and grace periods match. Schema
//! validation (kubernetes-validate) and hadolint run in scripts/test.sh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gitbroker::config::{Settings, StoreSettings};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

/// The literal block under `key: |` at `indent` spaces, dedented.
fn block(yaml: &str, key: &str, indent: usize) -> String {
    let head = format!("{}{key}: |", " ".repeat(indent));
    let mut lines = yaml.lines().skip_while(|l| *l != head).skip(1);
    let pad = " ".repeat(indent + 2);
    let mut out = String::new();
    for line in lines.by_ref() {
        if let Some(rest) = line.strip_prefix(&pad) {
            out.push_str(rest);
        } else if !line.trim().is_empty() {
            break;
        }
        out.push('\n');
    }
    assert!(!out.is_empty(), "no `{key}` block");
    out
}

/// `name: value` pairs of the Secret's `stringData`.
fn secret_entries() -> Vec<(String, String)> {
    read("deploy/kubernetes/secret.example.yaml")
        .lines()
        .skip_while(|l| *l != "stringData:")
        .skip(1)
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

const SECRETS_DIR: &str = "/etc/gitbroker/secrets/";

fn config_with_secrets(values: &dyn Fn(&str) -> String) -> (Result<Settings, String>, Vec<String>) {
    let toml = block(
        &read("deploy/kubernetes/configmap.yaml"),
        "gitbroker.toml",
        2,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut referenced = Vec::new();
    for part in toml.split(SECRETS_DIR).skip(1) {
        let name = part.split('"').next().unwrap().to_owned();
        std::fs::write(dir.path().join(&name), values(&name)).unwrap();
        referenced.push(name);
    }
    let local = toml.replace(SECRETS_DIR, &format!("{}/", dir.path().display()));
    (
        Settings::from_toml_str(&local).map_err(|e| e.to_string()),
        referenced,
    )
}

#[test]
fn the_configmap_is_valid_with_the_secrets_files_and_refused_with_placeholders() {
    let (settings, referenced) = config_with_secrets(&|name| match name {
        "redis-url" => "redis://redis.example.internal:6379/0\n".into(),
        n if n.starts_with("encryption-key-") => gitbroker::crypto::generate_key(),
        _ => format!("{}\n", gitbroker::crypto::random_string(32)),
    });
    let settings = settings.unwrap();
    assert_eq!(settings.listen.to_string(), "0.0.0.0:8080");
    assert!(
        matches!(settings.store, StoreSettings::Redis { .. }),
        "replicas share Redis"
    );
    let mut secret_keys: Vec<String> = secret_entries().into_iter().map(|(k, _)| k).collect();
    let mut referenced = referenced;
    secret_keys.sort();
    referenced.sort();
    assert_eq!(
        secret_keys, referenced,
        "the Secret holds exactly the files the configuration reads"
    );

    // the example's placeholders never make a running broker
    let placeholders = secret_entries();
    let (refused, _) = config_with_secrets(&|name| {
        placeholders
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    });
    let e = refused.expect_err("placeholders are refused");
    assert!(e.contains("encryption.keys"), "{e}");
}

#[test]
fn the_deployment_matches_the_image_and_the_configuration() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let dockerfile = read("Dockerfile");
    let has = |text: &str, needle: &str| {
        assert!(text.contains(needle), "missing `{needle}`");
    };
    has(&deployment, "replicas: 2");
    has(&deployment, "containerPort: 8080");
    has(&deployment, "path: /readyz");
    has(&deployment, "path: /healthz");
    has(&deployment, "readOnlyRootFilesystem: true");
    has(&deployment, "runAsNonRoot: true");
    has(&deployment, "runAsUser: 65532");
    has(&deployment, "allowPrivilegeEscalation: false");
    has(&deployment, "mountPath: /etc/gitbroker/secrets");
    has(&deployment, "mountPath: /etc/gitbroker/gitbroker.toml");
    has(&deployment, "requests:");
    // the container stops accepting and finishes its requests within the pod's grace
    let number = |text: &str, key: &str| -> u64 {
        let at = text.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
        text[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let config = read("deploy/kubernetes/configmap.yaml");
    let grace = number(&deployment, "terminationGracePeriodSeconds:");
    let pre_stop = number(&deployment, "seconds:");
    let shutdown = number(&config, "shutdown_grace_secs =");
    assert!(
        pre_stop + shutdown < grace,
        "{pre_stop} + {shutdown} < {grace}"
    );

    // the PodDisruptionBudget and the Service select the Deployment's pods
    for file in ["poddisruptionbudget.yaml", "service.yaml"] {
        let text = read(&format!("deploy/kubernetes/{file}"));
        has(&text, "app.kubernetes.io/name: gitbroker");
        has(&text, "app.kubernetes.io/component: server");
    }
    has(
        &read("deploy/kubernetes/poddisruptionbudget.yaml"),
        "minAvailable: 1",
    );

    // the image: distroless, the same non-root user, the binary's own health check
    let last_from = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .unwrap();
    assert_eq!(last_from, "FROM gcr.io/distroless/cc-debian12:nonroot");
    has(&dockerfile, "USER 65532:65532");
    has(
        &dockerfile,
        r#"CMD ["/usr/local/bin/gitbroker", "healthcheck"]"#,
    );
    has(&dockerfile, r#"ENTRYPOINT ["/usr/local/bin/gitbroker"]"#);
    has(&dockerfile, "EXPOSE 8080");
    for label in ["title", "version", "revision", "licenses", "source"] {
        has(&dockerfile, &format!("org.opencontainers.image.{label}="));
    }
    // every target of the manifest exists as a placeholder in the dependency stage
    let manifest = read("Cargo.toml");
    for bench in manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|b| b.split('"').nth(1))
    {
        has(&dockerfile, bench);
    }
}
