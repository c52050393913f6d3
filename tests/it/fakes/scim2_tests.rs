//! Unit tests of the scim2 fake: its vendor rules, called directly and over HTTP.

use super::*;

#[test]
fn parses_plain_and_chunked_answers() {
    let r = parse_response(
        b"HTTP/1.0 201 Created\r\nContent-Type: application/scim+json\r\n\
          Content-Length: 7\r\n\r\n{\"a\":1}junk",
    )
    .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    assert_eq!(r.json(), json!({"a": 1}));
    let r = parse_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.json(), json!({"a": 1}));
    assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    assert!(dechunk(b"zz\r\n").is_err());
    assert_eq!(
        url_encode("userName eq \"a b\""),
        "userName%20eq%20%22a%20b%22"
    );
    assert_eq!(scim_quote(r#"Q "x" \ y"#), r#""Q \"x\" \\ y""#);
}

/// Calls through the proxy, as rostersync would.
fn via_proxy(f: &Scim2Server, method: &str, path_q: &str, body: Option<Value>) -> RawResponse {
    let mut headers = vec![
        ("Host".to_string(), f.proxy.addr.to_string()),
        ("Authorization".to_string(), format!("Bearer {}", f.token())),
    ];
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        headers.push(("Content-Type".into(), "application/scim+json".into()));
    }
    http_call(
        f.proxy.addr,
        method,
        &format!("{PREFIX}{path_q}"),
        &headers,
        body.as_bytes(),
        Duration::from_secs(30),
    )
    .unwrap()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn real_server_behind_the_proxy() {
    let f = Scim2Server::start();
    let ana = f.add_user("ana@example.com");
    let bo = f.add_user("bo@example.com");
    assert_eq!(f.add_user("ANA@example.com"), ana, "add_user is idempotent");
    assert!(f.source_id("ana@example.com").is_none());
    let t = f.target_toml("scim");
    assert!(t.contains("flavor = \"rfc7644\"") && t.contains("auth = \"bearer\""));
    assert!(t.contains(&f.base_url()) && t.contains(&f.env()[0].0));

    // rostersync's user lookup.
    let filter = url_encode("userName eq \"bo@example.com\"");
    let r = via_proxy(&f, "GET", &format!("/Users?filter={filter}"), None);
    assert_eq!(r.json()["Resources"][0]["id"], bo.as_str());

    // Create; the Location names the proxy, not the real server.
    let r = via_proxy(
        &f,
        "POST",
        "/Groups",
        Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "Tier 1",
                    "members": [{"value": ana}]})),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(
        r.header("location")
            .unwrap()
            .contains(&f.proxy.addr.to_string())
    );
    assert_eq!(f.groups()["Tier 1"], set(&["ana@example.com"]));

    // Adoption lookup by displayName.
    let filter = url_encode("displayName eq \"tier 1\"");
    let r = via_proxy(&f, "GET", &format!("/Groups?filter={filter}"), None);
    assert_eq!(r.json()["totalResults"], 1);

    // One PATCH with add + remove; 204 without a body.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [
        {"op": "add", "path": "members", "value": [{"value": bo}]},
        {"op": "remove", "path": format!("members[value eq \"{ana}\"]")},
    ]});
    let gpath = format!("/Groups/{id}");
    f.inject(f.membership_write(), Fault::status(503), 1);
    assert_eq!(
        via_proxy(&f, "PATCH", &gpath, Some(patch.clone())).status,
        503
    );
    assert_eq!(
        f.groups()["Tier 1"],
        set(&["ana@example.com"]),
        "fault left state alone"
    );
    let r = via_proxy(&f, "PATCH", &gpath, Some(patch.clone()));
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(f.groups()["Tier 1"], set(&["bo@example.com"]));
    // The same again is a no-op, still 204.
    assert_eq!(via_proxy(&f, "PATCH", &gpath, Some(patch)).status, 204);
    assert_eq!(f.groups()["Tier 1"], set(&["bo@example.com"]));

    // RFC 7644 errors.
    let r = via_proxy(&f, "GET", "/Groups/nope", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["schemas"][0], ERROR_SCHEMA);
    let r = via_proxy(
        &f,
        "POST",
        "/Groups",
        Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "X", "owners": ["a"]})),
    );
    assert_eq!(r.status, 400);
    let r = via_proxy(
        &f,
        "PATCH",
        &gpath,
        Some(json!({"Operations": [
            {"op": "remove", "path": "members", "value": [{"value": bo}]}]})),
    );
    assert_eq!(r.status, 400, "remove with a value list is refused");
    let r = http_call(
        f.proxy.addr,
        "GET",
        "/v2/Groups",
        &[],
        b"",
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(r.status, 401);

    // A create whose answer is lost still happened.
    f.inject(f.create_request(), Fault::DropAfter, 1);
    let lost = http_call(
        f.proxy.addr,
        "POST",
        "/v2/Groups",
        &[
            ("Authorization".into(), format!("Bearer {}", f.token())),
            ("Content-Type".into(), "application/scim+json".into()),
        ],
        json!({"schemas": [GROUP_SCHEMA], "displayName": "Tier 1"})
            .to_string()
            .as_bytes(),
        Duration::from_secs(30),
    );
    assert!(lost.is_err());
    assert_eq!(f.count_named("Tier 1"), 2);
    assert!(
        f.groups()
            .keys()
            .any(|k| k.starts_with("Tier 1 [duplicate "))
    );

    let statuses: Vec<u16> = f.requests().iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        vec![200, 201, 200, 503, 204, 204, 404, 400, 400, 401, 0]
    );
    f.clear_requests();
    assert!(f.requests().is_empty());
}

#[test]
fn by_hand_knobs_and_drop() {
    let f = Scim2Server::start();
    f.add_user("ana@example.com");
    f.create_group_by_hand("Legacy", &["ana@example.com", "raw-id-7"]);
    assert_eq!(f.groups()["Legacy"], set(&["ana@example.com", "raw-id-7"]));
    f.add_user("bo@example.com");
    f.set_members_by_hand("Legacy", &["bo@example.com"]);
    assert_eq!(f.groups()["Legacy"], set(&["bo@example.com"]));
    f.delete_group_by_hand("Legacy");
    assert!(f.groups().is_empty());
    assert!(f.requests().is_empty(), "knobs bypass the proxy");
    let pid = f.child.lock().unwrap().id();
    let upstream = f.upstream;
    drop(f);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(TcpStream::connect_timeout(&upstream, Duration::from_secs(1)).is_err());
}
