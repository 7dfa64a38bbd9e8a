//! Credentials: server-side API keys and client JWTs.

pub mod api_key;
pub mod ticket;
pub mod token;

pub use crate::domain::{is_base62, random_base62};
