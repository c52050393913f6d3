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

/// The body of `PATCH /Groups/{id}`; None when it would carry no operation.
pub fn patch_body(flavor: Flavor, p: &PatchParts<'_>) -> Option<Value> {
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
        match flavor {
            Flavor::Maestroqa => {
                ops.push(json!({ "op": "remove", "path": path, "value": values(remove) }))
            }
            // RFC 7644 3.5.2.2: a value filter in the path names each member to remove.
            Flavor::Rfc7644 => ops.extend(remove.iter().map(
                |m| json!({ "op": "remove", "path": format!("{path}[value eq {}]", quote(&m.id)) }),
            )),
        }
    }
    (!ops.is_empty()).then(|| json!({ "schemas": [PATCH_SCHEMA], "Operations": ops }))
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

/// The id of a create answer (the created Group; only its id is needed).
pub fn created_id(body: &[u8]) -> Result<String, NotUnderstood> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(deserialize_with = "decode::de_id")]
        id: String,
    }
    decode::answer::<Created>("the create answer", "the created Group with its id", body)
        .map(|c| c.id)
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
        let b = patch_body(Flavor::Rfc7644, &p).unwrap();
        assert_eq!(
            b["Operations"],
            json!([
                { "op": "replace", "path": "displayName", "value": "New" },
                { "op": "add", "path": "members", "value": [{ "value": "a" }, { "value": "b" }] },
                { "op": "remove", "path": "members[value eq \"c\"]" },
            ])
        );
        let b = patch_body(Flavor::Maestroqa, &p).unwrap();
        assert_eq!(
            b["Operations"][2],
            json!({ "op": "remove", "path": "members", "value": [{ "value": "c" }] })
        );
        assert_eq!(patch_body(Flavor::Maestroqa, &PatchParts::default()), None);
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
}
