//! Unit tests of the maestro fake: its vendor rules, called directly and over HTTP.

use super::*;
use std::io::{Read, Write};

fn fake() -> Arc<FakeMaestro> {
    let f = FakeMaestro::start();
    for e in ["ana@example.com", "bo@example.com", "cy@example.com"] {
        f.add_user(e);
    }
    f
}

fn req(f: &FakeMaestro, method: &str, path_q: &str, body: Option<Value>) -> Req {
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    let mut headers = vec![("apiToken".to_string(), f.token())];
    if body.is_some() {
        headers.push((
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ));
    }
    Req {
        method: method.into(),
        path: format!("{PREFIX}{path}"),
        query: query.into(),
        headers,
        body: body.map(|b| b.to_string()).unwrap_or_default(),
    }
}

fn call(f: &FakeMaestro, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = f.server.handler.handle(&req(f, method, path, body));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn create(f: &FakeMaestro, name: &str, members: &[&str]) -> String {
    let (s, v) = call(
        f,
        "POST",
        "/Groups",
        Some(json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members})),
    );
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

fn patch(f: &FakeMaestro, id: &str, ops: Value) -> (u16, Value) {
    call(
        f,
        "PATCH",
        &format!("/Groups/{id}"),
        Some(json!({"schemas": [PATCH_SCHEMA], "Operations": ops})),
    )
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn auth_is_checked_on_every_request() {
    let f = fake();
    let mut r = req(&f, "GET", "/Groups", None);
    r.headers.clear();
    assert_eq!(f.server.handler.handle(&r).status, 401);
    r.headers = vec![("apiToken".into(), "wrong".into())];
    let rep = f.server.handler.handle(&r);
    assert_eq!(rep.status, 401);
    assert!(rep.body.contains(ERROR_SCHEMA));
    let t = f.token();
    for cred in [t.clone(), format!("{t}:")] {
        r.headers = vec![(
            "Authorization".into(),
            format!("Basic {}", base64_encode(cred.as_bytes())),
        )];
        assert_eq!(f.server.handler.handle(&r).status, 200);
    }
    r.headers = vec![("Authorization".into(), format!("Bearer {t}"))];
    assert_eq!(f.server.handler.handle(&r).status, 401);
    r.headers = vec![(
        "Authorization".into(),
        format!("Basic {}", base64_encode(b"x:y")),
    )];
    assert_eq!(f.server.handler.handle(&r).status, 401);
}

#[test]
fn base64_round_trip() {
    for s in ["", "a", "ab", "abc", "abcd", "s3cret-maestro-1-Xk7Pq:"] {
        assert_eq!(
            base64_decode(&base64_encode(s.as_bytes())).unwrap(),
            s.as_bytes()
        );
    }
    assert_eq!(base64_encode(b"tok:"), "dG9rOg==");
}

#[test]
fn create_get_and_validation() {
    let f = fake();
    let uid = f.user_id("bo@example.com");
    let id = create(&f, "Tier 1", &["ana@example.com", &uid]);
    let (s, v) = call(&f, "GET", &format!("/Groups/{id}"), None);
    assert_eq!(s, 200);
    assert_eq!(v["displayName"], "Tier 1");
    assert_eq!(v["members"], json!(["ana@example.com", uid]));
    assert_eq!(
        f.groups()["Tier 1"],
        set(&["ana@example.com", "bo@example.com"])
    );

    let bad = [
        json!({"displayName": "x"}),
        json!({"schemas": [GROUP_SCHEMA]}),
        json!({"schemas": [GROUP_SCHEMA], "displayName": ""}),
        json!({"schemas": [GROUP_SCHEMA], "displayName": "x", "members": ["nobody@x.io"]}),
        json!({"schemas": [GROUP_SCHEMA], "displayName": "x",
               "members": [{"value": "ana@example.com"}]}),
        json!({"schemas": [GROUP_SCHEMA], "displayName": "x", "owners": ["ana@example.com"]}),
    ];
    for b in bad {
        let (s, v) = call(&f, "POST", "/Groups", Some(b.clone()));
        assert_eq!(s, 400, "{b} -> {v}");
        assert_eq!(v["schemas"][0], ERROR_SCHEMA);
    }
    let mut r = req(&f, "POST", "/Groups", Some(json!({"x": 1})));
    r.body = "{not json".into();
    assert_eq!(f.server.handler.handle(&r).status, 400);
    r.headers.retain(|(k, _)| k != "content-type");
    r.body = json!({"schemas": [GROUP_SCHEMA], "displayName": "y"}).to_string();
    assert_eq!(f.server.handler.handle(&r).status, 415);
    assert_eq!(f.group_count(), 1);
    assert_eq!(call(&f, "GET", "/Groups/nope", None).0, 404);

    // Owners are user ids; emails only with the knob.
    let (s, v) = call(
        &f,
        "POST",
        "/Groups",
        Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "Leads", "owners": [uid]})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(f.owners("Leads"), set(&["bo@example.com"]));
    f.set_accept_owner_emails(true);
    let (s, _) = call(
        &f,
        "POST",
        "/Groups",
        Some(
            json!({"schemas": [GROUP_SCHEMA], "displayName": "L2", "owners": ["ana@example.com"]}),
        ),
    );
    assert_eq!(s, 201);
}

#[test]
fn listing_pages_and_ignores_filter() {
    let f = fake();
    for i in 0..45 {
        create(&f, &format!("G{i:02}"), &[]);
    }
    let (_, v) = call(&f, "GET", "/Groups", None);
    assert_eq!(v["schemas"][0], LIST_SCHEMA);
    assert_eq!(v["totalResults"], 45);
    assert_eq!(v["itemsPerPage"], 20);
    assert_eq!(v["Resources"][0]["displayName"], "G00");
    let (_, v) = call(&f, "GET", "/Groups?startIndex=41&count=10", None);
    assert_eq!(v["startIndex"], 41);
    assert_eq!(v["itemsPerPage"], 5);
    assert_eq!(v["Resources"][0]["displayName"], "G40");
    let (_, v) = call(
        &f,
        "GET",
        "/Groups?filter=displayName%20eq%20%22G44%22&count=3",
        None,
    );
    assert_eq!(v["totalResults"], 45);
    assert_eq!(v["Resources"][0]["displayName"], "G00");
    f.set_max_page_size(7);
    let (_, v) = call(&f, "GET", "/Groups?count=1000", None);
    assert_eq!(v["itemsPerPage"], 7);
    assert_eq!(call(&f, "GET", "/Groups?count=abc", None).0, 400);
}

#[test]
fn patch_add_remove_replace() {
    let f = fake();
    let id = create(&f, "Tier 1", &["ana@example.com"]);
    let (s, v) = patch(
        &f,
        &id,
        json!([
            {"op": "add", "path": "members", "value": [{"value": "bo@example.com"}]},
            {"op": "remove", "path": "members", "value": [{"value": "ana@example.com"}]},
        ]),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["schemas"][0], LIST_SCHEMA);
    assert_eq!(v["Resources"][0]["members"], json!(["bo@example.com"]));
    // No-ops: adding someone there (by another of their ids), removing someone absent.
    let bo_id = f.user_id("bo@example.com");
    let (s, _) = patch(
        &f,
        &id,
        json!([
            {"op": "add", "path": "members", "value": [{"value": bo_id}]},
            {"op": "remove", "path": "members", "value": [{"value": "cy@example.com"}]},
        ]),
    );
    assert_eq!(s, 200);
    assert_eq!(f.raw_members("Tier 1").unwrap(), vec!["bo@example.com"]);
    // Removing by the external id removes the email entry.
    let ext = f.external_id("bo@example.com");
    patch(
        &f,
        &id,
        json!([{"op": "remove", "path": "members", "value": [{"value": ext}]}]),
    );
    assert!(f.raw_members("Tier 1").unwrap().is_empty());
    // Atomic: an unknown member refuses the whole request.
    let (s, v) = patch(
        &f,
        &id,
        json!([
            {"op": "add", "path": "members", "value": [{"value": "cy@example.com"}]},
            {"op": "add", "path": "members", "value": [{"value": "ghost@example.com"}]},
        ]),
    );
    assert_eq!(s, 400);
    assert_eq!(v["schemas"][0], ERROR_SCHEMA);
    assert!(f.raw_members("Tier 1").unwrap().is_empty());
    // Replace members, owners; rename both ways.
    let ana = f.user_id("ana@example.com");
    let (s, _) = patch(
        &f,
        &id,
        json!([
            {"op": "replace", "path": "members",
             "value": [{"value": "ana@example.com"}, {"value": "cy@example.com"}]},
            {"op": "add", "path": "owners", "value": [{"value": ana}]},
            {"op": "replace", "path": "displayName", "value": "Tier One"},
        ]),
    );
    assert_eq!(s, 200);
    assert_eq!(
        f.groups()["Tier One"],
        set(&["ana@example.com", "cy@example.com"])
    );
    assert_eq!(f.owners("Tier One"), set(&["ana@example.com"]));
    let (s, _) = patch(
        &f,
        &id,
        json!([{"op": "replace", "value": {"displayName": "T1"}}]),
    );
    assert_eq!(s, 200);
    assert!(f.groups().contains_key("T1"));
    // RFC 7644 filter paths and bad shapes are refused.
    for ops in [
        json!([{"op": "remove", "path": "members[value eq \"cy@example.com\"]"}]),
        json!([{"op": "remove", "path": "members"}]),
        json!([{"op": "add", "path": "members", "value": ["cy@example.com"]}]),
        json!([{"op": "frob", "path": "members", "value": []}]),
        json!([]),
    ] {
        let (s, v) = patch(&f, &id, ops.clone());
        assert_eq!(s, 400, "{ops} -> {v}");
    }
    let (s, _) = call(
        &f,
        "PATCH",
        &format!("/Groups/{id}"),
        Some(json!({"Operations": [{"op": "add", "path": "members", "value": []}]})),
    );
    assert_eq!(s, 400, "PATCH without the PatchOp schema");
    assert_eq!(
        patch(
            &f,
            "nope",
            json!([{"op": "add", "path": "members", "value": []}])
        )
        .0,
        404
    );
}

#[test]
fn put_and_delete() {
    let f = fake();
    let id = create(&f, "Tier 1", &["ana@example.com"]);
    let (s, v) = call(
        &f,
        "PUT",
        &format!("/Groups/{id}"),
        Some(json!({"schemas": [GROUP_SCHEMA], "id": id, "members": ["bo@example.com"]})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["displayName"], "Tier 1");
    assert_eq!(v["members"], json!(["bo@example.com"]));
    assert_eq!(call(&f, "DELETE", &format!("/Groups/{id}"), None).0, 204);
    assert_eq!(call(&f, "DELETE", &format!("/Groups/{id}"), None).0, 404);
    assert_eq!(f.group_count(), 0);
}

#[test]
fn by_hand_and_duplicates() {
    let f = fake();
    f.create_group_by_hand("Legacy", &["ana@example.com", "old@example.com"]);
    create(&f, "Legacy", &[]);
    assert_eq!(f.count_named("Legacy"), 2);
    let g = f.groups();
    assert_eq!(g["Legacy"], set(&["ana@example.com", "old@example.com"]));
    assert_eq!(g.len(), 2, "{g:?}");
    f.set_members_by_hand("Legacy", &["bo@example.com"]);
    assert_eq!(f.groups()["Legacy"], set(&["bo@example.com"]));
    f.delete_group_by_hand("Legacy");
    assert_eq!(f.count_named("Legacy"), 1);
    assert!(f.source_id("ana@example.com").is_none());
    assert_eq!(f.add_user("ana@example.com"), "ana@example.com");
}

#[test]
fn target_block_and_secrets() {
    let f = fake();
    let t = f.target_toml("maestro");
    assert!(t.contains("flavor = \"maestroqa\""));
    assert!(t.contains(&format!("base_url = \"{}\"", f.base_url())));
    assert!(t.contains("auth = \"api_token\""));
    let (k, v) = &f.env()[0];
    assert!(t.contains(k.as_str()));
    assert!(v.len() > 20 && f.secrets().contains(v));
    f.use_basic_auth();
    assert!(f.target_toml("m").contains("auth = \"basic\""));
}

/// A minimal blocking HTTP/1.1 client for the round trip.
fn http(
    f: &FakeMaestro,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(f.server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut head = format!(
        "{method} {PREFIX}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        f.server.addr,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn round_trip_over_http_with_faults() {
    let f = fake();
    let auth = (
        "Authorization",
        format!(
            "Basic {}",
            base64_encode(format!("{}:", f.token()).as_bytes())
        ),
    );
    let ct = (
        "Content-Type",
        "application/json; charset=utf-8".to_string(),
    );
    let body = json!({"schemas": [GROUP_SCHEMA], "displayName": "Tier 1",
                      "members": ["ana@example.com"]});
    let (s, b) = http(
        &f,
        "POST",
        "/Groups",
        &[auth.clone(), ct.clone()],
        &body.to_string(),
    );
    assert_eq!(s, 201, "{b}");
    let id = serde_json::from_str::<Value>(&b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    f.inject(f.membership_write(), Fault::too_many(1), 1);
    let patch = json!({"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": "bo@example.com"}]}]});
    let path = format!("/Groups/{id}");
    let (s, _) = http(
        &f,
        "PATCH",
        &path,
        &[auth.clone(), ct.clone()],
        &patch.to_string(),
    );
    assert_eq!(s, 429);
    let (s, b) = http(
        &f,
        "PATCH",
        &path,
        &[("apiToken", f.token()), ct],
        &patch.to_string(),
    );
    assert_eq!(s, 200, "{b}");
    let (s, _) = http(&f, "GET", "/Groups", &[], "");
    assert_eq!(s, 401);
    assert_eq!(
        f.groups()["Tier 1"],
        set(&["ana@example.com", "bo@example.com"])
    );
    let log = f.requests();
    assert_eq!(
        log.iter().map(|l| l.status).collect::<Vec<_>>(),
        vec![201, 429, 200, 401]
    );
    assert!(log[0].header("authorization").is_some());
}
