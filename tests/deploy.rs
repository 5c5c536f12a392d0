//! The docker-compose deployment: the file is valid for Debian's
//! docker-compose, Prometheus scrapes every weir service it defines, and
//! the Grafana dashboard only charts metrics weir exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// Every `weir_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    regex::Regex::new(r"weir_[a-z_]+")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

fn docker_compose_config(token: Option<&str>) -> std::process::Output {
    let mut command = Command::new("docker-compose");
    command
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root())
        .env_remove("WEIR_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("WEIR_ADMIN_TOKEN", token);
    }
    command
        .output()
        .expect("docker-compose is not installed: run scripts/test, which installs it")
}

#[test]
fn docker_compose_config_accepts_the_file_and_gives_every_weir_service_the_admin_token() {
    let output = docker_compose_config(Some("s3cret-token"));
    let config = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let with_token = config.matches("WEIR_ADMIN_TOKEN: s3cret-token").count();
    assert_eq!(with_token, 4, "ingest, two processors and store: {config}");
    // Without a token the stack refuses to start, saying why.
    let output = docker_compose_config(None);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("set WEIR_ADMIN_TOKEN"), "{error}");
}

#[test]
fn prometheus_scrapes_every_weir_service_of_the_compose_file() {
    let compose = read("docker-compose.yml");
    let services: BTreeSet<String> = regex::Regex::new(r"(?m)^  ([a-z0-9-]+):\n    <<: \*weir")
        .unwrap()
        .captures_iter(&compose)
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(services.len(), 4, "{services:?}");
    let prometheus = read("deploy/prometheus.yml");
    for service in &services {
        assert!(
            prometheus.contains(&format!("\"{service}:9100\"")),
            "{service} is not scraped"
        );
    }
}

#[test]
fn the_dashboard_charts_only_exported_metrics() {
    let mut exported = BTreeSet::new();
    for file in [
        "ingest/src/metrics.rs",
        "router/src/metrics.rs",
        "processor/src/metrics.rs",
        "storage/src/metrics.rs",
        "log/src/metrics.rs",
    ] {
        exported.extend(metric_names(&read(file)));
    }
    let charted = metric_names(&read("deploy/grafana/dashboards/weir.json"));
    assert!(charted.len() >= 8, "{charted:?}");
    for name in &charted {
        let base = name.trim_end_matches("_bucket");
        assert!(
            exported.contains(base),
            "the dashboard charts unknown {name}"
        );
    }
}

/// Grafana's provisioning, parsed: the dashboard JSON is valid, every
/// panel queries a provisioned datasource with a weir metric, the
/// datasources point at the compose services, and the dashboards
/// provider reads the directory docker-compose.yml mounts.
#[test]
fn grafana_provisioning_fits_the_compose_file() {
    let datasources = read("deploy/grafana/provisioning/datasources/datasources.yml");
    let uids: BTreeSet<String> = regex::Regex::new(r"(?m)^\s+uid: (\S+)$")
        .unwrap()
        .captures_iter(&datasources)
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from(["prometheus".to_owned(), "graphite".to_owned()])
    );
    let compose = read("docker-compose.yml");
    for url in ["http://prometheus:9090", "http://graphite:80"] {
        assert!(datasources.contains(url), "{url}");
        let service = url.trim_start_matches("http://").split(':').next().unwrap();
        assert!(
            compose.contains(&format!("\n  {service}:\n")),
            "{service} is no compose service"
        );
    }
    let providers = read("deploy/grafana/provisioning/dashboards/dashboards.yml");
    assert!(providers.contains("path: /var/lib/grafana/dashboards"));
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/weir.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let source = panel["datasource"]["uid"].as_str().unwrap();
        assert!(uids.contains(source), "{title}: datasource {source}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
        }
    }
}
