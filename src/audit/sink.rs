//! Writes audit events as JSON lines of their own: the time, the request's id and client
//! address (from the span the HTTP layer opens around each request), then the event. One line
//! per event, written whole under a lock, so that lines from concurrent requests never mix.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{AuditConfig, AuditOutput, REQUEST_SPAN, TARGET};

/// Where the lines go.
pub enum Destination {
    Stdout,
    Stderr,
    File(Mutex<std::fs::File>),
    /// For tests: lines collected in memory.
    #[cfg(test)]
    Memory(std::sync::Arc<Mutex<Vec<u8>>>),
}

impl Destination {
    /// The destination `config` names; `None` when the trail goes with the service's log or
    /// nowhere. The file is opened for appending (created readable by its owner and group
    /// only), so that a failure to open it stops the start-up instead of losing events.
    pub fn configured(config: &AuditConfig) -> std::io::Result<Option<Destination>> {
        Ok(match config.output {
            AuditOutput::Log | AuditOutput::Off => None,
            AuditOutput::Stdout => Some(Destination::Stdout),
            AuditOutput::Stderr => Some(Destination::Stderr),
            AuditOutput::File => {
                let Some(path) = &config.file else {
                    return Err(std::io::Error::other("audit.file is not set"));
                };
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(path)
                    .map_err(|error| {
                        std::io::Error::new(
                            error.kind(),
                            format!("audit.file {}: {error}", path.display()),
                        )
                    })?;
                Some(Destination::File(Mutex::new(file)))
            }
        })
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Destination::Stdout => std::io::stdout().lock().write_all(line),
            Destination::Stderr => std::io::stderr().lock().write_all(line),
            Destination::File(file) => match file.lock() {
                Ok(mut file) => file.write_all(line),
                Err(_) => Err(std::io::Error::other("audit file lock poisoned")),
            },
            #[cfg(test)]
            Destination::Memory(lines) => match lines.lock() {
                Ok(mut lines) => {
                    lines.extend_from_slice(line);
                    Ok(())
                }
                Err(_) => Err(std::io::Error::other("audit memory lock poisoned")),
            },
        }
    }
}

/// The tracing layer that writes the audit trail to its destination.
pub struct AuditLayer {
    destination: Destination,
    /// A failed write is said once on standard error, not once per event.
    failure_reported: AtomicBool,
}

impl AuditLayer {
    pub fn new(destination: Destination) -> AuditLayer {
        AuditLayer {
            destination,
            failure_reported: AtomicBool::new(false),
        }
    }

    /// What this layer needs to see: audit events, and the request spans they happen in.
    pub fn interest(metadata: &Metadata<'_>) -> bool {
        metadata.target() == TARGET || (metadata.is_span() && metadata.name() == REQUEST_SPAN)
    }
}

/// The fields of a request span that an audit line repeats.
#[derive(Debug, Clone, Default)]
struct RequestFields {
    request_id: Option<String>,
    client_address: Option<String>,
}

impl Visit for RequestFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.keep(field, format!("{value:?}"));
    }
}

impl RequestFields {
    fn keep(&mut self, field: &Field, value: String) {
        let value = Some(value).filter(|v| !v.is_empty());
        match field.name() {
            "request_id" => self.request_id = value,
            "client_address" => self.client_address = value,
            _ => {}
        }
    }
}

/// The message of an event: `record` puts the event's JSON there.
#[derive(Default)]
struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        if attributes.metadata().name() != REQUEST_SPAN {
            return;
        }
        let mut fields = RequestFields::default();
        attributes.record(&mut fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        let Some(span) = context.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<RequestFields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let Some(json) = message.0 else {
            return;
        };
        let request = context.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find(|span| span.name() == REQUEST_SPAN)
                .and_then(|span| span.extensions().get::<RequestFields>().cloned())
        });
        let line = audit_line(
            &crate::clock::timestamp_now(),
            request.unwrap_or_default(),
            &json,
        );
        if let Err(error) = self.destination.write_line(line.as_bytes())
            && !self.failure_reported.swap(true, Ordering::Relaxed)
        {
            // Not through tracing: this runs inside the subscriber.
            eprintln!("error: the audit trail could not be written: {error}");
        }
    }
}

/// `{"timestamp":…,"request_id":…,"client_address":…,` then the event's own members.
fn audit_line(timestamp: &str, request: RequestFields, event_json: &str) -> String {
    let mut line = String::with_capacity(event_json.len() + 128);
    line.push('{');
    let mut member = |name: &str, value: &str| {
        line.push_str(&serde_json::Value::from(name).to_string());
        line.push(':');
        line.push_str(&serde_json::Value::from(value).to_string());
        line.push(',');
    };
    member("timestamp", timestamp);
    if let Some(id) = &request.request_id {
        member("request_id", id);
    }
    if let Some(address) = &request.client_address {
        member("client_address", address);
    }
    match event_json.strip_prefix('{') {
        Some(members) => line.push_str(members),
        // `record` always writes an object; anything else is kept whole rather than lost.
        None => {
            line.push_str("\"event_text\":");
            line.push_str(&serde_json::Value::from(event_json).to_string());
            line.push('}');
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::audit::{Event, record};

    fn lines(buffer: &Arc<Mutex<Vec<u8>>>) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn each_event_is_one_line_with_the_time_and_the_request_it_happened_in() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let layer = AuditLayer::new(Destination::Memory(Arc::clone(&buffer)))
            .with_filter(tracing_subscriber::filter::filter_fn(AuditLayer::interest));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                client_address = tracing::field::Empty
            );
            span.record("client_address", tracing::field::display("192.0.2.7"));
            span.in_scope(|| {
                tracing::info!("not an audit event");
                record(&Event::ClientsExpired { count: 2 });
            });
            // A client name with a newline stays on its line.
            record(&Event::ClientRegistered {
                client_id: "c",
                client_name: Some("evil\n{\"event\":\"forged\"}"),
                redirect_uris: &[],
                grant_types: &[],
                token_endpoint_auth_method: "none",
            });
        });
        let lines = lines(&buffer);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["event"], "clients.expired");
        assert_eq!(lines[0]["count"], 2);
        assert_eq!(lines[0]["request_id"], "r-1");
        assert_eq!(lines[0]["client_address"], "192.0.2.7");
        let timestamp = lines[0]["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok());
        assert_eq!(lines[1]["event"], "client.registered");
        assert_eq!(lines[1]["client_name"], "evil\n{\"event\":\"forged\"}");
        assert!(lines[1].get("request_id").is_none());
    }
}
