//! The deployment files, checked without a Docker engine or a cluster: docker-compose.yml,
//! the Dockerfile, the compose configuration against the bridge's own validation with the
//! `.env.example` values, the Keycloak realm against that configuration, and the Kubernetes
//! manifests.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use mcp_oauth_bridge::config::Config;
use reqwest::StatusCode;
use serde_yaml::Value;

use crate::helpers::*;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-bridge");

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `.env.example` as the variables compose would read from `.env`.
fn env_example() -> HashMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Compose's `${VAR}`, `${VAR:?message}` and `${VAR:-default}` in a string, with `vars`.
fn interpolate(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let expression = &rest[start + 2..end];
        let name = expression.split([':', '?', '-']).next().unwrap();
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("${{{name}}} is used but not in .env.example"));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The compose service's environment, interpolated as compose would.
fn service_env(service: &Value, vars: &HashMap<String, String>) -> HashMap<String, String> {
    service["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), interpolate(&value, vars))
        })
        .collect()
}

#[test]
fn compose_runs_keycloak_postgres_the_bridge_and_an_mcp_server_in_order() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for name in ["postgres", "keycloak", "bridge", "mcp-server"] {
        assert!(services.get(name).is_some(), "service {name} missing");
    }

    let keycloak = &services["keycloak"];
    assert!(
        keycloak["image"]
            .as_str()
            .unwrap()
            .starts_with("quay.io/keycloak/keycloak:")
    );
    assert_eq!(
        strings(&keycloak["command"]),
        ["start-dev", "--import-realm"]
    );
    assert!(
        strings(&keycloak["volumes"])
            .contains(&"./deploy/keycloak:/opt/keycloak/data/import:ro".to_owned())
    );
    let ports = strings(&keycloak["ports"]);
    assert!(ports.contains(&"8081:8081".to_owned()), "{ports:?}");
    assert!(ports.contains(&"8080:8080".to_owned()), "{ports:?}");
    assert!(keycloak["healthcheck"]["test"].as_sequence().is_some());

    let postgres = &services["postgres"];
    let check = strings(&postgres["healthcheck"]["test"]).join(" ");
    assert!(check.contains("pg_isready"), "{check}");

    let bridge = &services["bridge"];
    assert_eq!(bridge["build"].as_str(), Some("."));
    assert_eq!(bridge["network_mode"].as_str(), Some("service:keycloak"));
    assert_eq!(
        bridge["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy"),
        "the bridge migrates the database at start: it waits for PostgreSQL"
    );
    // Keycloak only started: the bridge retries discovery and /readyz reports it.
    assert_eq!(
        bridge["depends_on"]["keycloak"]["condition"].as_str(),
        Some("service_started")
    );
    assert!(bridge["depends_on"].get("mcp-server").is_some());
    assert!(
        strings(&bridge["volumes"]).contains(
            &"./deploy/config.compose.yaml:/etc/mcp-oauth-bridge/config.yaml:ro".to_owned()
        )
    );
    let check = strings(&bridge["healthcheck"]["test"]);
    assert_eq!(check[..2], ["CMD", "/usr/local/bin/mcp-oauth-bridge"]);
    assert_eq!(check[2], "healthcheck");
    assert!(check[4].ends_with("/readyz"), "{check:?}");
    assert_eq!(
        services["mcp-server"]["build"].as_str(),
        Some("./deploy/mcp-server")
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/mcp-server/Dockerfile")
            .is_file()
    );

    // Every variable compose needs is in .env.example.
    interpolate(&read("docker-compose.yml"), &env_example());
}

/// The bridge's environment in compose, from `.env.example`.
fn compose_bridge_env() -> HashMap<String, String> {
    let compose = yaml("docker-compose.yml");
    service_env(&compose["services"]["bridge"], &env_example())
}

fn compose_config() -> Config {
    let env = compose_bridge_env();
    Config::from_yaml(&read("deploy/config.compose.yaml"), &|name| {
        env.get(name).cloned()
    })
    .unwrap_or_else(|e| panic!("deploy/config.compose.yaml: {e}"))
}

#[test]
fn the_compose_configuration_passes_validation_with_the_example_environment() {
    let config = compose_config();
    let env = compose_bridge_env();
    assert_eq!(config.server.address, "0.0.0.0:8080");
    assert!(env["DATABASE_URL"].starts_with("postgres://bridge:change-me"));
    let proxy = config.proxy.as_ref().unwrap();
    assert_eq!(proxy.upstream_url, "http://mcp-server:3000");
    // The same check with the binary, as a user would run it.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.compose.yaml");
    let output = Command::new(BINARY)
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_keycloak_realm_agrees_with_the_bridge_configuration() {
    let realm: serde_json::Value =
        serde_json::from_str(&read("deploy/keycloak/realm-mcp.json")).unwrap();
    let config = compose_config();
    let upstream = config.oauth.upstream.as_ref().unwrap();
    assert_eq!(
        upstream.issuer,
        format!(
            "http://localhost:8081/realms/{}",
            realm["realm"].as_str().unwrap()
        )
    );
    let clients = realm["clients"].as_array().unwrap();
    let client = clients
        .iter()
        .find(|c| c["clientId"] == upstream.client_id.as_str())
        .expect("the bridge's client is in the realm");
    assert_eq!(client["publicClient"], false);
    assert_eq!(client["standardFlowEnabled"], true);
    // Both sides read the same variable (Keycloak resolves the placeholder at import).
    assert_eq!(client["secret"], "${KEYCLOAK_CLIENT_SECRET}");
    let raw_config = yaml("deploy/config.compose.yaml");
    assert_eq!(
        raw_config["oauth"]["upstream"]["client_secret"].as_str(),
        Some("${KEYCLOAK_CLIENT_SECRET}")
    );
    let compose = yaml("docker-compose.yml");
    let keycloak_env = service_env(&compose["services"]["keycloak"], &env_example());
    assert_eq!(
        keycloak_env["KEYCLOAK_CLIENT_SECRET"],
        compose_bridge_env()["KEYCLOAK_CLIENT_SECRET"]
    );
    let callback = config.callback_url().unwrap();
    assert_eq!(client["redirectUris"], serde_json::json!([callback]));
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    // Keycloak ends the bridge's grants when a session ends there (Back-Channel Logout 1.0).
    assert_eq!(
        client["attributes"]["backchannel.logout.url"].as_str(),
        Some(
            callback
                .replace("/oauth/callback", "/oauth/backchannel-logout")
                .as_str()
        )
    );
    assert_eq!(
        client["attributes"]["backchannel.logout.session.required"],
        "true"
    );

    let mapper = client["protocolMappers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["config"]["claim.name"] == upstream.claims.groups.as_str())
        .expect("a mapper puts the roles where the bridge reads its groups");
    assert_eq!(mapper["config"]["id.token.claim"], "true");
    assert_eq!(mapper["config"]["multivalued"], "true");

    let demo = &realm["users"][0];
    assert_eq!(demo["username"], "demo");
    let roles: Vec<&str> = demo["realmRoles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        upstream
            .allowed_groups
            .iter()
            .any(|g| roles.contains(&g.as_str())),
        "the demo user may sign in"
    );
    assert!(keycloak_env.contains_key("DEMO_USER_PASSWORD"));
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_unprivileged_with_a_health_check() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[1].contains(":nonroot"), "{stages:?}");
    // distroless's `nonroot`, by number so that every runtime resolves it.
    assert!(dockerfile.contains("\nUSER 65532:65532\n"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("EXPOSE 8080"));
    let check = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .unwrap();
    assert!(
        check.contains(r#"CMD ["/usr/local/bin/mcp-oauth-bridge", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]"#),
        "{check}"
    );
    let ignored = read(".dockerignore");
    for path in ["target/", ".git/", ".env"] {
        assert!(ignored.lines().any(|l| l == path), "{path} not ignored");
    }
}

/// A file the sources compile in (`include_str!`) outside `src/` must reach the image's build:
/// the image is built where only the Dockerfile's copies are.
#[test]
fn every_file_the_sources_compile_in_is_copied_into_the_image() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = read("Dockerfile");
    let ignored = read(".dockerignore");
    let mut pending = vec![root.join("src")];
    let mut folders = std::collections::BTreeSet::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            // Modules only tests compile (by name), and test modules at the end of a file, may
            // include fixtures.
            let name = path.file_name().unwrap().to_string_lossy();
            if ["test_support.rs", "contract_tests.rs", "tests.rs"].contains(&name.as_ref()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
            for part in shipped.split("include_str!(\"").skip(1) {
                let relative = part.split('"').next().unwrap();
                let included = dir.join(relative).canonicalize().unwrap();
                let inside = included.strip_prefix(root.canonicalize().unwrap()).unwrap();
                let top = inside.components().next().unwrap();
                folders.insert(top.as_os_str().to_string_lossy().into_owned());
            }
        }
    }
    folders.remove("src");
    assert!(folders.contains("locales"), "{folders:?}");
    for folder in folders {
        assert!(
            dockerfile.contains(&format!("COPY {folder} ./{folder}\n")),
            "the Dockerfile does not copy {folder}/"
        );
        assert!(
            !ignored.lines().any(|l| l.trim_end_matches('/') == folder),
            "{folder}/ is in .dockerignore"
        );
    }
}

#[tokio::test]
async fn the_healthcheck_command_asks_a_running_bridge() {
    let app = spawn_app().await;
    for (path, ok) in [("/healthz", true), ("/nowhere", false)] {
        let url = app.url(path);
        let status = tokio::task::spawn_blocking(move || {
            Command::new(BINARY)
                .args(["healthcheck", "--url", &url])
                .status()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(status.success(), ok, "{path}");
    }
    let status = Command::new(BINARY)
        .args(["healthcheck", "--url", "http://127.0.0.1:1/healthz"])
        .status()
        .unwrap();
    assert!(!status.success());
}

fn manifests() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut documents = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(value["apiVersion"].is_string(), "{}", file.display());
            documents.push((file.display().to_string(), value));
        }
    }
    documents
}

use serde::Deserialize;

#[tokio::test]
async fn the_kubernetes_manifests_parse_and_probe_real_endpoints() {
    let documents = manifests();
    let of_kind = |kind: &str| {
        documents
            .iter()
            .find(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let deployment = of_kind("Deployment");
    let service = of_kind("Service");
    let configmap = of_kind("ConfigMap");
    let secret = of_kind("Secret");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(8080));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        secret["metadata"]["name"]
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        configmap["metadata"]["name"]
    );

    // The ConfigMap's configuration is valid with the example Secret's values.
    let values: HashMap<String, String> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let config_text = configmap["data"]["config.yaml"].as_str().unwrap();
    let config = Config::from_yaml(config_text, &|name| values.get(name).cloned())
        .unwrap_or_else(|e| panic!("the ConfigMap's config.yaml: {e}"));
    assert!(config.server.address.ends_with(":8080"));

    // Every probe names an endpoint the bridge serves, on the container's port.
    let app = spawn_app().await;
    let mut probed = Vec::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], port["name"], "{probe}");
        let path = get["path"].as_str().unwrap().to_owned();
        let response = app.api.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{probe} {path}");
        probed.push(path);
    }
    assert!(probed.contains(&"/healthz".to_owned()));
    assert!(probed.contains(&"/readyz".to_owned()));
}

/// The names `mcp_oauth_bridge_…` that `text` mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    regex::Regex::new(r"mcp_oauth_bridge_[a-z_]+")
        .unwrap()
        .find_iter(text)
        .map(|found| found.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_ask_only_for_series_the_bridge_exports() {
    let Some(database) = crate::postgres::test_database().await else {
        return;
    };
    let upstream = crate::mcp_upstream::McpUpstream::start().await;
    let (url, mcp) = (database.url.clone(), upstream.url.clone());
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            postgres(config, &url);
            config.metrics.enabled = true;
            config.proxy = Some(ProxyConfig::forwarding_to(mcp));
        }),
        ..Options::default()
    })
    .await;
    let exported = app
        .api
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = metric_names(&exported);
    assert!(
        exported.contains("mcp_oauth_bridge_storage_pool_in_use"),
        "{exported:?}"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/mcp-oauth-bridge.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: std::collections::HashSet<_> = panels.iter().map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut expressions = String::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            expressions.push_str(target["expr"].as_str().unwrap());
            expressions.push('\n');
        }
    }
    let rules = read("deploy/prometheus/alerts.yml");
    for (source, text) in [("dashboard", &expressions), ("alert rules", &rules)] {
        let asked = metric_names(text);
        assert!(asked.len() >= 8, "{source}: {asked:?}");
        let unknown: Vec<_> = asked.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {source} ask for series the bridge does not export: {unknown:?}"
        );
    }
    // The dashboard shows every family the bridge exports.
    let families: std::collections::BTreeSet<String> = exported
        .iter()
        .map(|name| {
            ["_bucket", "_count", "_sum", "_created"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect();
    let shown = metric_names(&expressions);
    let missing: Vec<_> = families
        .iter()
        .filter(|family| !shown.iter().any(|name| name.starts_with(family.as_str())))
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
    database.drop_database().await;
}

#[test]
fn the_monitoring_profile_mounts_the_rules_and_the_dashboard_and_scrapes_the_metrics_listener() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for name in ["prometheus", "grafana"] {
        assert_eq!(
            strings(&services[name]["profiles"]),
            ["monitoring"],
            "{name}"
        );
        for volume in strings(&services[name]["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if let Some(path) = source.strip_prefix("./") {
                assert!(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).exists(),
                    "{name} mounts {source}, which is not in the repository"
                );
            }
        }
    }
    // Prometheus scrapes the address the compose configuration serves the metrics on, in the
    // network namespace the bridge shares with Keycloak.
    let config = compose_config();
    assert!(config.metrics.enabled);
    let port = config.metrics.address.unwrap().port();
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("mcp-oauth-bridge"));
    assert_eq!(
        strings(&job["static_configs"][0]["targets"]),
        [format!("keycloak:{port}")]
    );
    assert!(read("deploy/prometheus/alerts.yml").contains("job=\"mcp-oauth-bridge\""));
}
