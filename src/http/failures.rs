//! The one place that logs the bridge's own failures: every 5xx answer, and every redirect that
//! tells a client `server_error` or `temporarily_unavailable`, once, inside the request's span
//! (method, path, request id) and with the whole cause chain the error carried up to here.
//! Nothing below logs a failure it passes on.

use axum::http::StatusCode;
use axum::response::Response;

use crate::oauth::{Cause, OAuthError};
use crate::storage::StorageError;

/// What a response reports as failed, attached by whoever built the response.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// The error code the client was told.
    pub(crate) code: &'static str,
    pub(crate) cause: Cause,
}

impl Failure {
    /// The failure an error reports, `None` for the client's own mistakes.
    pub(crate) fn of(error: &OAuthError) -> Option<Failure> {
        error.cause().map(|cause| Failure {
            code: error.code(),
            cause: cause.clone(),
        })
    }

    pub(crate) fn attach_to(self, response: &mut Response) {
        response.extensions_mut().insert(self);
    }

    /// Our own defect or our storage failing is an error; what we refuse on purpose (a limit
    /// reached) or what is down beside us (the provider, the MCP server) is a warning.
    fn is_error(&self) -> bool {
        self.code == "server_error"
            || self
                .cause
                .error()
                .is_some_and(|error| error.downcast_ref::<StorageError>().is_some())
    }
}

/// Attaches the failure `error` reports, if any, to `response`.
pub(crate) fn attach(error: &OAuthError, response: &mut Response) {
    if let Some(failure) = Failure::of(error) {
        failure.attach_to(response);
    }
}

/// Logs the failure an answer carries, once. A plain function of the response (a tower
/// `MapResponse` layer), not an axum `from_fn` middleware: that one clones and boxes the rest of
/// the stack for every request, which was a tenth of the proxy's time.
pub(crate) fn log_failures(mut response: Response) -> Response {
    let failure = response.extensions_mut().remove::<Failure>();
    let status = response.status();
    if !status.is_server_error() && failure.is_none() {
        return response;
    }
    let status = status.as_u16();
    match failure {
        Some(failure) if failure.is_error() => {
            let cause = failure.cause.chain();
            tracing::error!(status, error = failure.code, %cause, "request failed");
        }
        Some(Failure { code, cause }) => {
            tracing::warn!(status, error = code, cause = %cause.chain(), "request failed");
        }
        None if status == StatusCode::INTERNAL_SERVER_ERROR.as_u16() => {
            tracing::error!(status, "request failed; no cause recorded");
        }
        None => tracing::warn!(status, "request failed; no cause recorded"),
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::storage::StorageError;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    async fn call(app: &Router, path: &str, request_id: &str) -> Response {
        let request = Request::builder()
            .uri(path)
            .header("x-request-id", request_id)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap()
    }

    fn app() -> Router {
        let routes = Router::new()
            .route(
                "/storage-down",
                get(|| async {
                    OAuthError::from(StorageError::Database("connection refused".into()))
                        .into_response()
                }),
            )
            .route(
                "/bad-request",
                get(|| async { OAuthError::invalid_request("state is missing").into_response() }),
            )
            .route(
                "/bare-500",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR.into_response() }),
            );
        super::super::observed(routes)
    }

    #[tokio::test]
    async fn a_failure_is_logged_once_with_its_cause_chain_and_the_request_id() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = app();

        let response = call(&app, "/storage-down", "req-storage-1").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = call(&app, "/bad-request", "req-client-2").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = call(&app, "/bare-500", "req-bare-3").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let lines = captured.lines();
        let about = |id: &str| -> Vec<&String> {
            lines
                .iter()
                .filter(|line| {
                    line.contains(id) && (line.contains("WARN") || line.contains("ERROR"))
                })
                .collect()
        };
        let storage = about("req-storage-1");
        assert_eq!(storage.len(), 1, "{lines:#?}");
        assert!(
            storage[0].contains("storage unavailable: postgresql: connection refused"),
            "{}",
            storage[0]
        );
        assert!(
            storage[0].contains("temporarily_unavailable"),
            "{}",
            storage[0]
        );
        assert!(storage[0].contains("/storage-down"), "{}", storage[0]);
        // Storage failing is an error of ours, though the client is told to come back.
        assert!(storage[0].contains("ERROR"), "{}", storage[0]);
        // The client's own mistake is not a failure of ours.
        assert!(about("req-client-2").is_empty(), "{lines:#?}");
        let bare = about("req-bare-3");
        assert_eq!(bare.len(), 1, "{lines:#?}");
        assert!(bare[0].contains("ERROR") && bare[0].contains("no cause recorded"));
    }

    #[test]
    fn only_failures_of_ours_carry_a_failure() {
        assert!(Failure::of(&OAuthError::invalid_grant("expired")).is_none());
        let failure = Failure::of(&OAuthError::internal(Cause::because("a lock is poisoned")));
        let failure = failure.unwrap();
        assert_eq!(failure.code, "server_error");
        assert_eq!(failure.cause.chain(), "a lock is poisoned");
    }
}
