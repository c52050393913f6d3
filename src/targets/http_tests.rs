//! Unit tests of the HTTP layer: pacing, scrubbing, redaction, body limits.

use super::*;

#[test]
fn request_debug_prints_no_body_and_no_header_value() {
    let r = Request::new(Method::POST, "https://h.example/api/v2/Group/list?x=1")
        .json(serde_json::json!({"userId": "u-secret", "token": "t-secret", "name": "G"}))
        .header(
            HeaderName::from_static("x-auth-token"),
            HeaderValue::from_static("h-secret"),
        );
    let d = format!("{r:?}");
    assert!(!d.contains("secret") && !d.contains("\"G\""), "{d}");
    assert!(
        d.contains("POST") && d.contains("/api/v2/Group/list?x=1"),
        "{d}"
    );
    assert!(
        d.contains("body: [REDACTED]") && d.contains("x-auth-token"),
        "{d}"
    );
    let d = format!("{:#?}", Request::new(Method::GET, "https://h.example/a"));
    assert!(!d.contains("body"), "{d}");
}

#[test]
fn the_encoded_forms_of_a_secret_are_scrubbed_too() {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let forms = with_encodings("s3cret-token");
    for echoed in [
        b64("s3cret-token"),
        b64("s3cret-token:"),
        b64(":s3cret-token"),
    ] {
        assert!(forms.contains(&echoed), "{echoed}");
    }
    assert_eq!(forms[0], "s3cret-token");
}

#[test]
fn urlencode_escapes_query_values() {
    assert_eq!(urlencode("a b+c@d"), "a%20b%2Bc%40d");
}

#[test]
fn pacing_stays_under_the_vendor_limit() {
    let (period, burst) = pacing(10.0, 4);
    assert_eq!(burst, 3);
    assert!(
        period > Duration::from_millis(100) && period < Duration::from_millis(110),
        "{period:?}"
    );
    assert_eq!(pacing(1.0, 1).1, 1);
    assert_eq!(pacing(10.0, 10).1, 9);
}

/// Real time: the instants the limiter lets requests go, fed to the vendor's strict
/// token bucket (10/s, burst 4, full at the start), never find it below 1.5 tokens (at
/// exactly 10/s with burst 4 they would find it at exactly 1.0: any jitter trips it).
#[tokio::test]
async fn a_strict_bucket_at_the_vendor_rate_never_runs_dry() {
    let l = limiter(10.0, 4);
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..14 {
        l.until_ready().await;
        at.push(start.elapsed().as_secs_f64());
    }
    let (mut tokens, mut last, mut least) = (4.0f64, 0.0f64, f64::MAX);
    for t in &at {
        tokens = (tokens + (t - last) * 10.0).min(4.0);
        last = *t;
        least = least.min(tokens);
        tokens -= 1.0;
    }
    assert!(least >= 1.5, "the bucket fell to {least:.2} tokens: {at:?}");
    // 3 at once, then 11 at 9.7/s: about 1.13 s; not much slower than the vendor allows.
    let took = *at.last().expect("14 instants");
    assert!((1.1..2.5).contains(&took), "took {took:.2}s");
}

#[test]
fn not_implemented_is_final_not_transient() {
    for status in [501, 505] {
        assert!(
            matches!(default_verdict(status, b""), Verdict::Fail(_)),
            "{status} is never retried"
        );
    }
    for status in [500, 502, 503, 504, 408, 429] {
        assert!(
            matches!(default_verdict(status, b""), Verdict::Retry(_)),
            "{status} is retried"
        );
    }
}
