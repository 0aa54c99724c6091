//! The command line: check-config on the example configuration, hash-secret, errors.

use std::io::Write;
use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-bridge");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");

fn example_env(command: &mut Command) -> &mut Command {
    command
        .env("PUBLIC_URL", "https://mcp.example.com")
        .env("KEYCLOAK_ISSUER", "https://keycloak.example.com/realms/mcp")
        .env("KEYCLOAK_CLIENT_SECRET", "keycloak-secret")
        .env("CLAUDE_CLIENT_SECRET", "claude-secret")
}

#[test]
fn example_configuration_passes_check_config_once_its_variables_are_set() {
    let output = example_env(Command::new(BINARY).args(["--config", EXAMPLE, "check-config"]))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration is valid"));
}

#[test]
fn check_config_names_the_missing_variable_and_its_field() {
    let output = Command::new(BINARY)
        .args(["--config", EXAMPLE, "check-config"])
        .env_remove("KEYCLOAK_CLIENT_SECRET")
        .env("CLAUDE_CLIENT_SECRET", "claude-secret")
        .env("PUBLIC_URL", "https://mcp.example.com")
        .env("KEYCLOAK_ISSUER", "https://keycloak.example.com/realms/mcp")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEYCLOAK_CLIENT_SECRET"), "{stderr}");
    assert!(stderr.contains("oauth.upstream.client_secret"), "{stderr}");
}

#[test]
fn check_config_reports_a_missing_file() {
    let output = Command::new(BINARY)
        .args(["--config", "/nonexistent/config.yaml", "check-config"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/config.yaml")
    );
}

#[test]
fn hash_secret_reads_stdin_and_prints_a_bcrypt_hash() {
    let mut child = Command::new(BINARY)
        .args(["hash-secret", "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my client secret\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(bcrypt::verify("my client secret", hash.trim()).unwrap());
}

#[test]
fn version_is_printed() {
    let output = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("mcp-oauth-bridge "));
}

#[test]
fn migrate_says_there_is_no_database_with_memory_storage() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.local.yaml");
    let output = Command::new(BINARY)
        .args(["--config", config.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("there is no database to migrate"),
        "{stderr}"
    );
}

#[test]
fn migrate_applies_the_schema_once_then_says_it_is_up_to_date() {
    let Some(admin_url) = mcp_oauth_bridge::testing::postgres_url().unwrap() else {
        return;
    };
    let name = format!("mob_cli_{:016x}", rand::random::<u64>());
    let psql = |sql: String| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
        });
    };
    psql(format!("CREATE DATABASE {name}"));
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    let dir = std::env::temp_dir().join(format!("{name}-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let local = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.local.yaml"),
    )
    .unwrap()
    .replace(
        "  backend: memory",
        &format!("  backend: postgres\n  postgres: {{ url: \"{url}\" }}"),
    );
    std::fs::write(&config, local).unwrap();
    let run = || {
        Command::new(BINARY)
            .args(["--config", config.to_str().unwrap(), "migrate"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8]")
    );
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("up to date"));
    psql(format!("DROP DATABASE {name} WITH (FORCE)"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_stops_at_start_up_when_the_audit_file_cannot_be_opened() {
    let config = std::env::temp_dir().join(format!("mob-audit-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        "server: { address: \"127.0.0.1:0\", public_url: \"http://127.0.0.1\" }\n\
         oauth: { local_users: [{ username: ada, password_hash: \"$2b$04$abcdefghijklmnopqrstuuQ8aLUfnGIT7hpvS1pNxsb4ecXmwZW2y\" }] }\n\
         audit: { output: file, file: /nonexistent-directory/audit.jsonl }\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("audit.file /nonexistent-directory/audit.jsonl"),
        "{stderr}"
    );
}
