//! Reading the body of an answer the bridge asked another server for (an identity provider, a
//! client's metadata document) up to a limit. Whoever answers decides how much it sends, so a
//! read without one would let a single answer take the process's memory.

/// Why a body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Larger than the limit, by its declared length (refused before any byte is read) or by
    /// what arrived (a chunked body, or a declared length that lied).
    TooLarge,
    /// The connection failed while the body arrived.
    Read(reqwest::Error),
}

/// The body of `response`, at most `limit` bytes.
pub(crate) async fn read_at_most(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
