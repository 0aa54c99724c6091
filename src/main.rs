//! Command line: `serve` (default), `check-config`, `migrate`, `hash-secret`, `healthcheck`,
//! `admin`.

use std::io::BufRead;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mcp_oauth_bridge::audit::sink::{AuditLayer, Destination};
use mcp_oauth_bridge::audit::{self, AuditConfig, AuditOutput};
use mcp_oauth_bridge::config::Config;
use mcp_oauth_bridge::secret::SecretString;
use mcp_oauth_bridge::storage::settings::StorageBackend;
use mcp_oauth_bridge::{app, password_hash, tokens};

/// glibc's allocator was a fifth of the proxy's time under load, and its arena locks another
/// twentieth: hyper allocates on one worker thread what another frees. mimalloc frees to the
/// owning thread's heap without a lock. Built without transparent huge pages (`no_thp`): with
/// them, a million refresh families took 1.2 GB of resident memory instead of 0.83 GB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mcp-oauth-bridge",
    version,
    about = "OAuth 2.1 for MCP clients, backed by your OpenID Connect provider"
)]
struct Cli {
    /// The YAML configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.yaml",
        env = "MCP_OAUTH_BRIDGE_CONFIG"
    )]
    config: PathBuf,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the configuration, then exit.
    CheckConfig,
    /// Apply the database migrations (storage.backend: postgres), then exit.
    Migrate,
    /// Read a client secret from standard input and print its bcrypt hash for the YAML.
    HashSecret {
        #[arg(long, default_value_t = bcrypt::DEFAULT_COST, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
    /// Ask a running bridge's `/healthz`; exit 0 when it answers 200. For container health
    /// checks in images that have no shell or curl.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Call a running bridge's administration API (`admin.tokens`). The token is read from
    /// MCP_OAUTH_BRIDGE_ADMIN_TOKEN, never from the command line (which `ps` shows).
    Admin {
        /// The bridge's address, or `admin.address` when it has one.
        #[arg(
            long,
            env = "MCP_OAUTH_BRIDGE_ADMIN_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// List the registered clients.
    Clients,
    /// Delete a registered client; its grants are revoked with it.
    DeleteClient { client_id: String },
    /// List the live grants of a user or of a client.
    Grants {
        #[command(flatten)]
        owner: GrantOwnerArgs,
    },
    /// Revoke every grant of a user or of a client (and forget their approvals).
    Revoke {
        #[command(flatten)]
        owner: GrantOwnerArgs,
    },
    /// Read an admin token from standard input and print the hash to put in admin.tokens.
    HashToken,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct GrantOwnerArgs {
    /// The user, by the `sub` of their tokens.
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
}

impl GrantOwnerArgs {
    fn query(&self) -> Vec<(&'static str, &str)> {
        match (&self.subject, &self.client_id) {
            (Some(subject), _) => vec![("subject", subject.as_str())],
            (None, Some(client_id)) => vec![("client_id", client_id.as_str())],
            (None, None) => Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // `serve` reads its configuration first: the audit trail's destination is in it.
    let result = match &command {
        Command::Serve => Ok(()),
        _ => init_tracing(cli.log_format, None),
    }
    .and_then(|()| match command {
        Command::Serve => serve(&cli.config, cli.log_format),
        Command::CheckConfig => check_config(&cli.config),
        Command::Migrate => migrate(&cli.config),
        Command::HashSecret { cost } => hash_secret(cost),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Admin { url, action } => admin(&url, &action),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(3))
            .build()?
            .get(url)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::OK,
            "{url} answered {}",
            response.status()
        );
        Ok(())
    })
}

const ADMIN_TOKEN_VARIABLE: &str = "MCP_OAUTH_BRIDGE_ADMIN_TOKEN";
/// As for a plain token in `admin.tokens`: a hash is kept, but the token behind it must be as long.
const MIN_ADMIN_TOKEN_LENGTH: usize = 32;

/// One request to the administration API; its JSON answer printed as it came.
fn admin(base: &str, action: &AdminAction) -> anyhow::Result<()> {
    if let AdminAction::HashToken = action {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let token = line.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(
            token.chars().count() >= MIN_ADMIN_TOKEN_LENGTH,
            "an admin token must be at least {MIN_ADMIN_TOKEN_LENGTH} characters (openssl rand -base64 32)"
        );
        println!("{}", mcp_oauth_bridge::oauth::admin::hashed_token(token));
        return Ok(());
    }
    let token = std::env::var(ADMIN_TOKEN_VARIABLE)
        .ok()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| anyhow::anyhow!("set {ADMIN_TOKEN_VARIABLE} to an admin token"))?;
    let mut url =
        reqwest::Url::parse(base).map_err(|error| anyhow::anyhow!("--url {base}: {error}"))?;
    // The token travels in every request: in clear only to this machine.
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    anyhow::ensure!(
        url.scheme() == "https" || (url.scheme() == "http" && loopback),
        "--url {base}: use https, or http to this machine only (a tunnel, kubectl port-forward)"
    );
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--url {base} cannot take a path"))?;
        path.pop_if_empty().push("admin");
        match action {
            AdminAction::Clients => {
                path.push("clients");
            }
            AdminAction::DeleteClient { client_id } => {
                path.push("clients").push(client_id);
            }
            AdminAction::Grants { .. } | AdminAction::Revoke { .. } => {
                path.push("grants");
            }
            AdminAction::HashToken => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Never through an HTTP(S)_PROXY: the token is for the bridge alone.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let request = match action {
            AdminAction::Clients => client.get(url),
            AdminAction::DeleteClient { .. } => client.delete(url),
            AdminAction::Grants { owner } => client.get(url).query(&owner.query()),
            AdminAction::Revoke { owner } => client.delete(url).query(&owner.query()),
            AdminAction::HashToken => return Ok(()),
        };
        let response = request.bearer_auth(&token).send().await?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "the bridge answered {status}: {}",
            body.trim()
        );
        if !body.is_empty() {
            println!("{body}");
        }
        Ok(())
    })
}

/// Crates whose debug output quotes what they carry (statement parameters hold pending
/// authorizations, PKCE verifiers included): never more than `info`, whatever `RUST_LOG` says.
const QUOTING_CRATES: [&str; 2] = ["tokio_postgres", "postgres_protocol"];

fn quotes_what_it_carries(metadata: &tracing::Metadata<'_>) -> bool {
    *metadata.level() > tracing::Level::INFO
        && QUOTING_CRATES
            .iter()
            .any(|name| metadata.target().split("::").next() == Some(name))
}

/// The service's log on standard error, and the audit trail: with that log (`audit.output: log`
/// or no `audit` at hand), or on a layer of its own that `RUST_LOG` does not silence.
fn init_tracing(format: LogFormat, audit: Option<&AuditConfig>) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};
    let mut levels = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The trail is not log chatter: a RUST_LOG written for the crate (`mcp_oauth_bridge=debug`)
    // or for quiet (`warn`) keeps it; only a RUST_LOG that names `audit` decides for it.
    let names_audit =
        std::env::var("RUST_LOG").is_ok_and(|directives| directives.contains("audit"));
    if !names_audit && let Ok(directive) = "audit=info".parse() {
        levels = levels.add_directive(directive);
    }
    let audit_in_log = audit.is_none_or(|audit| audit.output == AuditOutput::Log);
    let audit_layer = match audit {
        Some(audit) => Destination::configured(audit)?.map(|destination| {
            AuditLayer::new(destination).with_filter(filter::filter_fn(AuditLayer::interest))
        }),
        None => None,
    };
    let quiet = filter::filter_fn(move |metadata| {
        !quotes_what_it_carries(metadata) && (audit_in_log || metadata.target() != audit::TARGET)
    });
    // Colours only for a person at a terminal; a log file or collector gets plain text.
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Text => text.boxed(),
        LogFormat::Json => text.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(output.with_filter(quiet).with_filter(levels))
        .with(audit_layer)
        .init();
    Ok(())
}

fn serve(path: &std::path::Path, format: LogFormat) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    init_tracing(format, Some(&config.audit))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(app::run(config))
}

fn migrate(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if config.storage.backend != StorageBackend::Postgres {
        anyhow::bail!("storage.backend is not postgres: there is no database to migrate");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let applied = runtime.block_on(async {
        app::postgres_storage(&config)?
            .migrate()
            .await
            // Its message only, as before: the driver's error below it can carry the server's
            // DETAIL, which may quote the values of a row.
            .map_err(|error| anyhow::anyhow!("{error}"))
    })?;
    if applied.is_empty() {
        println!("the database schema is up to date");
    } else {
        println!("applied migrations {applied:?}");
    }
    Ok(())
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // Key files are parsed too: a bad PEM should fail here, not at the first token.
    tokens::KeySet::configured(
        config.oauth.signing_key.as_ref(),
        config.oauth.signing.as_ref(),
    )?;
    println!("{}: configuration is valid", path.display());
    Ok(())
}

fn hash_secret(cost: u32) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let secret = line.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        anyhow::bail!(
            "no secret on standard input (usage: echo -n \"$SECRET\" | mcp-oauth-bridge hash-secret)"
        );
    }
    let hash = password_hash::hash(&SecretString::new(secret), cost)?;
    println!("{hash}");
    Ok(())
}
