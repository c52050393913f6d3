//! Unit tests of the decoding toolkit.

use super::*;
use serde_json::json;

#[test]
fn one_id_rule() {
    assert_eq!(id(&json!("abc")).as_deref(), Some("abc"));
    assert_eq!(id(&json!(" 7 ")).as_deref(), Some("7"));
    assert_eq!(id(&json!(7)).as_deref(), Some("7"));
    assert_eq!(id(&json!(-3)).as_deref(), Some("-3"));
    assert_eq!(
        id(&json!(18446744073709551615u64)).as_deref(),
        Some("18446744073709551615")
    );
    assert_eq!(id(&json!(7.0)).as_deref(), Some("7"));
    for bad in [
        json!(""),
        json!("   "),
        json!(null),
        json!(7.5),
        json!({}),
        json!({"id": 1}),
        json!([1]),
        json!(true),
    ] {
        assert_eq!(id(&bad), None, "{bad}");
    }
    #[derive(Deserialize, Debug)]
    struct R {
        #[serde(deserialize_with = "de_id")]
        id: String,
        #[serde(default, deserialize_with = "de_ids")]
        more: Vec<String>,
    }
    let r: R = typed("r", "R", &json!({"id": 5, "more": ["a", 2], "x": 1})).unwrap();
    assert_eq!(
        (r.id.as_str(), r.more),
        ("5", vec!["a".to_string(), "2".into()])
    );
    let e = typed::<R>("the thing", "an id", &json!({"id": ""})).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "the thing: answer not understood (an object with keys: id; expected an id: "
        ),
        "{e}"
    );
    assert!(typed::<R>("r", "R", &json!({"id": null})).is_err());
    assert!(typed::<R>("r", "R", &json!({"id": 1, "more": ["a", null]})).is_err());
    let e = NotUnderstood::of(
        "the group listing",
        &json!({"items": [], "total": 0}),
        "Resources",
    );
    assert_eq!(
        e.to_string(),
        "the group listing: answer not understood (an object with keys: items, total; expected Resources)"
    );
    assert_eq!(
        typed::<Id>("x", "an id", &json!(9)).unwrap(),
        Id("9".into())
    );
}

#[test]
fn one_flag_rule() {
    for (v, want) in [
        (json!(1), true),
        (json!(0), false),
        (json!("1"), true),
        (json!("0"), false),
        (json!(true), true),
        (json!(false), false),
        (json!("true"), true),
        (json!(" FALSE "), false),
    ] {
        assert_eq!(flag(&v), Some(want), "{v}");
    }
    for bad in [
        json!(2),
        json!("yes"),
        json!(""),
        json!(null),
        json!([1]),
        json!(0.5),
    ] {
        assert_eq!(flag(&bad), None, "{bad}");
    }
}

#[test]
fn bodies_that_are_not_json_are_not_understood() {
    assert_eq!(
        value("the answer", b"").unwrap_err().to_string(),
        "the answer: answer not understood (an empty body)"
    );
    let e = value("the answer", b"<html>secret</html>")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not JSON") && !e.contains("secret"), "{e}");
    assert_eq!(value("x", br#"{"a":1}"#).unwrap(), json!({"a": 1}));
}

fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_pager_refuses_to_stop_at_its_cap() {
    let mut calls = 0;
    let r = block(paged(
        "the group listing",
        5,
        0usize,
        |k| {
            calls += 1;
            async move { Ok((vec![k], Some(k + 1))) }
        },
        |_, _| None::<()>,
    ));
    assert_eq!(calls, 5);
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with("the group listing: answer not understood (stopped at 5 pages, the cap"),
        "{e}"
    );
}

#[test]
fn the_pager_reads_every_page_stops_early_and_refuses_loops() {
    let mut all = Vec::new();
    let r = block(paged(
        "l",
        10,
        0usize,
        |k| async move { Ok((vec![k * 10, k * 10 + 1], (k < 2).then_some(k + 1))) },
        |rs, _| {
            all.extend(rs);
            None::<()>
        },
    ));
    assert!(matches!(r, Ok(None)));
    assert_eq!(all, [0, 1, 10, 11, 20, 21]);
    let r = block(paged(
        "l",
        10,
        0usize,
        |k| async move { Ok((vec![k], Some(k + 1))) },
        |rs, more| (rs[0] == 3 && more).then_some(rs[0]),
    ));
    assert_eq!(r.unwrap(), Some(3));
    let r = block(paged(
        "l",
        10,
        0usize,
        |k| async move { Ok((vec![k], Some(k))) },
        |_, _| None::<()>,
    ));
    assert!(r.unwrap_err().to_string().contains("the page just read"));
    // Issue 17 item 6: a server that ignores the paging parameter answers the first page
    // for every cursor: not understood, never a listing of the first page alone.
    let r = block(paged(
        "l",
        10,
        0usize,
        |k| async move { Ok((vec![1, 2], (k < 3).then_some(k + 1))) },
        |_, _| None::<()>,
    ));
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("repeats the page before it"),
        "a repeated page"
    );
}

#[test]
fn a_404_means_gone_and_nothing_else_does() {
    use crate::targets::{FailKind, Failure};
    let fail = |kind| {
        OpError::Call(Failure {
            kind,
            status: None,
            message: "m".into(),
            latency_ms: 0,
            attempts: 1,
            outcome: crate::targets::Outcome::NotApplied,
        })
    };
    assert_eq!(block(gone_on_404(async { Ok(1) })).unwrap(), Some(1));
    assert_eq!(
        block(gone_on_404(async {
            Err::<i32, _>(fail(FailKind::NotFound))
        }))
        .unwrap(),
        None
    );
    assert!(
        block(gone_on_404(async {
            Err::<i32, _>(fail(FailKind::Permanent))
        }))
        .is_err()
    );
    let nu = OpError::from(NotUnderstood {
        what: "w".into(),
        seen: "s".into(),
    });
    assert!(block(gone_on_404(async { Err::<i32, _>(nu) })).is_err());
}

mod evidence_rules {
    use super::super::evidence::*;
    use serde_json::{Value, json};

    fn id_of(_: Option<&str>, v: &Value) -> Option<String> {
        v.get("id").and_then(super::super::id)
    }

    fn ev() -> Evidence<'static> {
        Evidence {
            what: "the listing",
            expected: "objects with an id",
            pin_key: "groups_at",
            id_of: &id_of,
        }
    }

    #[test]
    fn one_array_or_agreeing_arrays_or_none_by_empty_arrays() {
        let v = json!({"response": [{"id": 1}]});
        let r = records(&v, &ev(), At::Unknown).unwrap();
        assert_eq!((r.arrays[0].path.as_str(), r.at), ("response", Found::Seen));
        let v = json!({"a": [{"id": 1}, {"id": 2}], "b": {"c": [{"id": 2}, {"id": 1}]}});
        let r = records(&v, &ev(), At::Unknown).unwrap();
        assert_eq!(r.arrays.len(), 2);
        let v = json!({"a": [{"id": 1}], "b": [{"id": 2}]});
        assert!(records(&v, &ev(), At::Unknown).is_err());
        // An array holding a record and an item that is none: not the same records.
        let v = json!({"a": [{"id": 1}], "b": [{"id": 1}, {"x": 2}]});
        assert!(records(&v, &ev(), At::Unknown).is_err());
        let v = json!({"status": "success", "x": {"y": []}});
        let r = records(&v, &ev(), At::Unknown).unwrap();
        assert!(r.none);
        assert_eq!(r.at, Found::EmptyArrays);
        // Two levels deep at most for "none"; no array at all is not understood.
        assert!(
            records(
                &json!({"status": "success", "x": {"y": {"z": []}}}),
                &ev(),
                At::Unknown
            )
            .is_err()
        );
        let e = records(&json!({"status": "success"}), &ev(), At::Unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no array") && e.contains("groups_at"), "{e}");
    }

    #[test]
    fn a_known_path_is_the_only_place_read() {
        let v = json!({"status": "success", "a": [], "b": [{"id": 1}]});
        let r = records(&v, &ev(), At::Learned("a")).unwrap();
        assert!(r.none);
        let r = records(&v, &ev(), At::Pinned("b")).unwrap();
        assert_eq!(r.arrays[0].items.len(), 1);
        assert!(records(&v, &ev(), At::Learned("c")).is_err());
        assert!(records(&v, &ev(), At::Learned("a.b")).is_err());
        assert!(records(&json!({"a": []}), &ev(), At::Learned("a")).is_err());
    }

    #[test]
    fn signs_of_more_pages() {
        let v = json!({"status": "success", "response": [{"id": 1}]});
        assert_eq!(more_pages(&v, Some("response"), 1), More::No);
        let v = json!({"response": [{"id": 1}], "total": 1, "page": 1});
        assert_eq!(more_pages(&v, Some("response"), 1), More::No);
        let v = json!({"response": [{"id": 1}], "total": 3, "page": 1});
        assert_eq!(
            more_pages(&v, Some("response"), 1),
            More::Page {
                key: "page".into(),
                page: 2
            }
        );
        // Signs in the object that holds the records, or in its meta/links.
        let v = json!({"response": {"groups": [{"id": 1}], "pagination": {"current_page": "2", "last_page": 3}}});
        assert_eq!(
            more_pages(&v, Some("response.groups"), 5),
            More::Page {
                key: "current_page".into(),
                page: 3
            }
        );
        let v = json!({"response": [{"id": 1}], "links": {"next": "/x?p=2"}});
        assert!(matches!(
            more_pages(&v, Some("response"), 1),
            More::Unreadable(_)
        ));
        let v = json!({"response": [{"id": 1}], "count": 9});
        assert!(matches!(
            more_pages(&v, Some("response"), 1),
            More::Unreadable(s) if s.contains("count = 9")
        ));
        let v = json!({"response": [{"id": 1}], "next": null, "nextPage": false});
        assert_eq!(more_pages(&v, Some("response"), 1), More::No);
    }
}
