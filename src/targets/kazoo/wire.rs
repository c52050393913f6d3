//! Kazoo Crossbar wire format (seed 003) and the pure lowering of changes into request
//! bodies (no IO).
//!
//! Every request body is an envelope `{"data": {...}}`; every answer is an envelope
//! `{"data", "status", "auth_token", "request_id", ...}`. Errors carry `status: "error"`,
//! `error` (the code as a string), `message`, and details in `data`. Answers echo the
//! session token in `auth_token`, so an answer body is never logged or stored: only the
//! pieces extracted here leave this module.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::plan::Member;
use crate::targets::decode::{self, NotUnderstood};
use crate::targets::{RemoteGroup, Verdict};

/// The endpoint type of a person; `device` endpoints are never rostersync's.
pub const USER: &str = "user";

/// Wraps request data in Crossbar's envelope.
pub fn envelope(data: Value) -> Value {
    json!({ "data": data })
}

/// The body of `PUT /v2/api_auth`.
pub fn auth_body(api_key: &str) -> Value {
    envelope(json!({ "api_key": api_key }))
}

/// The session token of an `api_auth` answer: the envelope's `auth_token` (or, leniently,
/// `data.auth_token`).
pub fn auth_token(v: &Value) -> Option<String> {
    [v.get("auth_token"), data(v).get("auth_token")]
        .into_iter()
        .flatten()
        .find_map(|t| t.as_str().filter(|t| !t.is_empty()).map(str::to_string))
}

/// One user endpoint entry.
fn user_entry() -> Value {
    json!({ "type": USER })
}

/// The body of `PUT /v2/accounts/{account}/groups`: the name and the whole endpoints map.
pub fn create_body(name: &str, members: &[Member]) -> Value {
    let endpoints: Map<String, Value> = members
        .iter()
        .map(|m| (m.id.clone(), user_entry()))
        .collect();
    envelope(json!({ "name": name, "endpoints": endpoints }))
}

/// The body of the one `PATCH /v2/accounts/{account}/groups/{id}` of an update. Crossbar
/// merges PATCH bodies recursively and a `null` deletes a key, so additions are entries and
/// removals are `null` entries of one `endpoints` object, and a rename rides along.
/// None when there is nothing to send.
pub fn patch_body(rename: Option<&str>, add: &[Member], remove: &[Member]) -> Option<Value> {
    let mut data = Map::new();
    if let Some(name) = rename {
        data.insert("name".into(), Value::String(name.to_string()));
    }
    let mut endpoints = Map::new();
    // Removals first, so an id both removed and added (never planned) ends up added.
    for m in remove {
        endpoints.insert(m.id.clone(), Value::Null);
    }
    for m in add {
        endpoints.insert(m.id.clone(), user_entry());
    }
    if !endpoints.is_empty() {
        data.insert("endpoints".into(), Value::Object(endpoints));
    }
    (!data.is_empty()).then(|| envelope(Value::Object(data)))
}

/// The `data` of an answer envelope (`null` when absent).
pub fn data(v: &Value) -> &Value {
    v.get("data").unwrap_or(&Value::Null)
}

/// An answer envelope `{"data": T, ...}` (the token it echoes is never kept).
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    data: T,
}

/// A listing answer: `{"data": [...], "next_start_key": ...}` (the key only while more pages
/// remain). `{"data": []}` is a real empty listing.
#[derive(Debug, Deserialize)]
struct ListAnswer<T> {
    data: Vec<T>,
    #[serde(default)]
    next_start_key: Option<Value>,
}

/// A group row of `GET .../groups` (its `endpoints` is only a count).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct GroupRow {
    #[serde(deserialize_with = "decode::de_id")]
    pub id: String,
    pub name: String,
}

/// A group document (a read answer's `data`): the `endpoints` map is required (seed 003).
#[derive(Clone, Debug, Deserialize)]
pub struct GroupDoc {
    #[serde(deserialize_with = "decode::de_id")]
    pub id: String,
    pub name: String,
    pub endpoints: Map<String, Value>,
}

impl GroupDoc {
    /// The group as rostersync sees it: only `user` endpoints are members. Devices (and any
    /// other type) are not members in rostersync's view and are never touched. An endpoint
    /// without a string `type` (seed 003 gives every endpoint one) is not understood: it
    /// could be a user, and reading it as "not a member" could put it back or remove it.
    pub fn remote(&self) -> Result<RemoteGroup, NotUnderstood> {
        let mut members = Vec::new();
        for (id, ep) in &self.endpoints {
            match ep.get("type").and_then(Value::as_str) {
                Some(t) if t.eq_ignore_ascii_case(USER) => members.push(id.clone()),
                Some(_) => {}
                None => {
                    return Err(NotUnderstood {
                        what: format!("the group {}", self.id),
                        seen: format!(
                            "endpoint {id:?} is {} (expected {{\"type\": \"user\" | \"device\" | ...}})",
                            decode::describe(ep)
                        ),
                    });
                }
            }
        }
        Ok(RemoteGroup {
            id: self.id.clone(),
            name: self.name.clone(),
            members,
            ..Default::default()
        })
    }
}

/// A user row of `GET .../users?filter_email=E`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct UserRow {
    #[serde(deserialize_with = "decode::de_id")]
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// The rows of a listing page and the `start_key` of the next page, as a query value:
/// Crossbar's `next_start_key` is a string, or a JSON value for views with complex keys.
pub fn page<T: DeserializeOwned>(
    what: &str,
    body: &[u8],
) -> Result<(Vec<T>, Option<String>), NotUnderstood> {
    let l: ListAnswer<T> = decode::answer(what, "{\"data\": [...]}", body)?;
    let next = match l.next_start_key {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok((l.data, next))
}

/// The group document of a read answer.
pub fn group(what: &str, body: &[u8]) -> Result<GroupDoc, NotUnderstood> {
    let e: Envelope<GroupDoc> =
        decode::answer(what, "{\"data\": {\"id\", \"name\", \"endpoints\"}}", body)?;
    Ok(e.data)
}

/// The email of a user document (`GET .../users/{id}`): `data.email`, else `data.username`
/// when it is an email; None when it has neither.
pub fn user_email(body: &[u8]) -> Result<Option<String>, NotUnderstood> {
    let e: Envelope<UserRow> = decode::answer("the user", "{\"data\": {\"id\", \"email\"}}", body)?;
    let is_email = |s: &String| s.contains('@');
    Ok(e.data
        .email
        .filter(is_email)
        .or(e.data.username.filter(is_email)))
}

/// The id of a create answer (`data.id`).
pub fn created_id(body: &[u8]) -> Result<String, NotUnderstood> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(deserialize_with = "decode::de_id")]
        id: String,
    }
    let e: Envelope<Created> =
        decode::answer("the create answer", "{\"data\": {\"id\": ...}}", body)?;
    Ok(e.data.id)
}

/// The id of the user with this email among listing rows (compared case-insensitively,
/// `email` first, then `username`), in case the server ignored the filter.
pub fn user_with_email(rows: &[UserRow], email: &str) -> Option<String> {
    let has = |f: &Option<String>| {
        f.as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(email))
    };
    rows.iter()
        .find(|u| has(&u.email))
        .or_else(|| rows.iter().find(|u| has(&u.username)))
        .map(|u| u.id.clone())
}

/// A short message from a Crossbar error body: `message`, then the details in `data`
/// (`data.message`/`cause`, or validation errors `{field: {rule: {message}}}`). Never the
/// whole body (it echoes the token).
pub fn error_message(status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = v
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        parts.push(m.to_string());
    } else if let Some(e) = v
        .get("error")
        .and_then(Value::as_str)
        .filter(|e| *e != status.to_string())
    {
        parts.push(e.to_string());
    }
    let d = data(&v);
    let detail = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .or_else(|| x.is_number().then(|| x.to_string()))
    };
    match (
        d.get("message").and_then(detail),
        d.get("cause").and_then(detail),
    ) {
        (Some(m), Some(c)) => parts.push(format!("{m}: {c}")),
        (Some(m), None) => parts.push(m),
        (None, Some(c)) => parts.push(c),
        (None, None) => {
            if let Some(fields) = d.as_object() {
                for (field, rules) in fields.iter().take(3) {
                    let msg = rules
                        .as_object()
                        .and_then(|r| {
                            r.values()
                                .find_map(|r| r.get("message").and_then(Value::as_str))
                        })
                        .or_else(|| rules.as_str());
                    if let Some(msg) = msg {
                        parts.push(format!("{field}: {msg}"));
                    }
                }
            }
        }
    }
    if parts.is_empty() {
        // Not Crossbar's JSON (a proxy's page): the start of the text.
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if !text.is_empty() && !text.starts_with('{') {
            parts.push(text.to_string());
        }
    }
    let mut text: String = parts.join("; ").chars().take(300).collect();
    if text.is_empty() {
        text = "no message".into();
    }
    format!("HTTP {status}: {text}")
}

/// How a Crossbar answer reads: 2xx ok, 401 re-authenticate, 404 gone, 409
/// `datastore_conflict` (the document changed under the write) and 408/429/5xx retried,
/// any other 4xx final.
pub fn verdict(status: u16, body: &[u8]) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        401 => Verdict::Unauthorized(error_message(status, body)),
        404 => Verdict::NotFound(error_message(status, body)),
        409 if is_datastore_conflict(body) => Verdict::Retry(error_message(status, body)),
        408 | 429 | 500..=599 => Verdict::Retry(error_message(status, body)),
        _ => Verdict::Fail(error_message(status, body)),
    }
}

fn is_datastore_conflict(body: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // An empty 409 (a proxy) is a conflict too: retrying a merge PATCH is safe.
    v.is_null()
        || ["message", "error"].iter().any(|k| {
            v.get(k)
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("conflict"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::targets::test_member as m;

    #[test]
    fn create_sends_the_whole_endpoints_map_in_an_envelope() {
        let b = create_body("Tier 1", &[m("u1"), m("u2")]);
        assert_eq!(
            b,
            json!({"data": {"name": "Tier 1", "endpoints": {"u1": {"type": "user"}, "u2": {"type": "user"}}}})
        );
        assert_eq!(
            create_body("Empty", &[]),
            json!({"data": {"name": "Empty", "endpoints": {}}})
        );
        assert_eq!(auth_body("k"), json!({"data": {"api_key": "k"}}));
    }

    #[test]
    fn one_patch_carries_additions_null_removals_and_the_rename() {
        let b = patch_body(Some("Tier One"), &[m("a"), m("b")], &[m("c")]).unwrap();
        assert_eq!(
            b,
            json!({"data": {"name": "Tier One", "endpoints": {
                "a": {"type": "user"}, "b": {"type": "user"}, "c": null}}})
        );
        assert_eq!(
            patch_body(None, &[], &[m("c")]).unwrap(),
            json!({"data": {"endpoints": {"c": null}}})
        );
        assert_eq!(
            patch_body(Some("N"), &[], &[]).unwrap(),
            json!({"data": {"name": "N"}})
        );
        assert_eq!(patch_body(None, &[], &[]), None);
    }

    fn b(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn only_user_endpoints_are_members() {
        let doc = json!({"id": "g1", "name": "G", "endpoints": {
            "u1": {"type": "user", "weight": 1}, "d1": {"type": "device"}, "u2": {"type": "User"}}});
        let g = group("g", &b(json!({"data": doc, "auth_token": "T"})))
            .unwrap()
            .remote()
            .unwrap();
        assert_eq!((g.id.as_str(), g.name.as_str()), ("g1", "G"));
        assert_eq!(g.members, ["u1", "u2"]);
        assert_eq!(created_id(&b(json!({"data": {"id": 7}}))).unwrap(), "7");
        // Issue 17 item 6: an endpoint without a string `type` is not understood (it could
        // be a user), never silently "not a member".
        for odd in [json!(true), json!({}), json!({"type": 1}), json!(null)] {
            let doc =
                json!({"id": "g1", "name": "G", "endpoints": {"u1": {"type": "user"}, "x": odd}});
            let g = group("g", &b(json!({ "data": doc }))).unwrap();
            let e = g.remote().unwrap_err().to_string();
            assert!(e.contains("endpoint \"x\""), "{e}");
        }
        // Without its id or its endpoints map, a group document is not understood.
        for bad in [
            json!({"data": {"name": "no id", "endpoints": {}}}),
            json!({"data": {"id": "g1", "name": "G"}}),
            json!({"data": {"id": "g1", "name": "G", "endpoints": 2}}),
            json!({"id": "g1", "name": "G", "endpoints": {}}),
            json!({"data": null}),
        ] {
            assert!(group("g", &b(bad.clone())).is_err(), "{bad}");
        }
        let e = group(
            "the group",
            &b(json!({"data": {"id": "g1"}, "auth_token": "SECRET"})),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("keys: auth_token, data") && !e.contains("SECRET"),
            "{e}"
        );
        assert!(created_id(&b(json!({"data": {"id": ""}}))).is_err());
    }

    #[test]
    fn tokens_and_paging_keys() {
        assert_eq!(
            auth_token(&json!({"auth_token": "t", "data": {}})).as_deref(),
            Some("t")
        );
        assert_eq!(
            auth_token(&json!({"data": {"auth_token": "t2"}})).as_deref(),
            Some("t2")
        );
        assert_eq!(auth_token(&json!({"auth_token": "", "data": {}})), None);
        let next = |v: Value| page::<GroupRow>("l", &b(v)).unwrap().1;
        assert_eq!(
            next(json!({"data": [], "next_start_key": "abc"})).as_deref(),
            Some("abc")
        );
        assert_eq!(
            next(json!({"data": [], "next_start_key": ["g", 2]})).as_deref(),
            Some("[\"g\",2]")
        );
        assert_eq!(next(json!({"data": []})), None);
        assert_eq!(next(json!({"data": [], "next_start_key": null})), None);
        let (rows, _) = page::<GroupRow>(
            "l",
            &b(json!({"data": [{"id": "1", "name": "A", "endpoints": 2}, {"id": 2, "name": "B"}]})),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        for bad in [
            json!({"data": {}}),
            json!({"rows": []}),
            json!({"data": [{"name": "no id"}]}),
            json!({"data": [{"id": "1"}]}),
        ] {
            assert!(page::<GroupRow>("l", &b(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_match_by_email_case_insensitively() {
        let (rows, _) = page::<UserRow>(
            "l",
            &b(json!({"data": [
                {"id": "1", "email": "other@x.com", "username": "ana@x.com"},
                {"id": "2", "email": "Ana@X.com"},
            ]})),
        )
        .unwrap();
        assert_eq!(user_with_email(&rows, "ana@x.com").as_deref(), Some("2"));
        assert_eq!(
            user_with_email(&rows[..1], "ana@x.com").as_deref(),
            Some("1")
        );
        assert_eq!(user_with_email(&rows, "bo@x.com"), None);
    }

    #[test]
    fn errors_and_verdicts() {
        let conflict = br#"{"status":"error","error":"409","message":"datastore_conflict","data":{},"auth_token":"SECRET"}"#;
        assert_eq!(
            verdict(409, conflict),
            Verdict::Retry("HTTP 409: datastore_conflict".into())
        );
        let other = br#"{"status":"error","error":"409","message":"unique"}"#;
        assert!(matches!(verdict(409, other), Verdict::Fail(_)));
        let invalid = br#"{"status":"error","error":"400","message":"validation error","auth_token":"SECRET",
            "data":{"endpoints.u9":{"not_found":{"message":"user u9 does not exist in this account"}}}}"#;
        let msg = error_message(400, invalid);
        assert_eq!(
            msg,
            "HTTP 400: validation error; endpoints.u9: user u9 does not exist in this account"
        );
        assert!(!msg.contains("SECRET"));
        let gone = br#"{"error":"404","message":"bad_identifier","data":{"message":"bad identifier","cause":"g1"}}"#;
        assert_eq!(
            verdict(404, gone),
            Verdict::NotFound("HTTP 404: bad_identifier; bad identifier: g1".into())
        );
        assert!(matches!(
            verdict(401, br#"{"message":"invalid_credentials"}"#),
            Verdict::Unauthorized(_)
        ));
        assert!(
            matches!(verdict(503, b"<html>down</html>"), Verdict::Retry(m) if m == "HTTP 503: <html>down</html>")
        );
        assert_eq!(verdict(201, b"{}"), Verdict::Ok);
        assert_eq!(error_message(500, b""), "HTTP 500: no message");
    }
}
