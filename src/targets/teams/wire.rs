//! Teams API wire types (seed 001) and the pure lowering of changes into request bodies
//! (no IO).
//!
//! Every answer wraps its payload in `{"data": ...}`; list answers may carry
//! `{"meta": {"next": ...}}` while more pages remain. Decoding is lenient (unknown fields are
//! ignored, ids may come as strings or numbers, a member item may be a bare id) but not
//! credulous: an answer without its `data`, or a record without its id, is not understood.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::plan::Member;
use crate::targets::decode::{self, NotUnderstood};

/// A team as `GET /teams` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Team {
    #[serde(deserialize_with = "decode::de_id")]
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

/// A list answer: `{"data": [...], "meta": {"next": ...}}` (`meta` only while more pages
/// remain). `{"data": []}` is a real empty answer; an answer without a `data` array is not
/// understood.
#[derive(Debug, Deserialize)]
struct ListAnswer<T> {
    data: Vec<T>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    next: Option<String>,
}

/// The records of a list answer and its `meta.next` (None on the last page).
pub fn page<T: DeserializeOwned>(
    what: &str,
    body: &[u8],
) -> Result<(Vec<T>, Option<String>), NotUnderstood> {
    let l: ListAnswer<T> = decode::answer(what, "{\"data\": [...]}", body)?;
    let next = l
        .meta
        .and_then(|m| m.next)
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    Ok((l.data, next))
}

/// The id in a create answer: `data.id` (or a bare `id`, leniently).
pub fn created_id(body: &[u8]) -> Result<String, NotUnderstood> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(deserialize_with = "decode::de_id")]
        id: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Answer {
        Data { data: Created },
        Bare(Created),
    }
    let what = "the create answer";
    let v = decode::value(what, body)?;
    match decode::typed::<Answer>(what, "{\"data\": {\"id\": ...}}", &v) {
        Ok(Answer::Data { data: c } | Answer::Bare(c)) => Ok(c.id),
        // Untagged enums say nothing useful: name the keys only.
        Err(_) => Err(NotUnderstood::of(what, &v, "{\"data\": {\"id\": ...}}")),
    }
}

/// A record of a `GET /teams/{id}/presence` page (seed 001): the agent's id and whether
/// they are connected now. Both are required: a record we cannot read could be an agent
/// online now.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Presence {
    #[serde(rename = "userId", deserialize_with = "decode::de_id")]
    pub user_id: String,
    #[serde(rename = "connectionStatus")]
    pub connection_status: String,
}

impl Presence {
    /// `connectionStatus` is `Online` (any case).
    pub fn online(&self) -> bool {
        self.connection_status.trim().eq_ignore_ascii_case("online")
    }
}

/// An agent of a `GET /agents?email=E` page.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Agent {
    #[serde(deserialize_with = "decode::de_id")]
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// An agent of a team's listing (`GET /teams/{id}/agents`): its id, by the one id rule, and
/// its email where the answer shows it (seed 001 shows `email` on every agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamAgent {
    pub id: String,
    pub email: Option<String>,
}

impl<'de> Deserialize<'de> for TeamAgent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TeamAgent, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        let email = v
            .get("email")
            .and_then(serde_json::Value::as_str)
            .filter(|e| e.contains('@'))
            .map(str::to_string);
        let decode::IdRef(id) = decode::IdRef::deserialize(v).map_err(D::Error::custom)?;
        Ok(TeamAgent { id, email })
    }
}

/// The id of the agent with this email among a page's agents. An agent without an `email`
/// field is taken only when it is the page's only agent and no page follows (`more` false:
/// the server filtered for us); otherwise the email must match, case-insensitively.
pub fn agent_with_email(agents: &[Agent], more: bool, email: &str) -> Option<String> {
    let matching = agents.iter().find(|a| {
        a.email
            .as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(email))
    });
    match (matching, agents) {
        (Some(a), _) => Some(a.id.clone()),
        (None, [only]) if only.email.is_none() && !more => Some(only.id.clone()),
        _ => None,
    }
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

    use crate::targets::test_member as m;

    #[test]
    fn request_bodies() {
        assert_eq!(create_body("Team A"), json!({ "name": "Team A" }));
        assert_eq!(
            agents_body(&[m("u1"), m("u2")]),
            json!({ "agentIds": ["u1", "u2"] })
        );
        assert_eq!(agents_body(&[]), json!({ "agentIds": [] }));
    }

    fn b(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn create_answer() {
        let seed =
            json!({ "data": { "id": "005e7108-c85c-41d1-a945-4a8dc58c4399", "name": "Team A" } });
        assert_eq!(
            created_id(&b(seed)).unwrap(),
            "005e7108-c85c-41d1-a945-4a8dc58c4399"
        );
        assert_eq!(created_id(&b(json!({ "id": 7 }))).unwrap(), "7");
        let e = created_id(&b(json!({ "data": { "id": "" } }))).unwrap_err();
        assert!(e.to_string().contains("an object with keys: data"), "{e}");
        assert!(created_id(b"").is_err());
        assert!(created_id(&b(json!({ "team": { "id": "x" } }))).is_err());
    }

    #[test]
    fn listings_are_decoded_leniently_but_not_credulously() {
        let v = json!({ "data": [
            { "id": "t1", "name": "Team A", "extra": true },
            { "id": 2, "name": "Team B" },
        ]});
        let (teams, next) = page::<Team>("l", &b(v)).unwrap();
        let got: Vec<(String, String)> = teams.into_iter().map(|t| (t.id, t.name)).collect();
        let want = [("t1", "Team A"), ("2", "Team B")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert_eq!(next, None);
        assert!(
            page::<Team>("l", &b(json!({ "data": [] })))
                .unwrap()
                .0
                .is_empty()
        );
        // Unknown shapes and records without their fields are no "no teams".
        for bad in [
            json!({ "message": "x" }),
            json!({ "items": [], "total": 0 }),
            json!({ "data": null }),
            json!({ "data": { "teams": [] } }),
            json!({ "data": [{ "name": "no id" }] }),
            json!({ "data": [{ "id": "t3" }] }),
            json!([{ "id": "t1", "name": "A" }]),
        ] {
            assert!(page::<Team>("l", &b(bad.clone())).is_err(), "{bad}");
        }
        let e =
            page::<Team>("the team listing", &b(json!({ "items": [], "total": 0 }))).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "the team listing: answer not understood (an object with keys: items, total; expected {\"data\": [...]}"
            ),
            "{e}"
        );

        let a = json!({ "data": [{ "id": "a1", "name": "Agent A", "email": "aa@example.org" }, "a2", 3] });
        let (agents, _) = page::<decode::IdRef>("l", &b(a)).unwrap();
        assert_eq!(
            agents.into_iter().map(|a| a.0).collect::<Vec<_>>(),
            ["a1", "a2", "3"]
        );
        assert!(page::<decode::IdRef>("l", &b(json!({ "data": ["a", null] }))).is_err());
        assert!(page::<decode::IdRef>("l", &b(json!({ "data": [{}] }))).is_err());
        let (_, next) = page::<decode::IdRef>(
            "l",
            &b(json!({ "data": [], "meta": { "next": " /v1/x " } })),
        )
        .unwrap();
        assert_eq!(next.as_deref(), Some("/v1/x"));
        for m in [json!({ "next": "" }), json!({ "next": null }), json!({})] {
            let (_, next) =
                page::<decode::IdRef>("l", &b(json!({ "data": [], "meta": m }))).unwrap();
            assert_eq!(next, None);
        }
    }

    #[test]
    fn agent_by_email() {
        let (page1, _) = page::<Agent>(
            "l",
            &b(json!({ "data": [
                { "id": "a1", "email": "aa@example.org" },
                { "id": "a2", "email": " AB@Example.org " },
            ]})),
        )
        .unwrap();
        assert_eq!(
            agent_with_email(&page1, false, "ab@example.org").as_deref(),
            Some("a2")
        );
        assert_eq!(agent_with_email(&page1, false, "zz@example.org"), None);
        // A server that filtered and omits the email field: its only item.
        let bare = [Agent {
            id: "a9".into(),
            email: None,
        }];
        assert_eq!(
            agent_with_email(&bare, false, "x@example.org").as_deref(),
            Some("a9")
        );
        assert_eq!(agent_with_email(&bare, true, "x@example.org"), None);
        assert_eq!(agent_with_email(&[], false, "x@example.org"), None);
    }

    #[test]
    fn paging_stays_on_the_base_origin() {
        let base = "https://dev.dixa.io/v1";
        let cur = "https://dev.dixa.io/v1/agents?email=a%40b.c";
        let v =
            json!({ "data": [], "meta": { "next": "/v1/agents?pageKey=YWI%3D&email=a%40b.c" } });
        let (_, next) = page::<decode::IdRef>("l", &b(v)).unwrap();
        let next = next.unwrap();
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
    }
}
