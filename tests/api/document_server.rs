//! An https server on 127.0.0.1 (certificate for `localhost` from the test CA in
//! tests/fixtures/tls) that serves client metadata documents with scripted answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.crt");
const CERT_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tls/localhost.crt"
);
const KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tls/localhost.key"
);

#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(header::HeaderName, String)>,
    pub body: String,
    /// Sent in chunks without Content-Length, so only a streaming size check can stop it.
    pub streamed: bool,
}

#[derive(Default)]
pub struct Documents {
    answers: Mutex<HashMap<String, Answer>>,
    hits: AtomicU32,
}

pub struct DocumentServer {
    /// `https://localhost:<port>`
    pub base: String,
    pub documents: Arc<Documents>,
}

impl DocumentServer {
    pub async fn start() -> Self {
        let certificate = CertificateDer::from_pem_file(CERT_FILE).unwrap();
        let key = PrivateKeyDer::from_pem_file(KEY_FILE).unwrap();
        let tls = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let documents = Arc::new(Documents::default());
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&documents));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    }
                });
            }
        });
        DocumentServer { base, documents }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn serve(&self, path: &str, answer: Answer) {
        self.documents
            .answers
            .lock()
            .unwrap()
            .insert(path.to_owned(), answer);
    }

    /// A well-formed document whose `client_id` is its own URL.
    pub fn serve_document(&self, path: &str, document: serde_json::Value, cache_control: &str) {
        self.serve(
            path,
            Answer {
                status: StatusCode::OK,
                headers: vec![
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (header::CACHE_CONTROL, cache_control.to_owned()),
                ],
                body: document.to_string(),
                streamed: false,
            },
        );
    }

    pub fn hits(&self) -> u32 {
        self.documents.hits.load(Ordering::SeqCst)
    }
}

async fn answer(State(documents): State<Arc<Documents>>, uri: Uri) -> Response {
    documents.hits.fetch_add(1, Ordering::SeqCst);
    let Some(answer) = documents.answers.lock().unwrap().get(uri.path()).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = if answer.streamed {
        let chunks: Vec<Result<String, std::io::Error>> = answer
            .body
            .as_bytes()
            .chunks(1024)
            .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
            .collect();
        (
            answer.status,
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
        )
            .into_response()
    } else {
        (answer.status, answer.body).into_response()
    };
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
