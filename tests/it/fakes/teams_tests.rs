//! Unit tests of the teams fake: its vendor rules, called directly and over HTTP.

use super::*;
use serde_json::{Value, json};
use std::io::{Read, Write};

const KEY: &str = "test-key-123";

fn req(method: &str, target: &str, body: Option<Value>) -> Req {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = vec![("authorization".to_string(), KEY.to_string())];
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    Req {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: body.map(|b| b.to_string()).unwrap_or_default(),
    }
}

fn handler() -> TeamsHandler {
    let h = TeamsHandler::new(KEY);
    h.state().limit = None;
    h
}

fn call(h: &TeamsHandler, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
    let r = h.handle(&req(method, target, body));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn create(h: &TeamsHandler, name: &str) -> String {
    let (s, v) = call(h, "POST", "/v1/teams", Some(json!({ "name": name })));
    assert_eq!(s, 201, "{v}");
    v["data"]["id"].as_str().unwrap().to_string()
}

#[test]
fn auth_is_the_raw_key() {
    let h = handler();
    let mut r = req("GET", "/v1/teams", None);
    assert_eq!(h.handle(&r).status, 200);
    r.headers[0].1 = format!("Bearer {KEY}");
    let rep = h.handle(&r);
    assert_eq!(
        (rep.status, rep.body.as_str()),
        (401, r#"{"message":"Unauthorized"}"#)
    );
    r.headers.clear();
    assert_eq!(h.handle(&r).status, 401);
    assert_eq!(
        TeamsHandler::without_token()
            .handle(&req("GET", "/v1/teams", None))
            .status,
        401
    );
}

#[test]
fn team_lifecycle() {
    let h = handler();
    let a = create(&h, "Tier 1");
    let b = create(&h, "Tier 2");
    assert!(is_uuid(&a) && is_uuid(&b) && a != b);
    let (s, v) = call(&h, "GET", "/v1/teams", None);
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"data": [{"id": a, "name": "Tier 1"}, {"id": b, "name": "Tier 2"}]})
    );
    let (s, v) = call(&h, "GET", &format!("/v1/teams/{}", a.to_uppercase()), None);
    assert_eq!((s, v), (200, json!({"data": {"id": a, "name": "Tier 1"}})));
    let r = h.handle(&req("DELETE", &format!("/v1/teams/{a}"), None));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    for (m, p) in [("GET", ""), ("DELETE", ""), ("GET", "/agents")] {
        let (s, v) = call(&h, m, &format!("/v1/teams/{a}{p}"), None);
        assert_eq!((s, v), (404, json!({"message": NOT_FOUND})), "{m} {p}");
    }
    let (s, v) = call(&h, "GET", "/v1/teams/not-a-uuid", None);
    assert_eq!((s, v), (400, json!({"message": BAD_TEAM_ID})));
    // Ids are never reused, duplicate names are allowed.
    let c = create(&h, "Tier 2");
    assert!(c != a && c != b);
}

#[test]
fn create_rejects_bad_bodies() {
    let h = handler();
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": 5}),
        json!(["x"]),
    ] {
        let (s, v) = call(&h, "POST", "/v1/teams", Some(body));
        assert_eq!((s, v), (400, json!({"message": BAD_BODY})));
    }
    let mut r = req("POST", "/v1/teams", Some(json!({})));
    r.body = "{\"name\": ".into();
    assert_eq!(h.handle(&r).status, 400);
    r.body = json!({"name": "x"}).to_string();
    r.headers.retain(|(k, _)| k != "content-type");
    assert_eq!(h.handle(&r).status, 415);
    assert!(h.state().teams.is_empty());
}

#[test]
fn membership_add_remove_list() {
    let h = handler();
    let t = create(&h, "T");
    let (ana, bo) = {
        let mut st = h.state();
        (
            st.add_agent("ana.silva@example.com"),
            st.add_agent("bo@example.com"),
        )
    };
    let path = format!("/v1/teams/{t}/agents");
    let r = h.handle(&req(
        "PATCH",
        &path,
        Some(json!({"agentIds": [ana, bo, ana]})),
    ));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    // Adding again is fine.
    assert_eq!(
        call(&h, "PATCH", &path, Some(json!({"agentIds": [bo]}))).0,
        204
    );
    let (s, v) = call(&h, "GET", &path, None);
    assert_eq!(s, 200);
    let want = json!({"data": [
        {"id": ana, "name": "Ana Silva", "email": "ana.silva@example.com"},
        {"id": bo, "name": "Bo", "email": "bo@example.com"},
    ]});
    assert_eq!(v, want);
    // Unknown or malformed agent ids refuse the whole request.
    let ghost = "a9ffffff-0000-4000-8000-00000000ffff";
    for body in [
        json!({"agentIds": [ghost]}),
        json!({"agentIds": ["x"]}),
        json!({}),
    ] {
        let (s, v) = call(&h, "DELETE", &path, Some(body.clone()));
        assert_eq!((s, v), (400, json!({"message": BAD_BODY})), "{body}");
    }
    let (s, _) = call(&h, "PATCH", &path, Some(json!({"agentIds": [ghost, ana]})));
    assert_eq!(s, 400);
    assert_eq!(h.state().teams[0].members, vec![ana.clone(), bo.clone()]);
    // Removal, also of somebody absent.
    let r = h.handle(&req("DELETE", &path, Some(json!({"agentIds": [ana]}))));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_eq!(
        call(&h, "DELETE", &path, Some(json!({"agentIds": [ana]}))).0,
        204
    );
    assert_eq!(
        call(&h, "GET", &path, None).1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A deleted team answers 404 to membership writes.
    assert_eq!(call(&h, "DELETE", &format!("/v1/teams/{t}"), None).0, 204);
    let (s, v) = call(&h, "PATCH", &path, Some(json!({"agentIds": [bo]})));
    assert_eq!((s, v), (404, json!({"message": NOT_FOUND})));
    h.state().add_status = 200;
    let t2 = create(&h, "T2");
    let p2 = format!("/v1/teams/{t2}/agents");
    assert_eq!(
        call(&h, "PATCH", &p2, Some(json!({"agentIds": [bo]}))).0,
        200
    );
}

#[test]
fn agents_lookup_and_paging() {
    let h = handler();
    let ids: Vec<String> = {
        let mut st = h.state();
        (0..7)
            .map(|i| st.add_agent(&format!("p{i}@example.com")))
            .collect()
    };
    let (s, v) = call(&h, "GET", "/v1/agents?email=P3%40Example.com", None);
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"data": [{"id": ids[3], "name": "P3", "email": "p3@example.com"}]})
    );
    let (s, v) = call(&h, "GET", "/v1/agents?email=nobody%40example.com", None);
    assert_eq!((s, v), (200, json!({"data": []})));
    // Follow meta.next until it is gone.
    let mut seen = Vec::new();
    let mut next = Some("/v1/agents?pageLimit=3".to_string());
    let mut pages = 0;
    while let Some(target) = next.take() {
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        let (s, v) = call(&h, "GET", &target, None);
        assert_eq!(s, 200, "{v}");
        for a in v["data"].as_array().unwrap() {
            seen.push(a["id"].as_str().unwrap().to_string());
        }
        next = v["meta"]["next"].as_str().map(String::from);
    }
    assert_eq!((pages, seen), (3, ids.clone()));
    h.state().agents_page_cap = 5;
    let (_, v) = call(&h, "GET", "/v1/agents?pageLimit=1000", None);
    assert_eq!(v["data"].as_array().unwrap().len(), 5);
    assert!(
        v["meta"]["next"]
            .as_str()
            .unwrap()
            .starts_with("/v1/agents?pageKey=")
    );
    let (s, v) = call(&h, "GET", "/v1/agents?pageKey=bogus", None);
    assert_eq!((s, v), (400, json!({"message": BAD_PAGE_KEY})));
    let (s, v) = call(&h, "GET", "/v1/agents?pageLimit=0", None);
    assert_eq!((s, v), (400, json!({"message": BAD_PAGE_LIMIT})));
}

#[test]
fn page_keys_round_trip() {
    for (o, l) in [(0, 1), (3, 3), (123, 45), (99999, 100)] {
        let k = encode_page_key(o, l);
        assert_eq!(decode_page_key(&k), Some((o, l)), "{k}");
    }
    assert_eq!(b64_encode(b"ab"), "YWI=");
    assert_eq!(b64_decode("YWI="), Some(b"ab".to_vec()));
    assert_eq!(b64_decode("YQ=="), Some(b"a".to_vec()));
    assert_eq!(decode_page_key("YWI="), None);
}

#[test]
fn rate_limit_bucket() {
    let h = TeamsHandler::new(KEY);
    let statuses: Vec<u16> = (0..6)
        .map(|_| call(&h, "GET", "/v1/teams", None).0)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let r = h.handle(&req("GET", "/v1/teams", None));
    assert_eq!(r.status, 429);
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v == "1")
    );
    assert_eq!(h.state().rate_limited, 3);
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert_eq!(call(&h, "GET", "/v1/teams", None).0, 200);
    // Unauthorized requests take no token.
    let mut bad = req("GET", "/v1/teams", None);
    bad.headers.clear();
    assert_eq!(h.handle(&bad).status, 401);
}

/// One HTTP/1.1 exchange over a raw socket: (status, lowercase headers, body).
fn raw(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let msg = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn round_trip_over_http() {
    let f = FakeTeams::start();
    f.set_rate_limit(None);
    let addr = f.server.addr;
    let key = f.token().to_string();
    assert!(f.base_url().ends_with("/v1") && f.base_url().starts_with("http://127.0.0.1:"));
    assert!(
        f.target_toml("dixa")
            .contains(&format!("base_url = \"{}\"", f.base_url()))
    );
    assert_eq!(f.env(), vec![(f.token_env.clone(), key.clone())]);
    let ana = f.add_user("ana@example.com");
    assert_eq!(f.add_user("ANA@example.com"), ana);
    assert_eq!(f.source_id("ana@example.com"), None);
    assert_eq!(f.agent_id("ana@example.com"), Some(ana.clone()));

    let json = "Content-Type: application/json";
    let (s, _, b) = raw(addr, "GET /v1/teams HTTP/1.1\r\nAuthorization: x", "");
    assert_eq!((s, b.as_str()), (401, r#"{"message":"Unauthorized"}"#));
    let head = format!("POST /v1/teams HTTP/1.1\r\nAuthorization: {key}\r\n{json}");
    let (s, _, b) = raw(addr, &head, r#"{"name":"Tier 1"}"#);
    assert_eq!(s, 201, "{b}");
    let id = serde_json::from_str::<Value>(&b).unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(f.team_id("Tier 1"), Some(id.clone()));
    let head = format!("PATCH /v1/teams/{id}/agents HTTP/1.1\r\nAuthorization: {key}\r\n{json}");
    let (s, _, b) = raw(addr, &head, &json!({"agentIds": [ana]}).to_string());
    assert_eq!((s, b.as_str()), (204, ""));
    let email = "/v1/agents?email=ana%40example.com";
    let (s, _, b) = raw(
        addr,
        &format!("GET {email} HTTP/1.1\r\nAuthorization: {key}"),
        "",
    );
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["data"][0]["id"],
        json!(ana)
    );
    let mut want = BTreeMap::new();
    want.insert(
        "Tier 1".to_string(),
        BTreeSet::from(["ana@example.com".to_string()]),
    );
    assert_eq!(f.groups(), want);
    let head = format!("DELETE /v1/teams/{id}/agents HTTP/1.1\r\nAuthorization: {key}\r\n{json}");
    let (s, _, _) = raw(addr, &head, &json!({"agentIds": [ana]}).to_string());
    assert_eq!(s, 204);
    assert!(f.groups()["Tier 1"].is_empty());

    // The limiter over HTTP, and the request log.
    f.set_rate_limit(Some((1, 1)));
    let get = format!("GET /v1/teams HTTP/1.1\r\nAuthorization: {key}");
    assert_eq!(raw(addr, &get, "").0, 200);
    let (s, h, _) = raw(addr, &get, "");
    assert_eq!(s, 429);
    assert!(h.contains("retry-after: 1"), "{h}");
    assert_eq!(f.rate_limited_count(), 1);
    let log = f.requests();
    assert_eq!(log.len(), 7);
    assert_eq!(log[3].path, email);
    assert_eq!(log.last().unwrap().status, 429);
    let creates = log
        .iter()
        .filter(|l| l.method == "POST" && l.path == "/v1/teams")
        .count();
    assert_eq!(creates, 1);
}

#[test]
fn by_hand_and_trait_views() {
    let f = FakeTeams::start_with_ids_in_source();
    let bo = f.add_user("bo@example.com");
    assert_eq!(f.source_id("bo@example.com"), Some(bo.clone()));
    assert_eq!(f.source_id("nobody@example.com"), None);
    f.create_group_by_hand("Sales", &["bo@example.com", "cy@example.com"]);
    f.create_group_by_hand("Sales", &[bo.as_str()]);
    f.create_group_by_hand("Ops", &[]);
    let g = f.groups();
    assert_eq!(g.len(), 3);
    assert_eq!(g["Sales"].len(), 2);
    assert_eq!(
        g["Sales (duplicate 2)"],
        BTreeSet::from(["bo@example.com".to_string()])
    );
    assert!(f.agent_id("cy@example.com").is_some());
    f.set_members_by_hand("Ops", &["dee@example.com"]);
    assert_eq!(f.groups()["Ops"].len(), 1);
    f.delete_group_by_hand("Sales");
    assert_eq!(f.teams().len(), 2);
    assert_eq!(f.groups()["Sales"].len(), 1);
    assert_eq!(f.kind(), "teams");
    assert_eq!(f.secrets(), vec![f.token().to_string()]);
    let m = f.membership_write();
    assert_eq!(
        (m.method.as_str(), m.path_contains.as_str()),
        ("PATCH", "/agents")
    );
    let c = f.create_request();
    assert_eq!(
        (c.method.as_str(), c.path_contains.as_str()),
        ("POST", "/v1/teams")
    );
}
