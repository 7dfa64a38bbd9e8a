//! The parsers an attacker reaches without any credential: API keys, client JWTs (header peek
//! and full verification) and tickets. None may panic; a token only verifies with its secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::auth::api_key::PresentedKey;
use roomcast::auth::token::{peek_app_id, verify};

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(key) = PresentedKey::parse(text) {
        assert_eq!(key.plaintext(), text);
    }
    let _ = peek_app_id(text);
    // Random bytes never carry a valid HS256 signature for this secret.
    assert!(verify(text, SECRET, 30).is_err());
});
