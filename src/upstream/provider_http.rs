//! How the bridge asks an identity provider for its discovery document, its keys and tokens.
//! Each answer is read up to `MAX_RESPONSE_BYTES`: the client library would otherwise read
//! whatever arrives into memory, so one answer (from a provider gone wrong, or whoever answers at
//! its address) could take the process's memory, and a token that large would then be kept in
//! every grant's record and rewritten at every rotation.

use std::future::Future;
use std::pin::Pin;

use openidconnect::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};

use crate::bounded_read::{BodyError, read_at_most};

/// Discovery documents, key sets and token responses are a few kilobytes; an ID token with a
/// few hundred groups a few tens.
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub(crate) struct ProviderHttp(reqwest::Client);

impl ProviderHttp {
    pub(crate) fn new(client: reqwest::Client) -> Self {
        ProviderHttp(client)
    }

    /// The client itself, for the requests the bridge reads on its own (UserInfo, with a
    /// smaller limit of its own).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.0
    }
}

fn too_large() -> HttpClientError<reqwest::Error> {
    HttpClientError::Other(format!(
        "the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes"
    ))
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let mut response = self
                .0
                .execute(request.try_into().map_err(Box::new)?)
                .await
                .map_err(Box::new)?;
            let mut answer = openidconnect::http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let body = match read_at_most(&mut response, MAX_RESPONSE_BYTES).await {
                Ok(body) => body,
                Err(BodyError::TooLarge) => return Err(too_large()),
                Err(BodyError::Read(error)) => {
                    return Err(HttpClientError::Reqwest(Box::new(error)));
                }
            };
            answer.body(body).map_err(HttpClientError::Http)
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use futures_util::stream;

    use super::*;

    /// A server at 127.0.0.1 answering `/declared/N` with N bytes and a Content-Length, and
    /// `/chunked/N` with N bytes in 16 KiB chunks and none.
    async fn server() -> String {
        let app = Router::new()
            .route(
                "/declared/{size}",
                get(
                    |axum::extract::Path(size): axum::extract::Path<usize>| async move {
                        vec![b'a'; size]
                    },
                ),
            )
            .route(
                "/chunked/{size}",
                get(
                    |axum::extract::Path(size): axum::extract::Path<usize>| async move {
                        let chunks = (0..size.div_ceil(16 * 1024)).map(move |n| {
                            let length = (size - n * 16 * 1024).min(16 * 1024);
                            Ok::<_, std::io::Error>(vec![b'a'; length])
                        });
                        Body::from_stream(stream::iter(chunks))
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    async fn fetch(url: String) -> Result<HttpResponse, HttpClientError<reqwest::Error>> {
        let http = ProviderHttp::new(reqwest::Client::new());
        let request = openidconnect::http::Request::get(url)
            .body(Vec::new())
            .unwrap();
        http.call(request).await
    }

    #[tokio::test]
    async fn an_answer_up_to_the_limit_is_read_whole_declared_or_chunked() {
        let base = server().await;
        for way in ["declared", "chunked"] {
            let response = fetch(format!("{base}/{way}/{MAX_RESPONSE_BYTES}"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.body().len(), MAX_RESPONSE_BYTES, "{way}");
        }
    }

    /// A length over the limit is refused from the headers: here no body follows them, and a
    /// client that waited for it would wait for ever.
    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_the_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.unwrap();
            // The request first: an answer before it would be no answer to it.
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0; 1];
                connection.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                MAX_RESPONSE_BYTES + 1
            );
            connection.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            drop(connection);
        });
        let error = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            fetch(format!("http://{address}/token")),
        )
        .await
        .expect("refused from the headers, without waiting for the body")
        .unwrap_err();
        assert!(
            error.to_string().contains("larger than 262144 bytes"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_declared_or_chunked() {
        let base = server().await;
        for (way, size) in [
            ("declared", MAX_RESPONSE_BYTES + 1),
            ("chunked", MAX_RESPONSE_BYTES + 1),
            ("chunked", 64 * 1024 * 1024),
        ] {
            let error = fetch(format!("{base}/{way}/{size}")).await.unwrap_err();
            assert!(
                error.to_string().contains("larger than 262144 bytes"),
                "{way} {size}: {error}"
            );
        }
    }
}
