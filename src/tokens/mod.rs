//! Our own credentials: JWT access tokens and their keys, opaque codes and refresh tokens.

mod crypto;
pub mod jwt;
pub mod keys;
pub mod opaque;
pub mod refresh;
mod verified;

/// The type of every access token we issue (RFC 6750), which is also the authentication scheme
/// it is presented with (`Authorization: Bearer …`) and the challenge asking for one.
pub(crate) const BEARER: &str = "Bearer";

pub use jwt::AccessTokenClaims;
pub use keys::KeySet;
pub use opaque::{TokenHash, generate_token};
