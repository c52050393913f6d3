//! SCIM wire types and the pure lowering of changes into request bodies (no IO).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::Flavor;
use crate::plan::Member;
use crate::targets::RemoteGroup;
use crate::targets::decode::{self, IdRef, NotUnderstood};

pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The body of `POST /Groups`.
pub fn create_body(flavor: Flavor, name: &str, members: &[Member], owners: &[Member]) -> Value {
    let list = |ms: &[Member]| -> Value {
        match flavor {
            // MaestroQA documents members and owners as plain strings in POST bodies.
            Flavor::Maestroqa => ms.iter().map(|m| Value::String(m.id.clone())).collect(),
            Flavor::Rfc7644 => ms.iter().map(|m| json!({ "value": m.id })).collect(),
        }
    };
    let mut body = json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "members": list(members),
    });
    if flavor == Flavor::Maestroqa && !owners.is_empty() {
        body["owners"] = list(owners);
    }
    body
}

/// One PATCH's changes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PatchParts<'a> {
    pub rename: Option<&'a str>,
    pub add: &'a [Member],
    pub remove: &'a [Member],
    pub add_owners: &'a [Member],
    pub remove_owners: &'a [Member],
}

/// How a PATCH names the members it removes (`remove_form` in the config pins one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveForm {
    /// RFC 7644 3.5.2.2: one `remove` per member, a value filter in its path
    /// (`members[value eq "id"]`). The RFC's own form, rostersync's default for `rfc7644`.
    Filter,
    /// One `remove` with path `members` and the members as its value, as Entra ID sends
    /// and MaestroQA documents. Sent to an `rfc7644` server that answered the filter
    /// form with 501 (learned and kept as the fact `scim.remove_form`).
    Value,
}

impl RemoveForm {
    /// The form a flavor starts with.
    pub fn default_for(flavor: Flavor) -> RemoveForm {
        match flavor {
            Flavor::Maestroqa => RemoveForm::Value,
            Flavor::Rfc7644 => RemoveForm::Filter,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveForm::Filter => "filter",
            RemoveForm::Value => "value",
        }
    }
}

/// The body of `PATCH /Groups/{id}`; None when it would carry no operation.
pub fn patch_body(form: RemoveForm, p: &PatchParts<'_>) -> Option<Value> {
    let values = |ms: &[Member]| -> Value { ms.iter().map(|m| json!({ "value": m.id })).collect() };
    let mut ops = Vec::new();
    if let Some(name) = p.rename {
        ops.push(json!({ "op": "replace", "path": "displayName", "value": name }));
    }
    for (path, add, remove) in [
        ("members", p.add, p.remove),
        ("owners", p.add_owners, p.remove_owners),
    ] {
        if !add.is_empty() {
            ops.push(json!({ "op": "add", "path": path, "value": values(add) }));
        }
        if remove.is_empty() {
            continue;
        }
        match form {
            RemoveForm::Value => {
                ops.push(json!({ "op": "remove", "path": path, "value": values(remove) }))
            }
            RemoveForm::Filter => ops.extend(remove.iter().map(
                |m| json!({ "op": "remove", "path": format!("{path}[value eq {}]", quote(&m.id)) }),
            )),
        }
    }
    (!ops.is_empty()).then(|| json!({ "schemas": [PATCH_SCHEMA], "Operations": ops }))
}

impl PatchParts<'_> {
    /// Whether the PATCH changes members or owners (besides a rename).
    pub fn has_membership(&self) -> bool {
        !(self.add.is_empty()
            && self.remove.is_empty()
            && self.add_owners.is_empty()
            && self.remove_owners.is_empty())
    }
    /// Whether it removes anybody (the only part whose form differs).
    pub fn has_removals(&self) -> bool {
        !(self.remove.is_empty() && self.remove_owners.is_empty())
    }
}

/// What a write's answer shows of the group: its member and owner ids, each None when
/// the answer does not carry that attribute (or carries no group at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    pub members: Option<Vec<String>>,
    pub owners: Option<Vec<String>>,
    /// The group's `displayName`, when the answer carries the group.
    pub name: Option<String>,
}

impl Shown {
    fn of(g: &Group) -> Shown {
        let ids =
            |l: &Option<Vec<IdRef>>| l.as_ref().map(|l| l.iter().map(|m| m.0.clone()).collect());
        Shown {
            members: ids(&g.members),
            owners: ids(&g.owners),
            name: Some(g.display_name.clone()),
        }
    }
}

/// The group a write's answer carries (the Group itself, as RFC 7644 3.5.2 answers with
/// 200, or a ListResponse holding it, as MaestroQA documents), if any. A 204 or another
/// body shows nothing: the call's status alone confirms it, as it always has.
pub fn shown(body: &[u8]) -> Shown {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Shown::default();
    };
    let g = match v.get("Resources").and_then(Value::as_array) {
        Some(rs) if rs.len() == 1 => rs[0].clone(),
        Some(_) => return Shown::default(),
        None => v,
    };
    match serde_json::from_value::<Group>(g) {
        Ok(g) => Shown::of(&g),
        Err(_) => Shown::default(),
    }
}

/// A SCIM filter string literal.
pub fn quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// A SCIM Group resource. `members`/`owners` may be left out (SCIM omits empty attributes;
/// a listing may leave them out to be short): None then.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Group {
    #[serde(deserialize_with = "decode::de_id")]
    pub id: String,
    #[serde(rename = "displayName")]
    pub display_name: String,
    #[serde(default)]
    pub members: Option<Vec<IdRef>>,
    #[serde(default)]
    pub owners: Option<Vec<IdRef>>,
}

impl Group {
    /// The group as rostersync sees it (members left out count as none: read it by id first
    /// when that matters, see `Scim::complete`).
    pub fn remote(&self) -> RemoteGroup {
        let ids = |l: &Option<Vec<IdRef>>| -> Vec<String> {
            l.iter().flatten().map(|m| m.0.clone()).collect()
        };
        RemoteGroup {
            id: self.id.clone(),
            name: self.display_name.clone(),
            members: ids(&self.members),
            owners: ids(&self.owners),
            receive_call: Vec::new(),
        }
    }
}

/// A resource with an id (to tell a new page from one read already).
pub trait Identified {
    fn id(&self) -> &str;
}

impl Identified for Group {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Identified for User {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A SCIM User resource, as a `userName` lookup needs it.
#[derive(Clone, Debug, Deserialize)]
pub struct User {
    #[serde(deserialize_with = "decode::de_id")]
    pub id: String,
    #[serde(rename = "userName")]
    pub user_name: String,
}

/// A user resource read by id (`GET /Users/{id}`): its `userName`, and its emails.
#[derive(Clone, Debug, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "userName", default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub emails: Vec<UserEmail>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct UserEmail {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub primary: Option<bool>,
}

impl UserDoc {
    /// The person's email: the `userName` when it is one, else the primary email, else the
    /// first.
    pub fn email(&self) -> Option<String> {
        let is_email = |s: &&String| s.contains('@');
        if let Some(u) = self.user_name.as_ref().filter(is_email) {
            return Some(u.clone());
        }
        let mut emails: Vec<&UserEmail> = self.emails.iter().collect();
        emails.sort_by_key(|e| !e.primary.unwrap_or(false));
        emails
            .into_iter()
            .find_map(|e| e.value.as_ref().filter(is_email).cloned())
    }
}

/// A ListResponse (RFC 7644 3.4.2). `Resources` may be left out only when `totalResults` is
/// 0 (the RFC requires it otherwise).
#[derive(Clone, Debug, Deserialize)]
struct ListResponse<T> {
    #[serde(rename = "totalResults", default)]
    total_results: Option<u64>,
    #[serde(rename = "Resources", alias = "resources", default = "Option::default")]
    resources: Option<Vec<T>>,
}

/// The records of a ListResponse and its `totalResults`. `{"totalResults": 0}` (with or
/// without an empty `Resources`) is a real empty answer; an answer without `Resources`
/// that does not say 0 is not understood.
pub fn list<T: DeserializeOwned>(
    what: &str,
    body: &[u8],
) -> Result<(Vec<T>, Option<u64>), NotUnderstood> {
    const EXPECTED: &str = "a ListResponse with Resources";
    let v = decode::value(what, body)?;
    let l: ListResponse<T> = decode::typed(what, EXPECTED, &v)?;
    match (l.resources, l.total_results) {
        (Some(r), total) => Ok((r, total)),
        (None, Some(0)) => Ok((Vec::new(), Some(0))),
        (None, _) => Err(NotUnderstood::of(what, &v, "Resources")),
    }
}

/// The id of a create answer (the created Group) and what it shows of its members.
pub fn created(body: &[u8]) -> Result<(String, Shown), NotUnderstood> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(deserialize_with = "decode::de_id")]
        id: String,
        #[serde(default)]
        members: Option<Vec<IdRef>>,
        #[serde(default)]
        owners: Option<Vec<IdRef>>,
    }
    let c = decode::answer::<Created>("the create answer", "the created Group with its id", body)?;
    let ids = |l: Option<Vec<IdRef>>| l.map(|l| l.into_iter().map(|m| m.0).collect());
    let shown = Shown {
        members: ids(c.members),
        owners: ids(c.owners),
        name: None,
    };
    Ok((c.id, shown))
}

/// What a server says it supports (RFC 7643 section 5, `/ServiceProviderConfig`), as much
/// as rostersync uses or shows. Kept as the fact `scim.service_provider_config` (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Spc {
    pub patch: Option<bool>,
    pub filter: Option<bool>,
    /// `filter.maxResults`: the most resources one answer holds.
    pub max_results: Option<u64>,
    pub bulk: Option<bool>,
    /// `bulk.maxOperations`.
    pub max_operations: Option<u64>,
}

impl Spc {
    /// One line for `check --online`.
    pub fn describe(&self) -> String {
        let yn = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not stated",
        };
        let mut s = format!(
            "ServiceProviderConfig: patch {}, filter {}",
            yn(self.patch),
            yn(self.filter)
        );
        if let Some(n) = self.max_results {
            s += &format!(" (maxResults {n})");
        }
        s += &format!(", bulk {}", yn(self.bulk));
        if let Some(n) = self.max_operations {
            s += &format!(" (maxOperations {n})");
        }
        s
    }
}

/// A ServiceProviderConfig answer. Every feature the RFC requires is an object with a
/// `supported` flag; an answer with none of `patch`, `filter`, `bulk` is not understood.
pub fn spc(body: &[u8]) -> Result<Spc, NotUnderstood> {
    const WHAT: &str = "the ServiceProviderConfig";
    let v = decode::value(WHAT, body)?;
    let feature = |k: &str| v.get(k).filter(|f| f.is_object());
    if ["patch", "filter", "bulk"]
        .iter()
        .all(|k| feature(k).is_none())
    {
        return Err(NotUnderstood::of(WHAT, &v, "patch, filter and bulk"));
    }
    let flag = |k: &str| {
        feature(k)
            .and_then(|f| f.get("supported"))
            .and_then(decode::flag)
    };
    let num = |k: &str, n: &str| {
        feature(k).and_then(|f| f.get(n)).and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
        })
    };
    Ok(Spc {
        patch: flag("patch"),
        filter: flag("filter"),
        max_results: num("filter", "maxResults").filter(|n| *n > 0),
        bulk: flag("bulk"),
        max_operations: num("bulk", "maxOperations").filter(|n| *n > 0),
    })
}

/// The message of a SCIM error answer (RFC 7644 3.12): its `detail` and `scimType`, its
/// `status` whether a string or a number; an empty body still says what the status means.
pub fn error_message(status: u16, body: &[u8]) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let head = format!("HTTP {status} {reason}").trim_end().to_string();
    if body.iter().all(u8::is_ascii_whitespace) {
        return format!("{head} (an empty answer)");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return crate::targets::http::message(status, body);
    };
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let detail = text("detail")
        .or_else(|| text("message"))
        .or_else(|| text("error_description"))
        .or_else(|| text("error"));
    let scim_type = text("scimType");
    let cut = |s: &str| s.chars().take(300).collect::<String>();
    match (detail, scim_type) {
        (Some(d), Some(t)) => format!("{head}: {} ({t})", cut(d)),
        (Some(d), None) => format!("{head}: {}", cut(d)),
        (None, Some(t)) => format!("{head}: {t}"),
        (None, None) => format!(
            "{head} (an answer without a message: {})",
            decode::describe(&v)
        ),
    }
}

/// The group of a read answer.
pub fn group(what: &str, body: &[u8]) -> Result<Group, NotUnderstood> {
    decode::answer(what, "a Group with an id and a displayName", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::targets::test_member as m;

    #[test]
    fn maestroqa_create_uses_plain_strings_and_owners() {
        let b = create_body(Flavor::Maestroqa, "T", &[m("a@x")], &[m("o1")]);
        assert_eq!(b["members"], json!(["a@x"]));
        assert_eq!(b["owners"], json!(["o1"]));
    }

    #[test]
    fn rfc7644_create_uses_value_objects_and_no_owners() {
        let b = create_body(Flavor::Rfc7644, "T", &[m("u1")], &[m("o1")]);
        assert_eq!(b["members"], json!([{ "value": "u1" }]));
        assert!(b.get("owners").is_none());
    }

    #[test]
    fn one_patch_carries_rename_adds_and_removes() {
        let (add, rem) = ([m("a"), m("b")], [m("c")]);
        let p = PatchParts {
            rename: Some("New"),
            add: &add,
            remove: &rem,
            ..Default::default()
        };
        let b = patch_body(RemoveForm::Filter, &p).unwrap();
        assert_eq!(
            b["Operations"],
            json!([
                { "op": "replace", "path": "displayName", "value": "New" },
                { "op": "add", "path": "members", "value": [{ "value": "a" }, { "value": "b" }] },
                { "op": "remove", "path": "members[value eq \"c\"]" },
            ])
        );
        let b = patch_body(RemoveForm::Value, &p).unwrap();
        assert_eq!(
            b["Operations"][2],
            json!({ "op": "remove", "path": "members", "value": [{ "value": "c" }] })
        );
        assert_eq!(patch_body(RemoveForm::Value, &PatchParts::default()), None);
    }

    #[test]
    fn lenient_member_decoding() {
        let g: Group = decode::typed(
            "g",
            "a Group",
            &json!({"id": 4, "displayName": "G", "members": ["a", { "value": "b" }, { "value": 3 }, 4]}),
        )
        .unwrap();
        assert_eq!(g.remote().members, ["a", "b", "3", "4"]);
        assert_eq!(g.remote().id, "4");
        for bad in [json!(null), json!({}), json!({ "value": "" }), json!("")] {
            let v = json!({"id": "g", "displayName": "G", "members": ["a", bad]});
            assert!(decode::typed::<Group>("g", "a Group", &v).is_err(), "{v}");
        }
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn list_responses() {
        let body = |v: Value| v.to_string().into_bytes();
        let (g, total) = list::<Group>(
            "l",
            &body(json!({"totalResults": 1, "Resources": [{"id": "1", "displayName": "A"}]})),
        )
        .unwrap();
        assert_eq!((g.len(), total, g[0].members.is_none()), (1, Some(1), true));
        for empty in [
            json!({"totalResults": 0, "Resources": []}),
            json!({"totalResults": 0}),
            json!({"schemas": ["x"], "totalResults": 0, "itemsPerPage": 0}),
        ] {
            assert!(list::<Group>("l", &body(empty)).unwrap().0.is_empty());
        }
        let e = list::<Group>("the group listing", &body(json!({"items": [], "total": 0})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the group listing: answer not understood (an object with keys: items, total; expected Resources)"
        );
        assert!(list::<Group>("l", &body(json!({"totalResults": 3}))).is_err());
        assert!(
            list::<Group>(
                "l",
                &body(json!({"totalResults": 1, "Resources": [{"displayName": "no id"}]}))
            )
            .is_err()
        );
        assert!(list::<Group>("l", b"").is_err());
        let (u, _) = list::<User>(
            "l",
            &body(json!({"Resources": [{"id": "u1", "userName": "a@x"}]})),
        )
        .unwrap();
        assert_eq!(u[0].user_name, "a@x");
    }

    #[test]
    fn write_answers_show_what_they_carry() {
        let b = |v: Value| v.to_string().into_bytes();
        let g = json!({"id": "1", "displayName": "G", "members": [{"value": "a"}]});
        assert_eq!(shown(&b(g.clone())).members, Some(vec!["a".to_string()]));
        let listed = json!({"totalResults": 1, "Resources": [{"id": "1", "displayName": "G", "members": ["a"], "owners": []}]});
        assert_eq!(
            shown(&b(listed)),
            Shown {
                members: Some(vec!["a".into()]),
                owners: Some(vec![]),
                name: Some("G".into()),
            }
        );
        for nothing in ["", "{}", "<html>", r#"{"id": "1"}"#] {
            let nothing = nothing.as_bytes();
            assert_eq!(shown(nothing), Shown::default());
        }
        let bare = shown(br#"{"id": "1", "displayName": "G"}"#);
        assert_eq!((bare.members, bare.name), (None, Some("G".into())));
        let (id, s) = created(&b(json!({"id": 7, "displayName": "G"}))).unwrap();
        assert_eq!((id.as_str(), s.members), ("7", None));
        let (_, s) = created(&b(json!({"id": "7", "members": []}))).unwrap();
        assert_eq!(s.members, Some(vec![]));
        assert!(created(&b(json!({"displayName": "G"}))).is_err());
    }

    #[test]
    fn service_provider_configs() {
        let b = |v: Value| v.to_string().into_bytes();
        let s = spc(&b(json!({
            "patch": {"supported": true},
            "filter": {"supported": "true", "maxResults": 200},
            "bulk": {"supported": false, "maxOperations": 0},
            "changePassword": {"supported": false},
        })))
        .unwrap();
        assert_eq!(
            s,
            Spc {
                patch: Some(true),
                filter: Some(true),
                max_results: Some(200),
                bulk: Some(false),
                max_operations: None
            }
        );
        assert_eq!(
            s.describe(),
            "ServiceProviderConfig: patch yes, filter yes (maxResults 200), bulk no"
        );
        let e = spc(&b(json!({"schemas": ["x"]}))).unwrap_err().to_string();
        assert!(e.contains("keys: schemas"), "{e}");
        assert!(spc(b"").is_err());
    }

    #[test]
    fn error_messages_whatever_the_status_type() {
        let b = |v: Value| v.to_string().into_bytes();
        for status in [json!("400"), json!(400)] {
            let body = b(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": status, "scimType": "invalidFilter", "detail": "bad filter"}),
            );
            assert_eq!(
                error_message(400, &body),
                "HTTP 400 Bad Request: bad filter (invalidFilter)"
            );
        }
        assert_eq!(
            error_message(401, b""),
            "HTTP 401 Unauthorized (an empty answer)"
        );
        assert_eq!(
            error_message(501, &b(json!({"status": 501}))),
            "HTTP 501 Not Implemented (an answer without a message: an object with keys: status)"
        );
        assert_eq!(error_message(500, b"oops"), "HTTP 500: oops");
    }
}
