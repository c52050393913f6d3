//! Unit tests of the kazoo fake: its vendor rules, called directly and over HTTP.

use super::*;

fn req(method: &str, path_and_query: &str, token: Option<&str>, body: Value) -> Req {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(t) = token {
        headers.push(("x-auth-token".into(), t.into()));
    }
    Req {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    }
}

struct T {
    fake: Arc<FakeKazoo>,
    token: String,
}

impl T {
    fn new() -> T {
        let fake = FakeKazoo::start();
        let token = login(&fake);
        T { fake, token }
    }
    fn call(&self, method: &str, rel: &str, body: Value) -> (u16, Value) {
        let path = format!("/v2/accounts/{}{rel}", self.fake.account_id());
        let r = self
            .fake
            .server
            .handler
            .handle(&req(method, &path, Some(&self.token), body));
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::Null),
        )
    }
}

fn login(fake: &FakeKazoo) -> String {
    let r = fake.server.handler.handle(&req(
        "PUT",
        "/v2/api_auth",
        None,
        json!({"data": {"api_key": fake.api_key()}}),
    ));
    assert_eq!(r.status, 201, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["auth_token"].as_str().unwrap().to_string()
}

#[test]
fn api_auth_and_token_checks() {
    let fake = FakeKazoo::start();
    assert_eq!(fake.account_id().len(), 32);
    assert_eq!(fake.api_key().len(), 64);
    let h = &fake.server.handler;
    let bad = h.handle(&req(
        "PUT",
        "/v2/api_auth",
        None,
        json!({"data": {"api_key": "x"}}),
    ));
    assert_eq!(bad.status, 401);
    let missing = h.handle(&req("PUT", "/v2/api_auth", None, json!({"data": {}})));
    assert_eq!(missing.status, 400);

    let ok = h.handle(&req(
        "PUT",
        "/v2/api_auth",
        None,
        json!({"data": {"api_key": fake.api_key()}}),
    ));
    assert_eq!(ok.status, 201);
    let v: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["account_id"], json!(fake.account_id()));
    let token = v["auth_token"].as_str().unwrap().to_string();
    assert!(fake.secrets().contains(&token));
    assert_eq!(fake.logins(), 1);

    let path = format!("/v2/accounts/{}/groups", fake.account_id());
    for t in [None, Some("nope")] {
        let r = h.handle(&req("GET", &path, t, Value::Null));
        assert_eq!(r.status, 401);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["message"], "invalid_credentials");
        assert_eq!(v["error"], "401");
        assert_eq!(v["data"], json!({}));
    }
    let r = h.handle(&req("GET", &path, Some(&token), Value::Null));
    assert_eq!(r.status, 200);
    let other = format!("/v2/accounts/{}/groups", "0".repeat(32));
    assert_eq!(
        h.handle(&req("GET", &other, Some(&token), Value::Null))
            .status,
        403
    );
    assert_eq!(
        h.handle(&req("GET", "/v1/whatever", Some(&token), Value::Null))
            .status,
        404
    );
    assert_eq!(
        h.handle(&req("DELETE", &path, Some(&token), Value::Null))
            .status,
        405
    );
}

#[test]
fn tokens_expire_after_n_calls() {
    let t = T::new();
    t.fake.expire_tokens_after(2);
    assert_eq!(t.call("GET", "/groups", Value::Null).0, 200);
    assert_eq!(t.call("GET", "/groups", Value::Null).0, 200);
    assert_eq!(t.call("GET", "/groups", Value::Null).0, 401);
    assert_eq!(t.call("GET", "/groups", Value::Null).0, 401);
    let t2 = T {
        token: login(&t.fake),
        fake: t.fake.clone(),
    };
    assert_eq!(t2.call("GET", "/groups", Value::Null).0, 200);
    t2.fake.revoke_tokens();
    assert_eq!(t2.call("GET", "/groups", Value::Null).0, 401);
}

#[test]
fn create_list_get_patch_post_delete() {
    let t = T::new();
    let ana = t.fake.add_user("ana@example.com");
    let bo = t.fake.add_user("bo@example.com");
    let cy = t.fake.add_user("cy@example.com");
    assert_eq!(ana.len(), 32);
    assert_eq!(t.fake.add_user("ana@example.com"), ana);

    let (s, v) = t.call(
        "PUT",
        "/groups",
        json!({"data": {"name": "Tier 1", "endpoints": {
            ana.clone(): {"type": "user"}, bo.clone(): {"type": "user"}}}}),
    );
    assert_eq!(s, 201, "{v}");
    let gid = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["endpoints"][&ana]["type"], "user");
    assert_eq!(v["status"], "success");
    assert!(v["revision"].is_string() && v["request_id"].is_string());

    let (s, v) = t.call("GET", "/groups", Value::Null);
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["endpoints"], 2);
    assert_eq!(v["data"][0]["name"], "Tier 1");

    t.fake.add_device_by_hand("Tier 1", "dev42");
    let (s, v) = t.call(
        "PATCH",
        &format!("/groups/{gid}"),
        json!({"data": {"name": "Tier One",
            "endpoints": {cy.clone(): {"type": "user"}, bo.clone(): null}}}),
    );
    assert_eq!(s, 200, "{v}");
    let want: BTreeSet<String> = ["ana@example.com", "cy@example.com", "device:dev42"]
        .map(String::from)
        .into();
    assert_eq!(t.fake.groups().get("Tier One"), Some(&want));
    assert_eq!(t.fake.groups().len(), 1);

    let (s, v) = t.call("GET", &format!("/groups/{gid}"), Value::Null);
    assert_eq!(s, 200);
    assert_eq!(v["data"]["endpoints"]["dev42"]["type"], "device");

    let (s, _) = t.call(
        "POST",
        &format!("/groups/{gid}"),
        json!({"data": {"name": "Tier One", "endpoints": {bo.clone(): {"type": "user"}}}}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        t.fake.groups()["Tier One"],
        ["bo@example.com".to_string()].into()
    );

    let (s, v) = t.call("DELETE", &format!("/groups/{gid}"), Value::Null);
    assert_eq!(s, 200);
    assert_eq!(v["data"]["id"], json!(gid));
    assert_eq!(v["data"]["name"], "Tier One");
    let (s, v) = t.call("GET", &format!("/groups/{gid}"), Value::Null);
    assert_eq!(s, 404);
    assert_eq!(v["message"], "bad_identifier");
    assert_eq!(v["status"], "error");
    assert_eq!(
        t.call("PATCH", &format!("/groups/{gid}"), json!({"data": {}}))
            .0,
        404
    );
}

#[test]
fn validation_errors() {
    let t = T::new();
    let ana = t.fake.add_user("ana@example.com");
    let stranger = "f".repeat(32);
    let cases = [
        json!({"data": {"endpoints": {}}}),
        json!({"data": {"name": "", "endpoints": {}}}),
        json!({"data": {"name": "x".repeat(129), "endpoints": {}}}),
        json!({"data": {"name": "G"}}),
        json!({"data": {"name": "G", "endpoints": {stranger.clone(): {"type": "user"}}}}),
        json!({"data": {"name": "G", "endpoints": {ana.clone(): true}}}),
        json!({"data": {"name": "G", "endpoints": {ana.clone(): {"type": "queue"}}}}),
        json!({"name": "G", "endpoints": {}}),
    ];
    for body in cases {
        let (s, v) = t.call("PUT", "/groups", body.clone());
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"], "400");
    }
    let r = t.fake.server.handler.handle(&Req {
        body: "{not json".into(),
        ..req(
            "PUT",
            &format!("/v2/accounts/{}/groups", t.fake.account_id()),
            Some(&t.token),
            Value::Null,
        )
    });
    assert_eq!(r.status, 400);
    assert!(t.fake.groups().is_empty());

    // Names of 128 chars are fine, devices need no directory entry.
    let (s, _) = t.call(
        "PUT",
        "/groups",
        json!({"data": {
            "name": "x".repeat(128),
            "endpoints": {"anydevice": {"type": "device"}},
        }}),
    );
    assert_eq!(s, 201);
    let gid = t.fake.group_id(&"x".repeat(128)).unwrap();
    let (s, _) = t.call(
        "PATCH",
        &format!("/groups/{gid}"),
        json!({"data": {"endpoints": {stranger.clone(): {"type": "user"}}}}),
    );
    assert_eq!(s, 400);
    let (s, _) = t.call(
        "PATCH",
        &format!("/groups/{gid}"),
        json!({"data": {"endpoints": null}}),
    );
    assert_eq!(s, 400, "endpoints is required");
    assert_eq!(
        t.fake.groups()[&"x".repeat(128)],
        ["device:anydevice".to_string()].into()
    );
}

#[test]
fn conflicts_refuse_without_applying() {
    let t = T::new();
    let ana = t.fake.add_user("ana@example.com");
    t.fake.create_group_by_hand("G", &[]);
    let gid = t.fake.group_id("G").unwrap();
    t.fake.conflict_next(2);
    let patch = json!({"data": {"endpoints": {ana.clone(): {"type": "user"}}}});
    for _ in 0..2 {
        let (s, v) = t.call("PATCH", &format!("/groups/{gid}"), patch.clone());
        assert_eq!(s, 409);
        assert_eq!(v["message"], "datastore_conflict");
        assert_eq!(v["error"], "409");
        assert!(t.fake.groups()["G"].is_empty());
    }
    assert_eq!(t.call("PATCH", &format!("/groups/{gid}"), patch).0, 200);
    assert_eq!(t.fake.groups()["G"], ["ana@example.com".to_string()].into());
}

#[test]
fn users_filter_and_paging() {
    let t = T::new();
    let mut ids: Vec<String> = (0..5)
        .map(|i| t.fake.add_user(&format!("u{i}@example.com")))
        .collect();
    ids.sort();
    let (s, v) = t.call("GET", "/users?filter_email=u3%40example.com", Value::Null);
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["email"], "u3@example.com");
    assert_eq!(v["data"][0]["id"], json!(t.fake.add_user("u3@example.com")));
    assert!(v.get("next_start_key").is_none());
    let (_, v) = t.call("GET", "/users?filter_email=U3@example.com", Value::Null);
    assert!(
        v["data"].as_array().unwrap().is_empty(),
        "exact match, like Crossbar"
    );

    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let q = match &next {
            Some(k) => format!("/users?page_size=2&start_key={k}"),
            None => "/users?page_size=2".to_string(),
        };
        let (s, v) = t.call("GET", &q, Value::Null);
        assert_eq!(s, 200);
        assert!(v["data"].as_array().unwrap().len() <= 2);
        seen.extend(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_string()),
        );
        next = v["next_start_key"].as_str().map(String::from);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(t.call("GET", "/users?page_size=0", Value::Null).0, 400);

    // Default page size applies to group listings too.
    t.fake.set_default_page_size(2);
    for i in 0..3 {
        t.fake.create_group_by_hand(&format!("G{i}"), &[]);
    }
    let (_, v) = t.call("GET", "/groups", Value::Null);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["next_start_key"].is_string());
    let (_, v) = t.call("GET", "/groups?filter_name=G1", Value::Null);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[test]
fn fake_trait_surface() {
    let fake = FakeKazoo::start();
    assert_eq!(fake.kind(), "kazoo");
    assert_eq!(fake.source_id("a@example.com"), None);
    let toml = fake.target_toml("kz");
    assert!(toml.contains("kind = \"kazoo\""));
    assert!(toml.contains(&format!("account_id = \"{}\"", fake.account_id())));
    assert!(toml.contains(&format!("base_url = \"http://127.0.0.1:{}\"", fake.port())));
    let (k, v) = fake.env().remove(0);
    assert!(toml.contains(&k));
    assert!(fake.secrets().contains(&v));
    assert!(v.contains(&format!("s3cret-kazoo-{}", fake.port())));

    fake.create_group_by_hand("A", &["x@example.com", "device:d1", "rawid"]);
    let want: BTreeSet<String> = ["x@example.com", "device:d1", "rawid"]
        .map(String::from)
        .into();
    assert_eq!(fake.groups()["A"], want);
    fake.set_members_by_hand("A", &["y@example.com"]);
    assert_eq!(fake.groups()["A"], ["y@example.com".to_string()].into());
    fake.create_group_by_hand("A", &[]);
    assert_eq!(fake.group_names(), vec!["A", "A"]);
    fake.delete_group_by_hand("A");
    assert!(fake.groups().is_empty());

    let with_ids = FakeKazoo::start_with_ids_in_source();
    let id = with_ids.add_user("z@example.com");
    assert_eq!(with_ids.source_id("z@example.com"), Some(id));
    assert_ne!(with_ids.account_id(), fake.account_id());
}

/// A minimal HTTP/1.1 client over std, so the test needs no extra crates.
fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    s.write_all(out.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn round_trip_over_http() {
    let fake = FakeKazoo::start();
    let ana = fake.add_user("ana@example.com");
    let addr = fake.server.addr;
    let (s, v) = http(
        addr,
        "PUT",
        "/v2/api_auth",
        &[("content-type", "application/json")],
        &json!({"data": {"api_key": fake.api_key()}}).to_string(),
    );
    assert_eq!(s, 201);
    let token = v["auth_token"].as_str().unwrap().to_string();
    let acct = fake.account_id();
    let hdrs = [
        ("content-type", "application/json"),
        ("x-auth-token", token.as_str()),
    ];
    let (s, v) = http(
        addr,
        "GET",
        &format!("/v2/accounts/{acct}/users?filter_email=ana%40example.com"),
        &hdrs,
        "",
    );
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["id"], json!(ana));
    let body = json!({"data": {"name": "Tier 1", "endpoints": {ana.clone(): {"type": "user"}}}});
    let (s, v) = http(
        addr,
        "PUT",
        &format!("/v2/accounts/{acct}/groups"),
        &hdrs,
        &body.to_string(),
    );
    assert_eq!(s, 201);
    let gid = v["data"]["id"].as_str().unwrap().to_string();

    fake.inject(fake.membership_write(), Fault::status(503), 1);
    let patch = json!({"data": {"endpoints": {ana.clone(): null}}}).to_string();
    let path = format!("/v2/accounts/{acct}/groups/{gid}");
    assert_eq!(http(addr, "PATCH", &path, &hdrs, &patch).0, 503);
    assert_eq!(
        fake.groups()["Tier 1"],
        ["ana@example.com".to_string()].into()
    );
    assert_eq!(http(addr, "PATCH", &path, &hdrs, &patch).0, 200);
    assert!(fake.groups()["Tier 1"].is_empty());

    let log = fake.requests();
    assert_eq!(log.len(), 5);
    assert!(
        log.iter()
            .filter(|l| l.method == "PATCH")
            .all(|l| l.path.contains("/groups/"))
    );
    assert_eq!(log.last().unwrap().status, 200);
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}
