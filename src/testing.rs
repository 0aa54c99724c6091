//! For this crate's own tests, unit and integration alike: a PostgreSQL server to test against.
//!
//! `TEST_DATABASE_URL` when it is set (a server where the tests may create and drop databases);
//! otherwise a throwaway cluster made with the system's PostgreSQL binaries (Debian's
//! `/usr/lib/postgresql/<version>/bin`), which lives exactly as long as the test process; when
//! neither is possible the PostgreSQL tests say so on the terminal and pass, except under
//! `CI=true`, where that is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SERVER: OnceLock<Result<Option<String>, TestDatabaseError>> = OnceLock::new();

/// Why the PostgreSQL tests have no server although they must run (`CI=true`).
#[derive(Debug, thiserror::Error)]
#[error(
    "CI=true: the PostgreSQL tests must run, but TEST_DATABASE_URL is not set and {}",
    crate::error_chain(.0)
)]
pub struct TestDatabaseError(ClusterError);

/// Why no throwaway cluster could be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("no PostgreSQL server binaries (initdb) are installed")]
    NoBinaries,
    #[error("the temporary directory is not UTF-8")]
    NotUtf8,
    #[error("running as root and there is no postgres user to run PostgreSQL")]
    NoPostgresUser,
    #[error("cannot {action}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("the throwaway cluster in {0} did not start")]
    NotStarted(String),
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Io { action, source }
}

/// A connection string to a database the tests may create other databases from; `None` when
/// the PostgreSQL tests cannot run here (they then pass); an error under `CI=true` instead.
pub fn postgres_url() -> Result<Option<String>, &'static TestDatabaseError> {
    SERVER.get_or_init(resolve).as_ref().cloned()
}

/// On the terminal even though the test harness captures `eprintln!` of passing tests.
fn notice(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn resolve() -> Result<Option<String>, TestDatabaseError> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL")
        && !url.is_empty()
    {
        return Ok(Some(url));
    }
    match throwaway_cluster() {
        Ok(url) => {
            notice(
                "PostgreSQL tests: TEST_DATABASE_URL is not set; using a throwaway cluster on 127.0.0.1",
            );
            Ok(Some(url))
        }
        Err(reason) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            Err(TestDatabaseError(reason))
        }
        Err(reason) => {
            notice(&format!(
                "SKIPPED: the PostgreSQL tests (TEST_DATABASE_URL is not set and {})",
                crate::error_chain(&reason)
            ));
            Ok(None)
        }
    }
}

/// The newest `bin` directory of Debian's PostgreSQL packages that has `initdb`, or `initdb` on
/// the `PATH`.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()))
}

/// PostgreSQL refuses to run as root: then it runs as the `postgres` user.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().next().map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn throwaway_cluster() -> Result<String, ClusterError> {
    let bin = binaries().ok_or(ClusterError::NoBinaries)?;
    let as_postgres = running_as_root();
    let dir = std::env::temp_dir().join(format!(
        "mcp-oauth-bridge-test-pg-{}-{}",
        std::process::id(),
        crate::tokens::opaque::random_string(6).replace(['-', '_'], "x")
    ));
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let path = dir.to_str().ok_or(ClusterError::NotUtf8)?.to_owned();
    if as_postgres {
        let chown = Command::new("chown")
            .args(["postgres:", &path])
            .status()
            .map_err(io("run chown"))?;
        if !chown.success() {
            return Err(ClusterError::NoPostgresUser);
        }
    }
    let data = format!("{path}/data");
    // A password, not `trust`: other local users must not get a superuser on this port.
    let password = crate::tokens::opaque::random_string(18).replace(['-', '_'], "x");
    let password_file = format!("{path}/password");
    std::fs::write(&password_file, &password).map_err(io(format!("write {password_file}")))?;
    if as_postgres {
        let _ = Command::new("chown")
            .args(["postgres:", &password_file])
            .status();
    }
    let initdb = command(as_postgres, &bin.join("initdb"))
        .args([
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "--no-sync",
        ])
        .args(["-E", "UTF8"])
        .arg(format!("--pwfile={password_file}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io("run initdb"))?;
    if !initdb.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(ClusterError::Initdb(
            String::from_utf8_lossy(&initdb.stderr).trim().to_owned(),
        ));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(io("find a free port"))?
        .port();
    // A watchdog shell runs the server and, once this test process is gone, stops it and removes
    // its files: nothing outlives the tests.
    // Paths travel as arguments, never inside the script's text.
    let script = "\"$1\" -D \"$2\" -p \"$3\" -c listen_addresses=127.0.0.1 -k \"$4\" -F >\"$4/log\" 2>&1 & pg=$!; \
         while [ -d \"/proc/$5\" ] && kill -0 $pg 2>/dev/null; do sleep 1; done; \
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf \"$4\"";
    command(as_postgres, Path::new("/bin/sh"))
        .args(["-c", script, "sh"])
        .arg(bin.join("postgres"))
        .args([
            &data,
            &port.to_string(),
            &path,
            &std::process::id().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("start PostgreSQL"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let port_text = port.to_string();
    loop {
        // pg_isready needs no password: it only asks whether connections are accepted.
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port_text])
            .status()
            .map(|status| status.success())
            .unwrap_or_else(|_| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(ClusterError::NotStarted(path));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!(
        "postgres://postgres:{password}@127.0.0.1:{port}/postgres"
    ))
}
