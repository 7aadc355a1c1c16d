//! How the hub signs what it POSTs to webhooks (alarm notifications and the
//! lab's events alike): HMAC-SHA256 over `<timestamp>.<body>`, the timestamp
//! in its own header so a receiver can refuse old requests (replays).

/// Header with the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-qi-timestamp";
/// Header `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-qi-signature";
/// Header with the event's id: the same on every attempt of a delivery.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header with the event's type (`run.evaluated`, ...).
pub const EVENT_HEADER: &str = "x-qi-event";

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // From `printf '1700000000.{}' | openssl dgst -sha256 -hmac Jefe`.
        assert_eq!(
            super::sign(b"Jefe", 1_700_000_000, b"{}"),
            "sha256=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }
}
