//! Rows driven by wrk (Debian's `wrk`), a load generator in C in its own process: for requests
//! that carry no state from one to the next (metadata, JWKS, introspection, the proxy), so that
//! the figures are the bridge's and not those of a Rust client sharing its runtime. Every response
//! is checked by the script (status and a text the body must hold); wrk's own socket errors and
//! timeouts count as errors too.

use std::time::Duration;

use super::Row;

/// One request, repeated on every connection.
pub(crate) struct WrkRequest<'a> {
    pub(crate) url: &'a str,
    pub(crate) method: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<String>,
    /// A text every successful body holds.
    pub(crate) body_holds: &'static str,
}

pub(crate) async fn row(
    name: &'static str,
    request: &WrkRequest<'_>,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Row> {
    let script = tempfile_with(&script(request))?;
    let output = tokio::process::Command::new("wrk")
        .args(["--threads", "1", "--connections"])
        .arg(connections.to_string())
        .arg("--duration")
        .arg(format!("{}s", run.as_secs().max(1)))
        .args(["--timeout", "5s", "--script"])
        .arg(&script.path)
        .arg(request.url)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "wrk is not installed: bench/run.sh installs it (Debian's package wrk)"
            ),
            _ => error.into(),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("ROW "))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "wrk printed no result for {name}: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [requests, bad, socket_errors, elapsed_us, p50, p99] = numbers[..] else {
        anyhow::bail!("wrk's result line for {name} is malformed: {line}");
    };
    let errors = bad + socket_errors;
    Ok(Row {
        name,
        done: requests.saturating_sub(bad),
        errors,
        elapsed: Duration::from_micros(elapsed_us.max(1)),
        latencies: Vec::new(),
        percentiles: Some((clamp(p50), clamp(p99))),
    })
}

fn clamp(us: u64) -> u32 {
    u32::try_from(us).unwrap_or(u32::MAX)
}

/// The Lua script: the request, a check of every response, and one result line wrk's `done`
/// prints from every thread's count of bad answers.
fn script(request: &WrkRequest<'_>) -> String {
    let mut lua = format!("wrk.method = {}\n", lua_string(request.method));
    for (name, value) in &request.headers {
        lua.push_str(&format!(
            "wrk.headers[ {} ] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    if let Some(body) = &request.body {
        lua.push_str(&format!("wrk.body = {}\n", lua_string(body)));
    }
    lua.push_str(&format!(
        r#"
local holds = {holds}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
bad = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, holds, 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local bad_total = 0
  for _, thread in ipairs(threads) do bad_total = bad_total + thread:get("bad") end
  local e = summary.errors
  io.write(string.format("ROW %d %d %d %d %d %d\n", summary.requests, bad_total,
    e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"#,
        holds = lua_string(request.body_holds)
    ));
    lua
}

/// A Lua string literal in long brackets, which take any text without escapes; the level is
/// raised until neither the text nor its end can close it early. Lua drops a newline right after
/// the opening bracket, so one is added for a text that starts with one.
fn lua_string(text: &str) -> String {
    let mut level = 0;
    while text.contains(&format!("]{}]", "=".repeat(level)))
        || text.ends_with(&format!("]{}", "=".repeat(level)))
    {
        level += 1;
    }
    let equals = "=".repeat(level);
    let lead = if text.starts_with('\n') { "\n" } else { "" };
    format!("[{equals}[{lead}{text}]{equals}]")
}

/// A file that is removed when dropped.
struct TempFile {
    path: std::path::PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile_with(contents: &str) -> anyhow::Result<TempFile> {
    let path = std::env::temp_dir().join(format!(
        "mcp-oauth-bridge-load-{:016x}.lua",
        rand::random::<u64>()
    ));
    std::fs::write(&path, contents)?;
    Ok(TempFile { path })
}
