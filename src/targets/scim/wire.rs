//! SCIM wire types and the pure lowering of changes into request bodies (no IO).

use serde_json::{Value, json};

use crate::config::Flavor;
use crate::plan::Member;

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

/// Member ids from a SCIM `members`/`owners` value: plain strings or `{"value": ...}` objects.
pub fn ids(v: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("value").and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// `Resources` of a ListResponse (lenient about its casing).
pub fn resources(v: &Value) -> Vec<Value> {
    v.get("Resources")
        .or_else(|| v.get("resources"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The id of a SCIM resource (string or number).
pub fn id_of(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
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
        assert_eq!(
            ids(Some(
                &json!(["a", { "value": "b" }, { "value": 3 }, 4, null])
            )),
            ["a", "b", "3", "4"]
        );
        assert!(ids(None).is_empty());
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
