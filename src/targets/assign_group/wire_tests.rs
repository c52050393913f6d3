//! Unit tests of the DeepCall wire format.

use super::*;
use crate::plan::Member;

fn m(id: &str) -> Member {
    Member {
        id: id.into(),
        email: Some(format!("{id}@x")),
        ..Default::default()
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn the_body_decides_not_the_status() {
    let err = |c: i64| {
        json!({"status": "error", "code": c, "message": "m"})
            .to_string()
            .into_bytes()
    };
    let ok = br#"{"status":"success","message":"done","code":200}"#;
    assert_eq!(classify(Endpoint::Assign, 200, ok), Verdict::Ok);
    assert_eq!(
        classify(Endpoint::Assign, 200, &err(1009)),
        Verdict::Retry("DeepCall error 1009: m".into())
    );
    assert!(matches!(
        classify(Endpoint::Add, 200, &err(1010)),
        Verdict::Retry(_)
    ));
    assert!(matches!(
        classify(Endpoint::Assign, 200, &err(1503)),
        Verdict::NotFound(_)
    ));
    assert!(matches!(
        classify(Endpoint::Relation, 200, &err(1503)),
        Verdict::NotFound(_)
    ));
    assert!(matches!(
        classify(Endpoint::Delete, 200, &err(1503)),
        Verdict::NotFound(_)
    ));
    // 1503 on an endpoint that names no group is no "gone group".
    assert!(matches!(
        classify(Endpoint::Add, 200, &err(1503)),
        Verdict::Fail(_)
    ));
    assert!(matches!(
        classify(Endpoint::List, 200, &err(1503)),
        Verdict::Fail(_)
    ));
    for c in [1000, 1047, 1501, 1502, 4242] {
        assert!(
            matches!(classify(Endpoint::Update, 200, &err(c)), Verdict::Fail(_)),
            "{c}"
        );
    }
    assert!(matches!(
        classify(Endpoint::Assign, 200, &err(1015)),
        Verdict::Unauthorized(_)
    ));
    // Even under another status, a vendor body wins; transport statuses retry.
    assert!(matches!(
        classify(Endpoint::Assign, 400, &err(1503)),
        Verdict::NotFound(_)
    ));
    assert!(matches!(
        classify(Endpoint::Assign, 503, &err(1503)),
        Verdict::Retry(_)
    ));
    assert!(matches!(
        classify(Endpoint::Add, 429, b""),
        Verdict::Retry(_)
    ));
    // A 2xx that is no JSON object proves nothing.
    assert!(matches!(
        classify(Endpoint::Assign, 200, b"<html>ok</html>"),
        Verdict::Retry(_)
    ));
    assert!(matches!(
        classify(Endpoint::Assign, 200, b""),
        Verdict::Retry(_)
    ));
    // 404 is a wrong base_url, never a gone group.
    match classify(Endpoint::Update, 404, b"Cannot POST /x") {
        Verdict::Fail(m) => assert!(m.contains("base_url"), "{m}"),
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        classify(Endpoint::Update, 401, b""),
        Verdict::Unauthorized(_)
    ));
}

#[test]
fn vendor_errors_are_read_leniently() {
    let e = vendor_error(
        &json!({"status": "error", "code": "1503", "message": "Group not found or not authorized"}),
    );
    assert_eq!(
        e.unwrap().to_string(),
        "DeepCall error 1503: Group not found or not authorized"
    );
    assert_eq!(
        vendor_error(&json!({"status": "ERROR", "code": 1009}))
            .unwrap()
            .message,
        "no message"
    );
    assert!(vendor_error(&json!({"status": false, "msg": "x"})).is_some());
    assert!(vendor_error(&json!({"code": 1047, "message": "Invalid Request Data"})).is_some());
    assert!(vendor_error(&json!({"code": 200})).is_none());
    assert!(vendor_error(&json!({"status": "success", "code": 200})).is_none());
    assert!(vendor_error(&json!({"groupId": "3"})).is_none());
    assert!(vendor_error(&json!([1, 2])).is_none());
}

#[test]
fn bodies() {
    assert_eq!(add_body("Tier 1"), json!({"name": "Tier 1"}));
    assert_eq!(list_body(Some("T"), None), json!({"name": "T"}));
    assert_eq!(list_body(None, None), json!({}));
    assert_eq!(
        list_body(Some("T"), Some(("page", 2))),
        json!({"name": "T", "page": 2})
    );
    assert_eq!(rename_body("4", "N"), json!({"groupId": "4", "name": "N"}));
    assert_eq!(group_body("4"), json!({"groupId": "4"}));
    let a = Assignment {
        agents: s(&["1", "2"]),
        receive_call: s(&["2"]),
        ..Default::default()
    };
    assert_eq!(
        assign_body("4", &a),
        json!({"groupId": "4", "agent_unique_id": ["1", "2"], "receive_call": ["2"]})
    );
    // Emptying a group still sends both (empty) lists.
    assert_eq!(
        assign_body("4", &Assignment::default()),
        json!({"groupId": "4", "agent_unique_id": [], "receive_call": []})
    );
    let mut auth = Map::new();
    auth.insert("userId".into(), json!("u"));
    auth.insert("token".into(), json!("t"));
    assert_eq!(
        with_auth(group_body("4"), &auth),
        json!({"groupId": "4", "userId": "u", "token": "t"})
    );
}

/// The groups of a listing read with nothing known yet.
fn groups_of(v: &Value) -> Result<Vec<Listed>, NotUnderstood> {
    listed(v, At::Unknown).map(|r| r.records)
}

fn ids(l: &[Listed]) -> Vec<&str> {
    l.iter().map(|g| g.id.as_str()).collect()
}

#[test]
fn answers_are_decoded_leniently() {
    assert_eq!(
        created_id(&json!({"status": "success", "groupId": "7"})),
        Some("7".into())
    );
    assert_eq!(created_id(&json!({"groupId": 7})), Some("7".into()));
    assert_eq!(created_id(&json!({"data": {"id": 8}})), Some("8".into()));
    assert_eq!(
        created_id(&json!({"response": {"groupId": 9}})),
        Some("9".into())
    );
    assert_eq!(created_id(&json!({"groupId": ""})), None);
    assert_eq!(created_id(&json!({"groupId": 7.5})), None);

    let l = groups_of(&json!({"data": [
        {"groupId": "1", "name": "Tier 1"}, {"group_id": 2, "groupName": "tier 1"},
        {"id": "3", "name": "Tier 11"}
    ]}))
    .unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(
        l[1],
        Listed {
            id: "2".into(),
            name: "tier 1".into()
        }
    );
    // A listed group without an id could be the one we look for: not understood.
    let e = groups_of(&json!({"data": [{"groupId": "1", "name": "Tier 1"}, {"name": "no id"}]}))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "the group listing: answer not understood (data[1] is an object with keys: name; expected an id and a name; \
         if the records are in another array, set groups_at = \"PATH\" for this target)"
    );
    assert!(groups_of(&json!({"data": [{"groupId": "", "name": "A"}]})).is_err());
}

fn g(id: u32, name: &str) -> Value {
    json!({"groupId": id.to_string(), "name": name, "agentCount": 2})
}

#[test]
fn group_records_are_found_wherever_the_answer_puts_them() {
    let gs = json!([g(1, "A"), g(2, "B")]);
    for (v, path) in [
        (gs.clone(), "."),
        (
            json!({"status": "success", "code": 200, "response": gs}),
            "response",
        ),
        (
            json!({"status": "success", "code": 200, "data": gs}),
            "data",
        ),
        (json!({"status": "success", "result": gs}), "result"),
        (json!({"status": "success", "rows": gs}), "rows"),
        (
            json!({"status": "success", "response": {"groups": gs, "total": 2}}),
            "response.groups",
        ),
        (
            json!({"status": "success", "result": {"data": {"list": gs}}}),
            "result.data.list",
        ),
        // Arrays of other objects (links, tags) do not count.
        (
            json!({"status": "success", "groups": gs, "tags": ["x", "y"], "links": [{"rel": "self"}]}),
            "groups",
        ),
        // Two arrays that name the same groups are one answer.
        (
            json!({"status": "success", "data": gs, "recent": gs}),
            "data",
        ),
    ] {
        let r = listed(&v, At::Unknown).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(ids(&r.records), ["1", "2"], "{v}");
        assert_eq!(
            (r.path.as_deref(), r.found),
            (Some(path), Found::Seen),
            "{v}"
        );
    }
    // Two arrays that disagree: not understood, naming both and the key that pins one.
    let two = json!({"status": "success", "data": gs, "recent": [g(3, "C")]});
    let e = groups_of(&two).unwrap_err().to_string();
    assert!(
        e.contains("2 arrays hold records (data, recent) and they do not name the same ones")
            && e.contains("set groups_at = \"PATH\""),
        "{e}"
    );
    // Records in an object keyed by id: no array at all.
    let keyed = json!({"status": "success", "response": {"7": {"name": "A"}}});
    let e = groups_of(&keyed).unwrap_err().to_string();
    assert!(e.contains("no array"), "{e}");
    let none = json!({"status": "success", "items": [{"gid": 1, "title": "A"}], "total": 1});
    let e = groups_of(&none).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "the group listing: answer not understood (an object with keys: items, status, total, \
             arrays at: items (1 item); no array holds objects with an id"
        ),
        "{e}"
    );
    assert!(groups_of(&json!({"status": "success"})).is_err());
    assert!(groups_of(&json!({"status": "success", "message": "ok", "code": 200})).is_err());
    // Too deep.
    assert!(groups_of(&json!({"a": {"b": {"c": {"d": gs}}}})).is_err());
}

#[test]
fn empty_by_evidence() {
    // Before any path is known: an empty array (up to two levels deep) in a success body.
    for v in [
        json!({"status": "success", "response": [], "code": 200}),
        json!({"status": "success", "data": []}),
        json!({"status": "Success", "rows": []}),
        json!({"status": "success", "response": {"groups": []}}),
        json!({"status": "success", "response": [], "links": [{"rel": "self"}]}),
    ] {
        let r = listed(&v, At::Unknown).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(r.records.is_empty(), "{v}");
        assert_eq!((r.path, r.found), (None, Found::EmptyArrays), "{v}");
    }
    // Not a success body; too deep; no array at all.
    assert!(groups_of(&json!({"data": []})).is_err());
    assert!(groups_of(&json!({"status": "success", "a": {"b": {"c": []}}})).is_err());
    assert!(groups_of(&json!({"status": "success", "response": {}})).is_err());

    // Once a path is known: only it is read.
    let learned = At::Learned("response");
    let r = listed(&json!({"status": "success", "response": []}), learned).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.found, Found::Learned);
    let r = listed(
        &json!({"status": "success", "response": [g(4, "D")]}),
        learned,
    )
    .unwrap();
    assert_eq!(ids(&r.records), ["4"]);
    // The path disappeared (the shape changed): loud, never "none".
    let e = listed(&json!({"status": "success", "data": []}), learned)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected the records at `response`") && e.contains("arrays at: data (empty)"),
        "{e}"
    );
    assert!(listed(&json!({"status": "success", "data": [g(1, "A")]}), learned).is_err());
    // An empty array at the path of a body that is not a success body.
    assert!(listed(&json!({"response": []}), learned).is_err());
    // Pinned: the other arrays do not matter, even ones that disagree.
    let pinned = At::Pinned("response.groups");
    let v =
        json!({"status": "success", "response": {"groups": [g(1, "A")], "recent": [g(2, "B")]}});
    let r = listed(&v, pinned).unwrap();
    assert_eq!((ids(&r.records), r.found), (vec!["1"], Found::Pinned));
    let e = listed(
        &json!({"status": "success", "response": [g(1, "A")]}),
        pinned,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pinned by groups_at = \"response.groups\""),
        "{e}"
    );
    // `.` names an answer that is the array.
    assert_eq!(
        ids(&listed(&json!([g(5, "E")]), At::Pinned("."))
            .unwrap()
            .records),
        ["5"]
    );
}

#[test]
fn exact_case_insensitive_match_on_our_side() {
    let l = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(i, n)| Listed {
                id: i.to_string(),
                name: n.to_string(),
            })
            .collect::<Vec<_>>()
    };
    // The vendor's substring filter returns "Tier 11" and "Tier 1 Support" for "Tier 1".
    let g = l(&[("3", "Tier 11"), ("4", "Tier 1 Support"), ("9", "TIER 1")]);
    assert_eq!(exact_match(&g, "Tier 1").unwrap().id, "9");
    assert!(exact_match(&g, "Tier").is_none());
    let g = l(&[("12", "tier 1"), ("10", "TIER 1"), ("11", "Tier 1")]);
    assert_eq!(exact_match(&g, "Tier 1").unwrap().id, "11");
    assert_eq!(exact_match(&g, "tIER 1").unwrap().id, "10");
}

/// A relation read with nothing known yet.
fn rel(v: &Value) -> Result<(Vec<String>, Vec<String>), NotUnderstood> {
    relation(v, At::Unknown).map(|r| r.records)
}

#[test]
fn relation_flags_in_every_spelling() {
    for (on, off) in [
        (json!(1), json!(0)),
        (json!("1"), json!("0")),
        (json!(true), json!(false)),
        (json!("true"), json!("false")),
    ] {
        let v = json!({"status": "success", "data": [
            {"groupId": "1", "agent_unique_id": "1001", "receive_call": on},
            {"groupId": "1", "agent_unique_id": 1002, "receive_call": off},
        ]});
        assert_eq!(rel(&v).unwrap(), (s(&["1001", "1002"]), s(&["1001"])));
    }
    for bad in [json!("yes"), json!(2), json!({}), json!("")] {
        let v = json!({"data": [{"agent_unique_id": "1", "receive_call": bad}]});
        let e = rel(&v).unwrap_err().to_string();
        assert!(
            e.contains("data[0] is") && e.contains("receive_call flag"),
            "{e}"
        );
    }
    // No flag: the agent does not receive calls.
    let v = json!({"data": {"agents": [{"agentId": "5", "receiveCall": "1"}, {"agentId": 6}, {"agentId": "6"}]}});
    assert_eq!(rel(&v).unwrap(), (s(&["5", "6"]), s(&["5"])));
    // The assign call's own shape.
    let v = json!({"data": {"agent_unique_id": ["1", 2, "1"], "receive_call": ["2"]}});
    assert_eq!(rel(&v).unwrap(), (s(&["1", "2"]), s(&["2"])));
    let v = json!({"agent_unique_id": ["1"]});
    assert_eq!(rel(&v).unwrap(), (s(&["1"]), s(&[])));
    assert!(rel(&json!({"agent_unique_id": ["1", null]})).is_err());
    assert!(rel(&json!({"agent_unique_id": ["1"], "receive_call": "1"})).is_err());
}

/// The documented `getGroupAgentRelation` answer.
fn documented(agents: &[(&str, u8)], relations: &[(&str, u8)]) -> Value {
    json!({"status": "success", "code": 200, "response": {
        "groupData": {"groupId": "7", "name": "Tier 1 Support"},
        "agentData": agents.iter().map(|(a, _)| json!({"agent_unique_id": a, "name": "x"})).collect::<Vec<_>>(),
        "relationData": relations.iter().map(|(a, f)| json!({"agent_unique_id": a, "receive_call": f})).collect::<Vec<_>>(),
    }})
}

#[test]
fn agreeing_arrays_are_one_answer() {
    let v = documented(&[("1001", 0), ("1002", 0)], &[("1002", 0), ("1001", 1)]);
    let r = relation(&v, At::Unknown).unwrap();
    assert_eq!(r.records, (s(&["1002", "1001"]), s(&["1001"])));
    // The path learned is the one that carries the flags.
    assert_eq!(r.path.as_deref(), Some("response.relationData"));
    assert_eq!(r.found, Found::Seen);
    // Read later at the learned path only.
    let r = relation(&v, At::Learned("response.relationData")).unwrap();
    assert_eq!(r.records, (s(&["1002", "1001"]), s(&["1001"])));
    // An empty group: both arrays empty.
    let r = relation(&documented(&[], &[]), At::Unknown).unwrap();
    assert_eq!((r.records, r.found), ((vec![], vec![]), Found::EmptyArrays));
    let r = relation(&documented(&[], &[]), At::Learned("response.relationData")).unwrap();
    assert_eq!(r.records, (vec![], vec![]));
    // Arrays that disagree on the ids.
    let v = documented(&[("1001", 0), ("1003", 0)], &[("1001", 1), ("1002", 0)]);
    let e = rel(&v).unwrap_err().to_string();
    assert!(
        e.contains("2 arrays hold records (response.agentData, response.relationData)")
            && e.contains("set agents_at = \"PATH\""),
        "{e}"
    );
    // Arrays that agree on the ids but disagree on a flag.
    let v = json!({"status": "success", "response": {
        "a": [{"agent_unique_id": "1", "receive_call": 1}],
        "b": [{"agent_unique_id": "1", "receive_call": 0}]}});
    let e = rel(&v).unwrap_err().to_string();
    assert!(e.contains("disagree on receive_call"), "{e}");
    // Pinned to the array without flags: nobody receives calls.
    let v = documented(&[("1001", 0)], &[("1001", 1)]);
    let r = relation(&v, At::Pinned("response.agentData")).unwrap();
    assert_eq!(r.records, (s(&["1001"]), s(&[])));
}

#[test]
fn relation_records_are_found_wherever_the_answer_puts_them() {
    let rows = json!([{"agent_unique_id": "1001", "receive_call": 1}, {"agent_unique_id": "1002", "receive_call": 0}]);
    let want = (s(&["1001", "1002"]), s(&["1001"]));
    for v in [
        rows.clone(),
        json!({"status": "success", "data": rows}),
        json!({"status": "success", "response": rows}),
        json!({"status": "success", "data": {"agents": rows}}),
        json!({"status": "success", "result": {"data": {"rows": rows}}}),
    ] {
        assert_eq!(rel(&v).unwrap(), want, "{v}");
    }
    let two = json!({"data": rows, "previous": [{"agent_unique_id": "9"}]});
    assert!(
        rel(&two)
            .unwrap_err()
            .to_string()
            .contains("do not name the same ones")
    );
    let none = json!({"status": "success", "data": {"members": [{"uid": 1}]}});
    let e = rel(&none).unwrap_err().to_string();
    assert!(
        e.starts_with("the group's agents: answer not understood (an object with keys: data, status, arrays at: data.members (1 item)"),
        "{e}"
    );
    // A row without an agent id in the records' array.
    let e = rel(&json!({"data": [{"agent_unique_id": "1"}, {"receive_call": 1}]}))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data[1] is an object with keys: receive_call; expected an agent id"),
        "{e}"
    );
    for empty in [
        json!({"status": "success", "data": []}),
        json!({"status": "success", "response": []}),
        json!({"status": "success", "data": {"agents": []}}),
        json!({"status": "success", "data": {"agent_unique_id": [], "receive_call": []}}),
    ] {
        assert_eq!(rel(&empty).unwrap(), (vec![], vec![]), "{empty}");
    }
    assert!(rel(&json!({"data": []})).is_err());
    assert!(rel(&json!({"status": "success"})).is_err());
}

fn update(after: &[&str], rc_after: &[&str], remove: &[&str]) -> Update {
    Update {
        key: "k".into(),
        remote_id: "1".into(),
        name: "G".into(),
        remove: remove.iter().map(|i| m(i)).collect(),
        members_after: s(after),
        receive_call_after: s(rc_after),
        ..Default::default()
    }
}

#[test]
fn an_assign_sends_the_plan_and_keeps_what_rostersync_does_not_know() {
    // Known after the op: 1, 2 (2 receives calls); 3 is a member being removed; 9 and 8
    // were put on the group by somebody else (9 receives calls). In every mode the
    // assign keeps 8 and 9 (recorded as found; an authoritative plan removes them next,
    // where the plan shows them and the guard counts them).
    let u = update(&["1", "2"], &["2"], &["3"]);
    let now = (s(&["1", "3", "9", "8"]), s(&["9", "3"]));
    let a = assignment(&u, Some(&now));
    assert_eq!(a.agents, s(&["1", "2", "8", "9"]));
    assert_eq!(a.receive_call, s(&["2", "9"]));
    assert_eq!(a.foreign, s(&["8", "9"]));
    // Without a read (a group just created) there is nothing foreign to keep.
    assert_eq!(
        assignment(&u, None),
        Assignment {
            agents: s(&["1", "2"]),
            receive_call: s(&["2"]),
            ..Default::default()
        }
    );
}

#[test]
fn kept_members_removed_by_hand_are_not_put_back() {
    // 5 is known but unwanted, kept by the mode; 1 is wanted. Both were removed by hand.
    let mut u = update(&["1", "2", "5"], &["2", "5"], &[]);
    u.kept = s(&["5"]);
    let now = (s(&["2"]), s(&["2"]));
    let a = assignment(&u, Some(&now));
    assert_eq!(
        a.agents,
        s(&["1", "2"]),
        "a wanted member comes back, an unwanted one does not"
    );
    assert_eq!(a.receive_call, s(&["2"]));
    assert_eq!(a.dropped, s(&["5"]));
    assert!(a.foreign.is_empty());
    // Still there: kept as it is.
    let now = (s(&["2", "5"]), s(&[]));
    let a = assignment(&u, Some(&now));
    assert_eq!(a.agents, s(&["1", "2", "5"]));
    assert!(a.dropped.is_empty());
}

#[test]
fn nothing_to_send_when_the_group_already_matches() {
    let a = Assignment {
        agents: s(&["1", "2"]),
        receive_call: s(&["2"]),
        ..Default::default()
    };
    assert!(already(&a, &(s(&["2", "1"]), s(&["2"]))));
    assert!(!already(&a, &(s(&["1", "2"]), s(&[]))));
    assert!(!already(&a, &(s(&["1"]), s(&["2"]))));
}
