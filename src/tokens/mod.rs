//! Our own credentials: JWT access tokens and their keys, opaque codes and refresh tokens.

pub mod jwt;
pub mod keys;
pub mod opaque;
pub mod refresh;

pub use jwt::AccessTokenClaims;
pub use keys::KeySet;
pub use opaque::{TokenHash, generate_token};
