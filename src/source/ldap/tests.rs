//! The AD range reader against answers built here (slapd sends no ranges), and the small
//! pure helpers of the loader. The loader against a real slapd is in `tests/it/ldap.rs`.

use std::collections::HashMap;

use ldap3::Scope;

use super::read::{Directory, Entry, ReadError, full_values};
use super::*;

/// Active Directory's answers for one group of `n` members, at most `max` values a read
/// (AD's MaxValRange is 1,500), with a fault to inject.
struct AdGroup {
    dn: String,
    n: usize,
    max: usize,
    fault: Fault,
    /// The range reads asked for, in order.
    asked: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// The first range read comes back without any range.
    DropRange,
    /// The first range read starts somewhere else.
    Skip,
    /// A range holds fewer values than its bounds say.
    Short,
    /// The read fails (the server went away).
    Fail,
}

fn value(i: usize) -> Vec<u8> {
    format!("CN=Agent {i:05},OU=People,DC=example,DC=com").into_bytes()
}

impl AdGroup {
    fn new(n: usize, fault: Fault) -> Self {
        AdGroup {
            dn: "CN=cc-big,OU=Groups,DC=example,DC=com".into(),
            n,
            max: 1500,
            fault,
            asked: Vec::new(),
        }
    }

    /// The range starting at `low` as AD names and fills it.
    fn range(&self, low: usize) -> (String, Vec<Vec<u8>>) {
        let end = (low + self.max).min(self.n);
        let last = end == self.n;
        let name = if last {
            format!("member;range={low}-*")
        } else {
            format!("member;range={low}-{}", end - 1)
        };
        (name, (low..end).map(value).collect())
    }

    /// The group as the groups search returns it.
    fn first(&self) -> Entry {
        let mut attrs = HashMap::new();
        if self.n <= self.max {
            attrs.insert("member".to_string(), (0..self.n).map(value).collect());
        } else {
            let (name, values) = self.range(0);
            attrs.insert("member".to_string(), Vec::new());
            attrs.insert(name, values);
        }
        Entry {
            dn: self.dn.clone(),
            attrs,
        }
    }
}

impl Directory for AdGroup {
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        _filter: &str,
        attrs: &[String],
    ) -> Result<Vec<Entry>, ReadError> {
        assert_eq!(base, self.dn);
        assert_eq!(scope, Scope::Base);
        let [ask] = attrs else {
            panic!("one ranged attribute asked for, got {attrs:?}")
        };
        self.asked.push(ask.clone());
        let low: usize = ask
            .strip_prefix("member;range=")
            .and_then(|r| r.strip_suffix("-*"))
            .and_then(|l| l.parse().ok())
            .expect("asks member;range=N-*");
        let first_read = self.asked.len() == 1;
        let mut attrs = HashMap::new();
        match self.fault {
            Fault::Fail if first_read => {
                return Err(ReadError::Result {
                    base: base.into(),
                    filter: "(objectClass=*)".into(),
                    rc: 52,
                    text: "unavailable".into(),
                });
            }
            Fault::DropRange if first_read => {
                attrs.insert("objectclass".to_string(), vec![b"group".to_vec()]);
            }
            Fault::Skip if first_read => {
                let (name, values) = self.range(low + 10);
                attrs.insert(name, values);
            }
            Fault::Short if first_read => {
                let (name, mut values) = self.range(low);
                values.pop();
                if name.ends_with('*') {
                    // A last range has no count to check; shorten an earlier one instead.
                    panic!("Short needs a group with at least three ranges");
                }
                attrs.insert(name, values);
            }
            _ => {
                let (name, values) = self.range(low);
                attrs.insert(name, values);
            }
        }
        Ok(vec![Entry {
            dn: self.dn.clone(),
            attrs,
        }])
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// Reads the whole group; gives the values and the range reads made.
fn read(n: usize, fault: Fault) -> (Result<Vec<Vec<u8>>, ReadError>, Vec<String>) {
    let mut dir = AdGroup::new(n, fault);
    let first = dir.first();
    let got = block_on(full_values(&mut dir, &first, "member"));
    (got, dir.asked)
}

#[test]
fn ranges_are_read_to_the_end_at_every_size() {
    for (n, reads) in [
        (1499, 0),
        (1500, 0),
        (1501, 1),
        (4000, 2),
        (4500, 2),
        (4501, 3),
    ] {
        let (got, asked) = read(n, Fault::None);
        let got = got.unwrap_or_else(|e| panic!("{n} members: {e}"));
        assert_eq!(got.len(), n, "{n} members: every value read");
        let want: Vec<Vec<u8>> = (0..n).map(value).collect();
        assert_eq!(got, want, "{n} members: in order, none twice");
        assert_eq!(asked.len(), reads, "{n} members: range reads {asked:?}");
    }
    let (_, asked) = read(4000, Fault::None);
    assert_eq!(asked, ["member;range=1500-*", "member;range=3000-*"]);
}

#[test]
fn a_range_that_cannot_be_completed_is_an_error_never_a_shorter_group() {
    for fault in [Fault::DropRange, Fault::Skip, Fault::Short, Fault::Fail] {
        let (got, _) = read(4000, fault);
        let e = got.expect_err("a broken range is an error");
        let text = e.to_string();
        match fault {
            Fault::Fail => assert!(text.contains("unavailable"), "{text}"),
            _ => {
                assert!(matches!(e, ReadError::Range { .. }), "{text}");
                assert!(text.contains("CN=cc-big"), "names the group: {text}");
            }
        }
    }
}

#[test]
fn plain_values_beside_a_range_are_not_understood() {
    let mut dir = AdGroup::new(3000, Fault::None);
    let mut first = dir.first();
    first
        .attrs
        .insert("member".to_string(), vec![value(99_999)]);
    let e = block_on(full_values(&mut dir, &first, "member")).expect_err("not understood");
    assert!(e.to_string().contains("not understood"), "{e}");
}

#[test]
fn a_group_without_the_attribute_has_no_members() {
    let mut dir = AdGroup::new(0, Fault::None);
    let first = Entry {
        dn: dir.dn.clone(),
        attrs: HashMap::from([("cn".to_string(), vec![b"cc-empty".to_vec()])]),
    };
    let got = block_on(full_values(&mut dir, &first, "member")).expect("no values");
    assert!(got.is_empty());
    assert!(dir.asked.is_empty());
}

#[test]
fn dns_compare_in_one_form() {
    assert_eq!(
        norm_dn("CN=Ana Silva, OU=People ,DC=Example,DC=com"),
        "cn=ana silva,ou=people,dc=example,dc=com"
    );
    assert_eq!(
        strip_unique_uid("uid=ana,ou=people,dc=example,dc=com#'0101'B"),
        "uid=ana,ou=people,dc=example,dc=com"
    );
    assert_eq!(strip_unique_uid("cn=a#b,dc=x"), "cn=a#b,dc=x");
}

#[test]
fn object_guid_reads_as_ad_writes_it() {
    // AD shows {00112233-4455-6677-8899-aabbccddeeff} for these bytes.
    let bytes = [
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    assert_eq!(
        key_text("objectGUID", &bytes),
        "00112233-4455-6677-8899-aabbccddeeff"
    );
    assert_eq!(key_text("entryUUID", b"abc-1"), "abc-1");
    assert_eq!(key_text("other", &[0xff, 0x00]), "ff00");
}

/// An Active Directory with one synced group of `n` members (ranged past 1,500) and its
/// people, for the whole loader.
struct Ad {
    group: AdGroup,
    people: usize,
}

fn ad_config() -> LdapSource {
    LdapSource {
        url: "ldaps://dc1.example.com".into(),
        tls: crate::config::LdapTls::Ldaps,
        bind_dn: None,
        password: None,
        ca_file: None,
        groups_base: "OU=Groups,DC=example,DC=com".into(),
        groups_filter: "(objectClass=group)".into(),
        member_attribute: "member".into(),
        people_base: "OU=People,DC=example,DC=com".into(),
        people_filter: "(objectClass=person)".into(),
        email_attribute: "mail".into(),
        name_attribute: "cn".into(),
        key_attribute: "objectGUID".into(),
        uid_attribute: "uid".into(),
        nested: true,
        max_depth: 10,
        page_size: 500,
        timeout: std::time::Duration::from_secs(5),
        ids: Default::default(),
        routes: Vec::new(),
    }
}

impl Directory for Ad {
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<Entry>, ReadError> {
        if scope == Scope::Base {
            return self.group.search(base, scope, filter, attrs).await;
        }
        if base.starts_with("OU=Groups") {
            let mut g = self.group.first();
            g.attrs.insert("cn".into(), vec![b"cc-big".to_vec()]);
            g.attrs.insert("objectguid".into(), vec![vec![0xab; 16]]);
            g.attrs
                .insert("objectclass".into(), vec![b"group".to_vec()]);
            return Ok(vec![g]);
        }
        Ok((0..self.people)
            .map(|i| Entry {
                dn: String::from_utf8(value(i)).unwrap(),
                attrs: HashMap::from([
                    ("objectclass".to_string(), vec![b"user".to_vec()]),
                    (
                        "mail".to_string(),
                        vec![format!("agent{i:05}@example.com").into_bytes()],
                    ),
                ]),
            })
            .collect())
    }
}

#[test]
fn a_group_past_1500_members_keeps_every_member_through_the_loader() {
    for n in [1499, 1500, 1501, 4000] {
        let mut dir = Ad {
            group: AdGroup::new(n, Fault::None),
            people: n,
        };
        let d = block_on(gather(&mut dir, &ad_config(), &["t"], false)).expect("loads");
        let g = &d.groups["abababab-abab-abab-abab-abababababab"];
        assert_eq!(g.name, "cc-big");
        assert_eq!(g.members.len(), n, "{n} members, every one");
        assert_eq!(&*g.members[0], "agent00000@example.com");
    }
    // A range that fails stops the load: never a shorter source.
    let mut dir = Ad {
        group: AdGroup::new(4000, Fault::DropRange),
        people: 4000,
    };
    let e = block_on(gather(&mut dir, &ad_config(), &["t"], false)).expect_err("fails");
    assert!(
        e.to_string().contains("could not be read to the end"),
        "{e}"
    );
}
