//! `[source.ldap]` against a real OpenLDAP (`slapd.rs`): the directory drives each kind
//! through initial / no-op (0 requests) / churn / a rename with `modrdn` / a changed
//! `mail`; the shapes of groups (groupOfNames, posixGroup, nested with a cycle, a member
//! without mail, routes); and every way a read can fail (exit 2, nothing sent).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use ldap3::Mod;

use crate::conformance::{count_ok, summary};
use crate::fakes::Fake;
use crate::harness::*;
use crate::slapd::*;

/// A test environment whose source is the directory of `slapd`.
pub struct LdapEnv {
    pub env: Env,
    pub slapd: Slapd,
}

impl LdapEnv {
    /// Starts slapd with `ldif` and writes a config reading it (StartTLS, the test CA,
    /// pages of 3 entries so that every read spans pages) plus `ldap_extra` lines in
    /// `[source.ldap]` and `top_extra` at the top.
    pub fn new(fake: Arc<dyn Fake>, ldif: &str, tls: Tls) -> LdapEnv {
        let env = Env::new(fake);
        let slapd = Slapd::start(ldif, tls);
        let e = LdapEnv { env, slapd };
        e.config("", "");
        e
    }

    /// Rewrites the config: `top` before `[safety]`, `ldap` inside `[source.ldap]`
    /// (`key = REMOVE` drops a default).
    pub fn config(&self, top: &str, ldap: &str) {
        self.config_routes(top, ldap, "");
    }

    /// [`LdapEnv::config`] with `routes` (TOML) after `[source.ldap]`.
    pub fn config_routes(&self, top: &str, ldap: &str, routes: &str) {
        let pw = self.env.path("ldap.pw");
        std::fs::write(&pw, format!("{READER_PW}\n")).unwrap();
        set_mode_600(&pw);
        let mut lines: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in [
            ("url", format!("{:?}", self.slapd.url())),
            ("bind_dn", format!("{READER_DN:?}")),
            ("password_file", "\"ldap.pw\"".to_string()),
            (
                "ca_file",
                format!("{:?}", self.slapd.ca_file.display().to_string()),
            ),
            ("groups_base", format!("\"ou=groups,{SUFFIX}\"")),
            ("people_base", format!("\"ou=people,{SUFFIX}\"")),
            ("page_size", "3".to_string()),
        ] {
            lines.insert(k.to_string(), v);
        }
        if self.env.fake.source_id("probe@example.com").is_some() {
            lines.insert("ids".into(), format!("{{ {T} = \"employeeNumber\" }}"));
        }
        for l in ldap.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = l.split_once('=').expect("key = value");
            if v.trim() == "REMOVE" {
                lines.remove(k.trim());
            } else {
                lines.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let mut ldap_block = String::from("[source.ldap]\n");
        for (k, v) in lines {
            ldap_block += &format!("{k} = {v}\n");
        }
        ldap_block += routes;
        let text = format!(
            "state = \"state/rostersync.db\"\n{top}\n\n[safety]\nmax_removals = 1000\n\
             max_removal_ratio = 1.0\n\n{ldap_block}\n{}\n",
            self.env.fake.target_toml(T)
        );
        std::fs::write(self.env.config_path(), text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.env.run(args)
    }
}

fn set_mode_600(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn uid(i: usize) -> String {
    format!("agent{i:03}")
}

/// People 1..=n with mail agentNNN@example.com (registered on the fake) and, where the
/// kind takes ids from the source, employeeNumber = that id.
pub fn people_ldif(fake: &dyn Fake, n: usize) -> String {
    let mut s = String::new();
    for i in 1..=n {
        let mail = email(i);
        fake.add_user(&mail);
        let id = fake.source_id(&mail);
        s += &person(&uid(i), Some(&mail), id.as_deref());
    }
    s
}

fn members(ids: &[usize]) -> Vec<String> {
    ids.iter().map(|i| person_dn(&uid(*i))).collect()
}

fn four_groups_ldif() -> String {
    group_of_names("Tier 1 Support", &members(&[1, 2, 3]))
        + &group_of_names("Tier 2 Support", &members(&[3, 4]))
        + &group_of_names("Billing Escalations", &members(&[5]))
        + &group_of_names("Night Shift", &members(&[1, 6, 7]))
}

fn want(groups: &[(&str, &[usize])]) -> BTreeMap<String, BTreeSet<String>> {
    groups
        .iter()
        .map(|(n, m)| (n.to_string(), m.iter().map(|i| email(*i)).collect()))
        .collect()
}

/// A modification of the directory, as the root DN.
fn modify(slapd: &Slapd, dn: String, mods: Vec<Mod<String>>) {
    slapd.admin(move |l| {
        Box::pin(async move {
            l.modify(&dn, mods)
                .await
                .expect("modify")
                .success()
                .expect("modify applied");
        })
    });
}

fn set(v: &[&str]) -> std::collections::HashSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The directory drives one kind: initial sync, a no-op with 0 requests, churn with one
/// membership write per changed group, a group renamed with modrdn (renamed at the target,
/// not re-created), a person's mail changed.
pub fn directory_drives(fake: Arc<dyn Fake>) {
    let ldif = people_ldif(&*fake, 10) + &four_groups_ldif();
    let e = LdapEnv::new(fake.clone(), &ldif, Tls::Yes);

    let r = e.run(&["sync"]).expect(0);
    let mut expected = want(&[
        ("Tier 1 Support", &[1, 2, 3]),
        ("Tier 2 Support", &[3, 4]),
        ("Billing Escalations", &[5]),
        ("Night Shift", &[1, 6, 7]),
    ]);
    assert_eq!(fake.groups(), expected, "{}", r.stderr);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.create_request()),
        4,
        "{}",
        summary(&reqs)
    );

    // No-op: the directory is read, its canonical source is unchanged: 0 requests.
    fake.clear_requests();
    let r = e.run(&["sync"]).expect(0);
    assert!(fake.requests().is_empty(), "{}", summary(&fake.requests()));
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);

    // Churn: one add and one removal in Tier 1, one add in Billing.
    modify(
        &e.slapd,
        group_dn("Tier 1 Support"),
        vec![
            Mod::Add("member".into(), set(&[&person_dn(&uid(8))])),
            Mod::Delete("member".into(), set(&[&person_dn(&uid(3))])),
        ],
    );
    modify(
        &e.slapd,
        group_dn("Billing Escalations"),
        vec![Mod::Add("member".into(), set(&[&person_dn(&uid(9))]))],
    );
    fake.clear_requests();
    let r = e.run(&["sync"]).expect(0);
    expected = want(&[
        ("Tier 1 Support", &[1, 2, 8]),
        ("Tier 2 Support", &[3, 4]),
        ("Billing Escalations", &[5, 9]),
        ("Night Shift", &[1, 6, 7]),
    ]);
    assert_eq!(fake.groups(), expected, "{}", r.stderr);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.membership_write()),
        2,
        "one membership write per changed group: {}",
        summary(&reqs)
    );
    assert_eq!(count_ok(&reqs, &fake.create_request()), 0);

    // A rename in the directory (modrdn keeps entryUUID): renamed, not re-created.
    e.slapd.admin(|l| {
        Box::pin(async move {
            l.modifydn(&group_dn("Night Shift"), "cn=Night Crew", true, None)
                .await
                .expect("modrdn")
                .success()
                .expect("modrdn applied");
        })
    });
    fake.clear_requests();
    let r = e.run(&["sync"]).expect(0);
    if fake.kind() == "teams" {
        // The teams API cannot rename: the team keeps its name (with a warning), and is
        // neither deleted nor re-created.
        assert!(r.stderr.contains("cannot rename"), "{}", r.stderr);
    } else {
        let moved = expected.remove("Night Shift").unwrap();
        expected.insert("Night Crew".into(), moved);
    }
    assert_eq!(fake.groups(), expected, "{}", r.stderr);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.create_request()),
        0,
        "a rename is not a create: {}",
        summary(&reqs)
    );
    let mut names = fake.all_group_names();
    names.sort();
    let mut want_names: Vec<&String> = expected.keys().collect();
    want_names.sort();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        want_names,
        "renamed in place, nothing deleted or duplicated"
    );

    // A person's mail changed: the old address leaves, the new one joins.
    let new_mail = "ana.new@example.com";
    fake.add_user(new_mail);
    let mut mods = vec![Mod::Replace("mail".into(), set(&[new_mail]))];
    if let Some(id) = fake.source_id(new_mail) {
        mods.push(Mod::Replace("employeeNumber".into(), set(&[&id])));
    }
    modify(&e.slapd, person_dn(&uid(5)), mods);
    fake.clear_requests();
    let r = e.run(&["sync"]).expect(0);
    let billing = expected.get_mut("Billing Escalations").unwrap();
    billing.remove(&email(5));
    billing.insert(new_mail.to_string());
    assert_eq!(fake.groups(), expected, "{}", r.stderr);
}

macro_rules! directory_drives {
    ($name:ident, $ctor:expr) => {
        #[test]
        fn $name() {
            #[allow(unused_imports)]
            use crate::fakes::*;
            directory_drives($ctor);
        }
    };
}

directory_drives!(drives_maestroqa, maestro::FakeMaestro::start());
directory_drives!(drives_teams, teams::FakeTeams::start());
directory_drives!(drives_assign_group, deepcall::FakeDeepCall::start());
directory_drives!(drives_kazoo, kazoo::FakeKazoo::start_with_ids_in_source());

/// posixGroup/memberUid, nested groups with a cycle (each person once, the path shown by
/// `explain`), a member without mail (skipped, the warning names the entry), a member
/// that is not in the directory, nested = false, routes (and `check` naming a group that
/// goes nowhere). One slapd for all of them.
#[test]
fn shapes_of_groups() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let mut ldif = people_ldif(&*fake, 9);
    ldif += &person("nomail", None, None);
    ldif += &group_of_names(
        "cc-voice-outer",
        &[
            person_dn(&uid(1)),
            group_dn("cc-voice-inner"),
            person_dn("nomail"),
            format!("uid=gone,ou=people,{SUFFIX}"),
        ],
    );
    // inner -> leaf -> outer: a cycle back to the synced group.
    ldif += &group_of_names(
        "cc-voice-inner",
        &[person_dn(&uid(2)), group_dn("cc-voice-leaf")],
    );
    ldif += &group_of_names(
        "cc-voice-leaf",
        &[
            person_dn(&uid(3)),
            person_dn(&uid(1)),
            group_dn("cc-voice-outer"),
        ],
    );
    ldif += &posix_group("cc-chat", 5000, &["agent004", "agent005", "nobody"]);
    ldif += &format!(
        "dn: cn=cc-unique,ou=groups,{SUFFIX}\nobjectClass: groupOfUniqueNames\ncn: cc-unique\n\
         uniqueMember: {}#'0101'B\nuniqueMember: {}\n\n",
        person_dn(&uid(6)),
        person_dn(&uid(7))
    );
    // A group with two names, a person with two mails: errors naming the entry.
    ldif += &group_of_names("cc-two-names", &members(&[1])).replace(
        "cn: cc-two-names\n",
        "cn: cc-two-names\ncn: cc-second-name\n",
    );
    ldif += &person("twomail", Some("a@example.com"), None).replace(
        "mail: a@example.com\n",
        "mail: a@example.com\nmail: b@example.com\n",
    );
    ldif += &group_of_names("cc-twomail", &[person_dn("twomail")]);
    let e = LdapEnv::new(fake.clone(), &ldif, Tls::Yes);
    // Only the outer group is synced; inner and leaf count through it.
    let only = "groups_filter = \"(cn=cc-voice-outer)\"";

    e.config("", &format!("{only}\nmember_attribute = \"member\""));
    let r = e.run(&["sync", "--dry-run"]).expect(0);
    assert!(
        r.stderr.contains(&person_dn("nomail")) && r.stderr.contains("has no mail"),
        "the member without mail is named: {}",
        r.stderr
    );
    assert!(r.stderr.contains("uid=gone"), "{}", r.stderr);
    let r = e.run(&["sync"]).expect(0);
    assert_eq!(
        fake.groups(),
        want(&[("cc-voice-outer", &[1, 2, 3])]),
        "nested people counted once, the cycle stopped: {}",
        r.stderr
    );
    // The path by which a nested member came is shown by explain.
    let x = e.run(&["explain", &email(3)]).expect(0);
    assert!(
        x.stdout.contains("cn=cc-voice-inner") && x.stdout.contains("cn=cc-voice-leaf"),
        "{}",
        x.stdout
    );

    // posixGroup with memberUid
    e.config(
        "",
        "groups_filter = \"(cn=cc-chat)\"\nmember_attribute = \"memberUid\"",
    );
    let r = e.run(&["sync"]).expect(0);
    assert_eq!(
        fake.groups().get("cc-chat"),
        want(&[("cc-chat", &[4, 5])]).get("cc-chat"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("\"nobody\""), "{}", r.stderr);

    // groupOfUniqueNames with uniqueMember (the optional #'0101'B uid dropped)
    e.config(
        "",
        "groups_filter = \"(cn=cc-unique)\"\nmember_attribute = \"uniqueMember\"",
    );
    let r = e.run(&["sync"]).expect(0);
    assert_eq!(
        fake.groups().get("cc-unique"),
        want(&[("cc-unique", &[6, 7])]).get("cc-unique"),
        "{}",
        r.stderr
    );

    // Two values where one is needed: exit 2, the entry named, nothing sent.
    for (filter, needle) in [
        ("(cn=cc-two-names)", "cn has 2 values"),
        ("(cn=cc-twomail)", "mail has 2 values"),
    ] {
        e.config("", &format!("groups_filter = {filter:?}"));
        fake.clear_requests();
        let r = e.run(&["sync"]).expect(2);
        assert!(r.stderr.contains(needle), "{}", r.stderr);
        assert!(
            r.stderr.contains("cn=cc-two-names") || r.stderr.contains("uid=twomail"),
            "{}",
            r.stderr
        );
        assert!(fake.requests().is_empty(), "nothing sent");
    }

    // nested = false: only the direct people
    e.config("", &format!("{only}\nnested = false"));
    let r = e.run(&["sync", "--dry-run"]).expect(0);
    assert!(r.stdout.contains("- agent002@example.com"), "{}", r.stdout);
    assert!(r.stdout.contains("- agent003@example.com"), "{}", r.stdout);

    // a depth limit reached is a source error, never a shorter group
    e.config("", &format!("{only}\nmax_depth = 1"));
    fake.clear_requests();
    let r = e.run(&["sync"]).expect(2);
    assert!(r.stderr.contains("max_depth = 1"), "{}", r.stderr);
    assert!(fake.requests().is_empty(), "nothing sent");

    // routes: cc-voice-* to the target; cc-chat matches no route and goes nowhere
    e.config_routes(
        "",
        "groups_filter = \"(|(cn=cc-voice-outer)(cn=cc-chat))\"",
        &format!("\n[[source.ldap.route]]\nfilter = \"(cn=cc-voice-*)\"\ntargets = [\"{T}\"]\n"),
    );
    let c = e.run(&["check"]).expect(0);
    assert!(
        c.stdout.contains("\"cc-chat\"") && c.stdout.contains("matches no route"),
        "{}",
        c.stdout
    );
    let r = e.run(&["sync", "--dry-run"]).expect(0);
    assert!(!r.stdout.contains("cc-chat"), "{}", r.stdout);
}

/// A TCP proxy to `to` that forwards the server's first `cut` bytes, then drops the
/// connection: the server going away in the middle of an answer.
fn cutting_proxy(to: u16, cut: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // One connection per load (bounded: the test makes at most a few).
        for client in l.incoming().take(4) {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)) else {
                return;
            };
            let mut c2 = client.try_clone().unwrap();
            let mut s2 = server.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            let mut sent = 0;
            let mut buf = [0u8; 1024];
            while sent < cut {
                match server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let n = n.min(cut - sent);
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                }
            }
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = server.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

/// Every way a read fails is exit 2 with nothing sent: a wrong password, a size limit, a
/// referral, the server stopped mid-read, a filter that matches nothing (the empty-source
/// rule), StartTLS refused. And ldaps:// works, `check` says what it read.
#[test]
fn failures_send_nothing() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let mut ldif = people_ldif(&*fake, 30);
    for g in 0..6 {
        ldif += &group_of_names(
            &format!("cc-team-{g}"),
            &members(&[g * 5 + 1, g * 5 + 2, g * 5 + 3, g * 5 + 4, g * 5 + 5]),
        );
    }
    ldif += &format!(
        "dn: ou=partner,{SUFFIX}\nobjectClass: referral\nobjectClass: extensibleObject\n\
         ou: partner\nref: ldap://127.0.0.1:9/ou=partner,dc=other,dc=com\n\n"
    );
    let e = LdapEnv::new(fake.clone(), &ldif, Tls::Yes);
    let nothing_sent = |r: &Run, what: &str, needle: &str| {
        assert_eq!(r.code, 2, "{what}: exit 2\n{}\n{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(needle),
            "{what}: {needle:?} in\n{}",
            r.stderr
        );
        assert!(fake.requests().is_empty(), "{what}: nothing sent");
        assert!(
            !r.stderr.contains(READER_PW),
            "{what}: no secret in the output"
        );
    };

    // It works, over StartTLS and over ldaps://, and check says what it read.
    let c = e.run(&["check"]).expect(0);
    assert!(
        c.stdout.contains("6 groups, 30 memberships"),
        "{}",
        c.stdout
    );
    e.config("", &format!("url = {:?}", e.slapd.ldaps_url()));
    e.run(&["check"]).expect(0);
    fake.clear_requests();

    // A wrong password.
    std::fs::write(e.env.path("wrong.pw"), "not-the-password\n").unwrap();
    set_mode_600(&e.env.path("wrong.pw"));
    e.config("", "password_file = \"wrong.pw\"");
    let r = e.run(&["sync"]);
    nothing_sent(&r, "wrong password", "refused the bind");
    let c = e.run(&["check"]);
    assert_eq!(c.code, 2, "check cannot bind: exit 2\n{}", c.stderr);

    // A size limit hit (the server cuts this account at 3 entries).
    std::fs::write(e.env.path("limited.pw"), LIMITED_PW).unwrap();
    set_mode_600(&e.env.path("limited.pw"));
    e.config(
        "",
        &format!("bind_dn = {LIMITED_DN:?}\npassword_file = \"limited.pw\""),
    );
    let r = e.run(&["sync"]);
    nothing_sent(&r, "size limit", "limit");

    // A referral under the base.
    e.config("", &format!("groups_base = {SUFFIX:?}"));
    let r = e.run(&["sync"]);
    nothing_sent(&r, "referral", "referral");

    // The server gone in the middle of an answer (clear text, so the cut is exact).
    for cut in [600, 2500] {
        let port = cutting_proxy(e.slapd.port, cut);
        e.config(
            "",
            &format!("url = \"ldap://127.0.0.1:{port}\"\ntls = \"none\"\nca_file = REMOVE"),
        );
        let r = e.run(&["sync"]);
        nothing_sent(&r, &format!("cut after {cut} bytes"), "error in the source");
    }

    // A server that accepts and never answers: the connection's limit, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        drop(held);
    });
    e.config(
        "",
        &format!("url = \"ldap://127.0.0.1:{port}\"\ntimeout = \"500ms\""),
    );
    let r = e.run(&["sync"]);
    nothing_sent(&r, "a silent server", &format!("127.0.0.1:{port}"));
    assert!(
        r.stderr.contains("timeout") || r.stderr.contains("did not complete"),
        "{}",
        r.stderr
    );

    // A filter that matches nothing: the empty-source rule.
    e.config("", "groups_filter = \"(cn=no-such-group)\"");
    let r = e.run(&["sync"]);
    nothing_sent(&r, "empty", "remove everybody");
    e.config(
        "allow_empty_source = true",
        "groups_filter = \"(cn=no-such-group)\"",
    );
    e.run(&["sync", "--dry-run"]).expect(0);

    // The server stopped: a connection refused.
    let mut e = e;
    e.slapd.stop();
    e.config("", "");
    let r = e.run(&["sync"]);
    nothing_sent(&r, "server stopped", "cannot connect");
}

/// A server without TLS refuses StartTLS: exit 2, nothing sent, never a read in the clear
/// unless `tls = "none"` is written.
#[test]
fn starttls_refused_is_an_error_unless_none_is_written() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let ldif = people_ldif(&*fake, 3) + &group_of_names("cc-a", &members(&[1, 2, 3]));
    let e = LdapEnv::new(fake.clone(), &ldif, Tls::No);
    e.config("", "ca_file = REMOVE");
    let r = e.run(&["sync"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("StartTLS"), "{}", r.stderr);
    assert!(fake.requests().is_empty());
    e.config("", "ca_file = REMOVE\ntls = \"none\"");
    e.run(&["sync"]).expect(0);
    assert_eq!(fake.groups(), want(&[("cc-a", &[1, 2, 3])]));
}

/// Config mistakes stop the program with exit 2 before any read, naming the key.
#[test]
fn config_mistakes_name_the_key() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let e = LdapEnv::new(fake, &group_of_names("cc-a", &[person_dn("x")]), Tls::Yes);
    for (ldap, needle) in [
        ("url = \"http://127.0.0.1\"", "source.ldap.url"),
        ("tls = \"ldaps\"", "source.ldap.tls"),
        (
            "groups_filter = \"(cn=unclosed\"",
            "source.ldap.groups_filter",
        ),
        (
            "member_attribute = \"owner\"",
            "source.ldap.member_attribute",
        ),
        ("ids = { nosuch = \"employeeNumber\" }", "source.ldap.ids"),
        ("password_file = \"missing.pw\"", "password_file"),
        ("ca_file = \"missing.pem\"", "source.ldap.ca_file"),
        ("groups_base = REMOVE", "groups_base"),
    ] {
        e.config("", ldap);
        let r = e.run(&["check"]);
        assert_eq!(r.code, 2, "{ldap}: {}", r.stderr);
        assert!(
            r.stderr.contains(needle),
            "{ldap}: {needle:?} in {}",
            r.stderr
        );
    }
}

/// Runs the binary under GNU time: (exit code, wall seconds, peak RSS in MiB, stderr).
fn timed(e: &LdapEnv, args: &[&str]) -> (i32, f64, f64, String) {
    let out_file = e.env.path("time.out");
    let c = e.env.command(args);
    // LDAP_BENCH_BIN: a release build to time instead of the test's debug binary.
    let program = std::env::var_os("LDAP_BENCH_BIN").unwrap_or_else(|| c.get_program().to_owned());
    let mut t = std::process::Command::new("/usr/bin/time");
    t.arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&out_file)
        .arg(program);
    t.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let out = t.output().expect("run under /usr/bin/time");
    let measured = std::fs::read_to_string(&out_file).unwrap_or_default();
    let mut parts = measured.split_whitespace();
    let wall: f64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let kib: f64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    (
        out.status.code().unwrap_or(-1),
        wall,
        kib / 1024.0,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// BENCHMARKS.md: 10,000 people and 500 groups (20,000 memberships, 50 of the groups with
/// a nested group) read in pages of 500. Prints the wall time and peak RSS of `check` (a
/// whole read), of the initial `sync` against the MaestroQA fake, and of the no-op `sync`
/// (the directory read, the shortcut taken, 0 requests).
/// `cargo build --release && LDAP_BENCH_BIN=target/release/rostersync cargo test --test it
/// ldap_10k -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark: run it by name (BENCHMARKS.md)"]
fn ldap_10k_people_500_groups() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let people = 10_000;
    let mut ldif = people_ldif(&*fake, people);
    for g in 0..500 {
        // person i is in groups i % 500 and (i * 7) % 500
        let mut m: Vec<String> = (1..=people)
            .filter(|i| i % 500 == g || (i * 7) % 500 == g)
            .map(|i| person_dn(&uid(i)))
            .collect();
        if g < 50 {
            m.push(group_dn(&format!("cc-nested-{g}")));
        }
        ldif += &group_of_names(&format!("cc-team-{g:03}"), &m);
    }
    for g in 0..50 {
        ldif += &format!(
            "dn: cn=cc-nested-{g},ou=people,{SUFFIX}\nobjectClass: groupOfNames\ncn: cc-nested-{g}\nmember: {}\n\n",
            person_dn(&uid(g + 1))
        );
    }
    let started = std::time::Instant::now();
    let e = LdapEnv::new(fake.clone(), &ldif, Tls::Yes);
    eprintln!("slapadd + start: {:.1} s", started.elapsed().as_secs_f64());
    e.config("", "page_size = 500");
    let (code, wall, rss, err) = timed(&e, &["check"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("check (whole read): {wall:.2} s, peak RSS {rss:.1} MiB");
    let (code, wall, rss, err) = timed(&e, &["sync"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("initial sync (500 creates): {wall:.2} s, peak RSS {rss:.1} MiB");
    fake.clear_requests();
    let (code, wall, rss, err) = timed(&e, &["sync"]);
    assert_eq!(code, 0, "{err}");
    assert!(fake.requests().is_empty(), "no-op: 0 requests");
    eprintln!("no-op sync (read + shortcut, 0 requests): {wall:.2} s, peak RSS {rss:.1} MiB");
}

/// The daemon reads the directory on its schedule (no file to watch): a member added in
/// the directory reaches the target at a later scheduled run. The password reaches
/// neither the log nor the state database.
#[test]
fn the_daemon_reads_the_directory_on_its_schedule() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let ldif = people_ldif(&*fake, 4) + &group_of_names("cc-a", &members(&[1, 2]));
    let e = LdapEnv::new(fake.clone(), &ldif, Tls::Yes);
    e.config("[schedule]\ncron = \"* * * * * *\"\nfull_every = 0", "");
    let mut child = e.env.spawn(&["daemon"]);
    let converged = |want_members: &[usize]| {
        wait_until(std::time::Duration::from_secs(60), || {
            fake.groups() == want(&[("cc-a", want_members)])
        })
    };
    let first = converged(&[1, 2]);
    if first {
        modify(
            &e.slapd,
            group_dn("cc-a"),
            vec![Mod::Add("member".into(), set(&[&person_dn(&uid(3))]))],
        );
    }
    let second = first && converged(&[1, 2, 3]);
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = wait_until(std::time::Duration::from_secs(40), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !out {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("daemon output");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        first,
        "the first scheduled run synced the directory:\n{log}"
    );
    assert!(
        second,
        "a later scheduled run saw the directory change:\n{log}"
    );
    assert!(!log.contains(READER_PW), "no password in the log");
    assert!(
        !e.env
            .db_bytes()
            .windows(READER_PW.len())
            .any(|w| w == READER_PW.as_bytes()),
        "no password in the state database"
    );
}
