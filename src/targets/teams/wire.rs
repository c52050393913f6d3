//! Teams API wire types (seed 001) and the pure lowering of changes into request bodies
//! (no IO).
//!
//! Every answer wraps its payload in `{"data": ...}`; list answers may carry
//! `{"meta": {"next": ...}}` while more pages remain. Decoding is lenient: unknown fields are
//! ignored, ids may come as strings or numbers, a list item may be a bare id.

use serde_json::{Value, json};

use crate::plan::Member;

/// A team as `GET /teams` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
}

/// The body of `POST /teams`.
pub fn create_body(name: &str) -> Value {
    json!({ "name": name })
}

/// The body of `PATCH /teams/{id}/agents` (additions) and `DELETE /teams/{id}/agents`
/// (removals): the same shape.
pub fn agents_body(members: &[Member]) -> Value {
    json!({ "agentIds": members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>() })
}

/// An id given as a string or a number.
fn id_value(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The id in a create answer: `data.id` (or a bare `id`, leniently).
pub fn created_id(v: &Value) -> Option<String> {
    id_value(v.get("data").and_then(|d| d.get("id"))).or_else(|| id_value(v.get("id")))
}

/// The items of a list answer: `data` as an array (or a bare array).
fn items(v: &Value) -> &[Value] {
    v.get("data")
        .unwrap_or(v)
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Teams of a `GET /teams` page.
pub fn teams(v: &Value) -> Vec<Team> {
    items(v)
        .iter()
        .filter_map(|t| {
            Some(Team {
                id: id_value(t.get("id"))?,
                name: t
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect()
}

/// Agent ids of a `GET /teams/{id}/agents` page: `{id, ...}` objects or bare ids.
pub fn agent_ids(v: &Value) -> Vec<String> {
    items(v)
        .iter()
        .filter_map(|a| match a {
            Value::Object(_) => id_value(a.get("id")),
            other => id_value(Some(other)),
        })
        .collect()
}

/// The id of the agent with this email on a `GET /agents?email=E` page. An item without an
/// `email` field is taken only when it is the page's only item and no page follows (the
/// server filtered for us); otherwise the email must match, case-insensitively.
pub fn agent_with_email(v: &Value, email: &str) -> Option<String> {
    let list = items(v);
    let matching = list.iter().find(|a| {
        a.get("email")
            .and_then(Value::as_str)
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(email))
    });
    match matching {
        Some(a) => id_value(a.get("id")),
        None if list.len() == 1 && list[0].get("email").is_none() && next_page(v).is_none() => {
            id_value(list[0].get("id"))
        }
        None => None,
    }
}

/// `meta.next` of a list answer, when another page follows.
pub fn next_page(v: &Value) -> Option<String> {
    let next = v.get("meta")?.get("next")?.as_str()?.trim();
    (!next.is_empty()).then(|| next.to_string())
}

/// The absolute URL of the next page: `next` (a path, a relative reference or an absolute
/// URL) resolved against the page just read. None when it leaves the base URL's origin (the
/// API key must never be sent elsewhere) or points back at the same page.
pub fn next_url(base: &str, current: &str, next: &str) -> Option<String> {
    let base = url::Url::parse(base).ok()?;
    let cur = url::Url::parse(current).ok()?;
    let joined = cur.join(next).ok()?;
    let same_origin = joined.origin() == base.origin();
    (same_origin && joined != cur).then(|| joined.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> Member {
        Member {
            id: id.into(),
            email: None,
        }
    }

    #[test]
    fn request_bodies() {
        assert_eq!(create_body("Team A"), json!({ "name": "Team A" }));
        assert_eq!(
            agents_body(&[m("u1"), m("u2")]),
            json!({ "agentIds": ["u1", "u2"] })
        );
        assert_eq!(agents_body(&[]), json!({ "agentIds": [] }));
    }

    #[test]
    fn create_answer() {
        let seed =
            json!({ "data": { "id": "005e7108-c85c-41d1-a945-4a8dc58c4399", "name": "Team A" } });
        assert_eq!(
            created_id(&seed).as_deref(),
            Some("005e7108-c85c-41d1-a945-4a8dc58c4399")
        );
        assert_eq!(created_id(&json!({ "id": 7 })).as_deref(), Some("7"));
        assert_eq!(created_id(&json!({ "data": { "id": "" } })), None);
        assert_eq!(created_id(&Value::Null), None);
    }

    #[test]
    fn listings_are_decoded_leniently() {
        let v = json!({ "data": [
            { "id": "t1", "name": "Team A", "extra": true },
            { "id": 2, "name": "Team B" },
            { "name": "no id" },
            { "id": "t3" },
        ]});
        let want = [("t1", "Team A"), ("2", "Team B"), ("t3", "")];
        let got: Vec<(String, String)> = teams(&v).into_iter().map(|t| (t.id, t.name)).collect();
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert!(teams(&json!({ "message": "x" })).is_empty());

        let a = json!({ "data": [{ "id": "a1", "name": "Agent A", "email": "aa@example.org" }, "a2", 3, null, {}] });
        assert_eq!(agent_ids(&a), ["a1", "a2", "3"]);
        assert_eq!(agent_ids(&json!(["x"])), ["x"]);
    }

    #[test]
    fn agent_by_email() {
        let page = json!({ "data": [
            { "id": "a1", "email": "aa@example.org" },
            { "id": "a2", "email": " AB@Example.org " },
        ]});
        assert_eq!(
            agent_with_email(&page, "ab@example.org").as_deref(),
            Some("a2")
        );
        assert_eq!(agent_with_email(&page, "zz@example.org"), None);
        // A server that filtered and omits the email field: its only item.
        let bare = json!({ "data": [{ "id": "a9" }] });
        assert_eq!(
            agent_with_email(&bare, "x@example.org").as_deref(),
            Some("a9")
        );
        let paged = json!({ "data": [{ "id": "a9" }], "meta": { "next": "/v1/agents?pageKey=k" } });
        assert_eq!(agent_with_email(&paged, "x@example.org"), None);
        assert_eq!(
            agent_with_email(&json!({ "data": [] }), "x@example.org"),
            None
        );
    }

    #[test]
    fn paging_stays_on_the_base_origin() {
        let base = "https://dev.dixa.io/v1";
        let cur = "https://dev.dixa.io/v1/agents?email=a%40b.c";
        let v =
            json!({ "data": [], "meta": { "next": "/v1/agents?pageKey=YWI%3D&email=a%40b.c" } });
        let next = next_page(&v).unwrap();
        assert_eq!(
            next_url(base, cur, &next).as_deref(),
            Some("https://dev.dixa.io/v1/agents?pageKey=YWI%3D&email=a%40b.c")
        );
        assert_eq!(
            next_url(base, cur, "?pageKey=k").as_deref(),
            Some("https://dev.dixa.io/v1/agents?pageKey=k")
        );
        assert_eq!(
            next_url(base, cur, "https://dev.dixa.io/v1/agents?pageKey=k").as_deref(),
            Some("https://dev.dixa.io/v1/agents?pageKey=k")
        );
        assert_eq!(
            next_url(base, cur, "https://evil.example/v1/agents?pageKey=k"),
            None,
            "the key stays home"
        );
        assert_eq!(
            next_url(base, cur, "http://dev.dixa.io/v1/agents"),
            None,
            "no downgrade"
        );
        assert_eq!(next_url(base, cur, cur), None, "no loop");
        assert_eq!(next_page(&json!({ "meta": { "next": "" } })), None);
        assert_eq!(next_page(&json!({ "meta": { "next": null } })), None);
        assert_eq!(next_page(&json!({ "data": [] })), None);
    }
}
