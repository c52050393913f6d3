//! Table-driven tests: `check` for sources that load, `check_err` for sources that don't.

use std::fmt::Write as _;
use std::path::Path;

use super::*;
use crate::model::Desired;

const TARGETS: &[&str] = &["maestro", "dixa", "deepcall", "kazoo"];

/// Writes `files` (relative path, contents) into a fresh temporary directory.
fn write(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// A compact text form of a loaded source, with paths relative to `root`.
fn render(d: &Desired, root: &Path) -> String {
    let at = |o: &Origin| {
        let file = o
            .file
            .strip_prefix(root)
            .unwrap_or(&o.file)
            .display()
            .to_string();
        match o.line {
            Some(l) => format!("{file}:{l}"),
            None => file,
        }
    };
    let mut out = String::new();
    for p in d.people.values() {
        let ids: Vec<_> = p.ids.iter().map(|(t, id)| format!("{t}:{id}")).collect();
        write!(out, "person {}", p.email).unwrap();
        if let Some(name) = &p.name {
            write!(out, " {name:?}").unwrap();
        }
        if !ids.is_empty() {
            write!(out, " ids={}", ids.join(",")).unwrap();
        }
        writeln!(out, " @{}", at(&p.origin)).unwrap();
    }
    for g in d.groups.values() {
        write!(out, "group {} {:?} @{}", g.key, g.name, at(&g.origin)).unwrap();
        if !g.owners.is_empty() {
            write!(out, " owners={}", g.owners.join(",")).unwrap();
        }
        if let Some(rc) = &g.receive_call {
            write!(out, " receive_call={}", rc.join(",")).unwrap();
        }
        if let Some(t) = &g.targets {
            write!(out, " targets={}", t.join(",")).unwrap();
        }
        writeln!(out).unwrap();
        assert_eq!(
            g.members.len(),
            g.member_origins.len(),
            "members and member_origins agree"
        );
        for (m, o) in g.members.iter().zip(&g.member_origins) {
            writeln!(out, "  {m} @{}", at(o)).unwrap();
        }
    }
    out
}

/// Trims every line and drops blank ones, so expectations can be indented.
fn normalize(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `files` (from `load`, a path relative to the directory, "" for the directory
/// itself) and compares the result with `expected`.
fn check(name: &str, load_path: &str, files: &[(&str, &str)], allow_empty: bool, expected: &str) {
    let dir = write(files);
    let path = dir.path().join(load_path);
    let desired = match load(&path, TARGETS, allow_empty) {
        Ok(d) => d,
        Err(e) => panic!("case {name:?}: unexpected errors:\n{e}"),
    };
    assert_eq!(
        normalize(&render(&desired, dir.path())),
        normalize(expected),
        "case {name:?}"
    );
}

/// Files of a case: (path relative to the temporary directory, contents).
type Files<'a> = &'a [(&'a str, &'a str)];

/// A good case: name, path to load ("" = the directory), files, allow_empty, expected.
type GoodCase<'a> = (&'a str, &'a str, Files<'a>, bool, &'a str);

/// A bad case: name, path to load ("" = the directory), files, expected errors.
type BadCase<'a> = (&'a str, &'a str, Files<'a>, &'a [Expected<'a>]);

/// An expected error: file (relative, "" for the directory), line, and the texts the
/// message must contain (at least the offending value).
type Expected<'a> = (&'a str, Option<usize>, &'a [&'a str]);

/// Loads `files` and asserts it fails with exactly the `expected` errors (in any order),
/// and that Display shows each as `path:line: message`.
fn check_err(name: &str, load_path: &str, files: &[(&str, &str)], expected: &[Expected]) {
    let dir = write(files);
    let path = dir.path().join(load_path);
    let err = match load(&path, TARGETS, false) {
        Ok(d) => panic!(
            "case {name:?}: loaded, expected errors:\n{}",
            render(&d, dir.path())
        ),
        Err(e) => e,
    };
    let shown = err.to_string();
    let listing = err
        .errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        err.errors.len(),
        expected.len(),
        "case {name:?}: wrong number of errors:\n{listing}"
    );
    assert_eq!(err.total, expected.len(), "case {name:?}");
    for (file, line, texts) in expected {
        let want = dir.path().join(file);
        let found = err.errors.iter().find(|e| {
            *e.origin.file == *want
                && e.origin.line == *line
                && texts.iter().all(|t| e.message.contains(t))
        });
        let Some(found) = found else {
            panic!(
                "case {name:?}: no error at {file}:{line:?} containing {texts:?}; got:\n{listing}"
            );
        };
        let prefix = match line {
            Some(l) => format!("{}:{l}: ", want.display()),
            None => format!("{}: ", want.display()),
        };
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(&prefix) && l.ends_with(&found.message)),
            "case {name:?}: Display lacks {prefix:?}:\n{shown}"
        );
    }
}

const FULL_YAML: &str = "\
people:
  - email: Ana@Example.com
    name: Ana Silva
    ids:
      dixa: d-ana
      deepcall: 1001
groups:
  - name: Tier 1 Support
    key: tier1
    members: [ana@example.com, BO@example.com, ana@example.com]
    owners: [lead@example.com, Lead@example.com]
    receive_call: [ana@example.com]
    targets: [maestro, dixa, maestro]
  - name: Tier 2
    members:
      - cy@example.com
";

const FULL_TOML: &str = r#"
[[people]]
email = "Ana@Example.com"
name = "Ana Silva"
ids = { dixa = "d-ana", deepcall = "1001" }

[[groups]]
name = "Tier 1 Support"
key = "tier1"
members = ["ana@example.com", "BO@example.com", "ana@example.com"]
owners = ["lead@example.com", "Lead@example.com"]
receive_call = ["ana@example.com"]
targets = ["maestro", "dixa", "maestro"]

[[groups]]
name = "Tier 2"
members = [
  "cy@example.com",
]
"#;

const FULL_JSON: &str = r#"{
  "people": [
    {"email": "Ana@Example.com", "name": "Ana Silva",
     "ids": {"dixa": "d-ana", "deepcall": "1001"}}
  ],
  "groups": [
    {"name": "Tier 1 Support", "key": "tier1",
     "members": ["ana@example.com", "BO@example.com", "ana@example.com"],
     "owners": ["lead@example.com", "Lead@example.com"], "receive_call": ["ana@example.com"],
     "targets": ["maestro", "dixa", "maestro"]},
    {"name": "Tier 2",
     "members": [
       "cy@example.com"]}
  ]
}"#;

#[test]
fn good_sources() {
    let cases: &[GoodCase] = &[
        (
            "yaml: every field; emails lower-cased, sorted, de-duplicated",
            "",
            &[("g.yaml", FULL_YAML)],
            false,
            r#"person ana@example.com "Ana Silva" ids=deepcall:1001,dixa:d-ana @g.yaml:2
               group Tier 2 "Tier 2" @g.yaml:14
                 cy@example.com @g.yaml:16
               group tier1 "Tier 1 Support" @g.yaml:8 owners=lead@example.com receive_call=ana@example.com targets=dixa,maestro
                 ana@example.com @g.yaml:10
                 bo@example.com @g.yaml:10"#,
        ),
        (
            "toml: every field",
            "",
            &[("g.toml", FULL_TOML)],
            false,
            r#"person ana@example.com "Ana Silva" ids=deepcall:1001,dixa:d-ana @g.toml:3
               group Tier 2 "Tier 2" @g.toml:16
                 cy@example.com @g.toml:18
               group tier1 "Tier 1 Support" @g.toml:8 owners=lead@example.com receive_call=ana@example.com targets=dixa,maestro
                 ana@example.com @g.toml:10
                 bo@example.com @g.toml:10"#,
        ),
        (
            "json: every field, lines found by the scan",
            "",
            &[("g.json", FULL_JSON)],
            false,
            r#"person ana@example.com "Ana Silva" ids=deepcall:1001,dixa:d-ana @g.json:3
               group Tier 2 "Tier 2" @g.json:11
                 cy@example.com @g.json:13
               group tier1 "Tier 1 Support" @g.json:7 owners=lead@example.com receive_call=ana@example.com targets=dixa,maestro
                 ana@example.com @g.json:8
                 bo@example.com @g.json:8"#,
        ),
        (
            "single yaml file given directly, .yml extension",
            "g.yml",
            &[("g.yml", "groups:\n  - name: A\n    members: [a@x.io]\n")],
            false,
            "group A \"A\" @g.yml:2
               a@x.io @g.yml:3",
        ),
        (
            "single toml file given directly",
            "g.toml",
            &[(
                "g.toml",
                "[[groups]]\nname = \"A\"\nmembers = [\"a@x.io\"]\n",
            )],
            false,
            "group A \"A\" @g.toml:2
               a@x.io @g.toml:3",
        ),
        (
            "single json file given directly, escapes in strings",
            "g.json",
            &[(
                "g.json",
                "{\"groups\": [{\"name\": \"Caf\\u00e9 \\\"A\\\"\",\n \"members\": [\"a\\u0040x.io\"]}]}",
            )],
            false,
            r#"group Café "A" "Café \"A\"" @g.json:1
                 a@x.io @g.json:2"#,
        ),
        (
            "single csv file given directly; key column optional",
            "m.csv",
            &[("m.csv", "group,email\nSales,b@x.io\nSales,A@x.io\n")],
            false,
            "group Sales \"Sales\" @m.csv:2
               a@x.io @m.csv:3
               b@x.io @m.csv:2",
        ),
        (
            "csv: rows of one group spread over files, key column, trimmed cells, BOM",
            "",
            &[
                (
                    "a.csv",
                    "\u{feff}Email , Group, KEY\n a@x.io , Tier 1 , tier1\nb@x.io,Sales,\n",
                ),
                (
                    "b/c.csv",
                    "group,key,email\nTier 1,tier1,c@x.io\nTier 1,tier1,a@x.io\n",
                ),
            ],
            false,
            "group Sales \"Sales\" @a.csv:3
               b@x.io @a.csv:3
             group tier1 \"Tier 1\" @a.csv:2
               a@x.io @a.csv:2
               c@x.io @b/c.csv:2",
        ),
        (
            "directory mixing formats; csv adds to a yaml group defined in a later file",
            "",
            &[
                (
                    "10-people.toml",
                    "[[people]]\nemail = \"a@x.io\"\nids = { kazoo = \"k1\" }\n",
                ),
                (
                    "20-rows.csv",
                    "group,key,email\nTier 1,tier1,b@x.io\nTier 1,tier1,a@x.io\n",
                ),
                (
                    "30/groups.yaml",
                    "groups:\n  - name: Tier 1\n    key: tier1\n    members: [a@x.io]\n    receive_call: [b@x.io]\n",
                ),
                (
                    "40.json",
                    "{\"groups\": [{\"name\": \"Night\", \"members\": [\"n@x.io\"], \"targets\": []}]}",
                ),
            ],
            false,
            "person a@x.io ids=kazoo:k1 @10-people.toml:2
             group Night \"Night\" @40.json:1 targets=
               n@x.io @40.json:1
             group tier1 \"Tier 1\" @30/groups.yaml:2 receive_call=b@x.io
               a@x.io @20-rows.csv:3
               b@x.io @20-rows.csv:2",
        ),
        (
            "the same person twice: identical repeats and complementary values merge",
            "",
            &[
                (
                    "a.yaml",
                    "people:\n  - email: a@x.io\n    ids: {dixa: d1}\ngroups:\n  - name: G\n",
                ),
                (
                    "b.json",
                    "{\"people\": [{\"email\": \"A@X.IO\", \"name\": \"Ann\", \"ids\": {\"dixa\": \"d1\", \"kazoo\": \"k1\"}}]}",
                ),
                ("c.toml", "[[people]]\nemail = \"a@x.io\"\nname = \"Ann\"\n"),
            ],
            false,
            "person a@x.io \"Ann\" ids=dixa:d1,kazoo:k1 @a.yaml:2
             group G \"G\" @a.yaml:5",
        ),
        (
            "hidden files and directories, editor leftovers and other extensions are skipped",
            "",
            &[
                ("g.yaml", "groups:\n  - name: G\n"),
                (".hidden.yaml", "not: [valid"),
                (".git/config.yaml", "not: [valid"),
                ("g.yaml~", "not: [valid"),
                ("x.swp", "not: [valid"),
                ("README.md", "# hello"),
                ("notes.txt", "x"),
            ],
            false,
            "group G \"G\" @g.yaml:2",
        ),
        (
            "explicit empty receive_call means nobody; null lists mean none",
            "",
            &[(
                "g.yaml",
                "people:\ngroups:\n  - name: G\n    members: [a@x.io]\n    receive_call: []\n    owners:\n",
            )],
            false,
            "group G \"G\" @g.yaml:3 receive_call=
               a@x.io @g.yaml:4",
        ),
        ("allow_empty: an empty directory", "", &[], true, ""),
        (
            "allow_empty: empty and comment-only files of every format",
            "",
            &[
                ("a.yaml", ""),
                ("b.toml", "# nothing\n"),
                ("c.json", " \n"),
                ("d.csv", "group,email\n"),
                ("e.yaml", "# c\n"),
            ],
            true,
            "",
        ),
        (
            "a member listed in yaml and csv keeps the first place in path order",
            "",
            &[
                ("a.csv", "group,email\nG,a@x.io\n"),
                (
                    "b.yaml",
                    "groups:\n  - name: G\n    members: [a@x.io, b@x.io]\n",
                ),
            ],
            false,
            "group G \"G\" @b.yaml:2
               a@x.io @a.csv:2
               b@x.io @b.yaml:3",
        ),
    ];
    for (name, load_path, files, allow_empty, expected) in cases {
        check(name, load_path, files, *allow_empty, expected);
    }
}

mod bad;

#[test]
fn invalid_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("g.yaml"), b"groups:\n  - name: A\xff\n").unwrap();
    let err = load(dir.path(), TARGETS, false).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].origin.line, Some(2));
    assert!(err.errors[0].message.contains("UTF-8"), "{err}");
}

#[test]
fn errors_are_capped_but_counted() {
    let members: Vec<String> = (0..60).map(|i| format!("      - bad{i}\n")).collect();
    let yaml = format!("groups:\n  - name: A\n    members:\n{}", members.concat());
    let dir = write(&[("g.yaml", &yaml)]);
    let err = load(dir.path(), TARGETS, false).unwrap_err();
    assert_eq!(err.total, 60);
    assert_eq!(err.errors.len(), MAX_ERRORS);
    let shown = err.to_string();
    assert!(
        shown.starts_with("60 errors in the source (the first 50 shown):\n"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1 + MAX_ERRORS);
    assert!(
        shown.contains("g.yaml:4: member \"bad0\" of group \"A\" is not an email"),
        "{shown}"
    );
}

/// Files are parsed a batch at a time on several threads, but the errors kept are the
/// first found in path order, as if the files were read one after the other.
#[test]
fn errors_of_files_parsed_together_are_kept_in_file_order() {
    let file = |g: &str| {
        let members: Vec<String> = (0..30).map(|i| format!("      - bad{i}\n")).collect();
        format!("groups:\n  - name: {g}\n    members:\n{}", members.concat())
    };
    let (a, b, c, d) = (file("A"), file("B"), file("C"), file("D"));
    let dir = write(&[
        ("a.yaml", &a),
        ("b.yaml", &b),
        ("c.yaml", &c),
        ("d.yaml", &d),
    ]);
    let err = load(dir.path(), TARGETS, false).unwrap_err();
    assert_eq!(err.total, 120);
    assert_eq!(err.errors.len(), MAX_ERRORS);
    let from = |f: &str| {
        err.errors
            .iter()
            .filter(|e| e.origin.file.ends_with(f))
            .count()
    };
    assert_eq!(
        [
            from("a.yaml"),
            from("b.yaml"),
            from("c.yaml"),
            from("d.yaml")
        ],
        [30, 20, 0, 0]
    );
}

#[test]
fn files_are_listed_in_path_order_and_digested() {
    let files = [
        ("b.yaml", "groups:\n  - name: B\n"),
        ("a/z.csv", "group,email\nZ,z@x.io\n"),
        ("a.json", "{\"groups\": [{\"name\": \"A\"}]}"),
        ("a/b/c.toml", "[[groups]]\nname = \"C\"\n"),
    ];
    let dir = write(&files);
    let d1 = load(dir.path(), TARGETS, false).unwrap();
    let rel: Vec<_> = d1
        .files
        .iter()
        .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(rel, ["a/b/c.toml", "a/z.csv", "a.json", "b.yaml"]);
    assert_eq!(d1.digest.len(), 64);

    let d2 = load(dir.path(), TARGETS, false).unwrap();
    assert_eq!(d1.digest, d2.digest, "same source, same digest");

    fs::write(dir.path().join("b.yaml"), "groups:\n  - name: C2\n").unwrap();
    let d3 = load(dir.path(), TARGETS, false).unwrap();
    assert_ne!(d1.digest, d3.digest, "a changed file changes the digest");

    fs::rename(dir.path().join("b.yaml"), dir.path().join("c.yaml")).unwrap();
    let d4 = load(dir.path(), TARGETS, false).unwrap();
    assert_ne!(d3.digest, d4.digest, "a renamed file changes the digest");
}

#[test]
fn json_lines_survive_keys_equal_to_values() {
    // A value equal to a key must not throw the line scan off.
    let json = "{\"groups\": [{\"name\": \"members\",\n \"members\": [\n \"members@x.io\",\n \"name@x.io\"]}]}";
    check(
        "json value equal to a key",
        "",
        &[("g.json", json)],
        false,
        "group members \"members\" @g.json:1
           members@x.io @g.json:3
           name@x.io @g.json:4",
    );
}

#[test]
fn email_check() {
    for ok in ["a@x.io", "first.last+tag@sub.example.co.uk", "A_B@X-Y.io"] {
        assert_eq!(merge::email_problem(ok), None, "{ok}");
    }
    for bad in [
        "", "a", "a@", "@x.io", "a@x", "a@@x.io", "a@b@x.io", "a @x.io", "a@x.io,", "a@.x.io",
        "a@x.io.",
    ] {
        assert!(merge::email_problem(bad).is_some(), "{bad:?}");
    }
}

#[test]
fn a_large_source_loads_in_linear_time() {
    // 20 000 people in 2 000 groups of 10, plus ids: well past serde-saphyr's default
    // node budget, and a check that nothing is quadratic.
    let mut yaml = String::from("people:\n");
    for i in 0..20_000 {
        writeln!(
            yaml,
            "  - email: p{i}@x.io\n    ids: {{dixa: d{i}, kazoo: k{i}}}"
        )
        .unwrap();
    }
    yaml.push_str("groups:\n");
    for g in 0..2_000 {
        let members: Vec<String> = (0..10).map(|m| format!("p{}@x.io", g * 10 + m)).collect();
        writeln!(
            yaml,
            "  - name: G{g}\n    members: [{}]",
            members.join(", ")
        )
        .unwrap();
    }
    let dir = write(&[("g.yaml", &yaml)]);
    let start = std::time::Instant::now();
    let d = load(dir.path(), TARGETS, false).unwrap();
    assert_eq!(d.people.len(), 20_000);
    assert_eq!(d.groups.len(), 2_000);
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
}

proptest::proptest! {
    /// The shortcut's digest (streamed, without parsing) is the one `load` records, and
    /// any change of any byte of any file changes it (SPEC 9).
    #[test]
    fn streamed_digest_is_the_loaded_one_and_sees_every_byte(
        members in proptest::collection::vec(0u8..50, 1..20),
        at in 0usize..10_000,
        byte in 0u8..128,
    ) {
        let list: Vec<String> = members.iter().map(|m| format!("a{m}@x.io")).collect();
        let yaml = format!("groups:\n  - name: G\n    members: [{}]\n", list.join(", "));
        let dir = write(&[("a.yaml", &yaml), ("b/c.csv", "group,email\nH,b@x.io\n")]);
        let loaded = load(dir.path(), &[], false).expect("valid");
        let streamed = digest(dir.path()).expect("readable");
        proptest::prop_assert_eq!(&loaded.digest, &streamed);
        let mut bytes = yaml.into_bytes();
        let i = at % bytes.len();
        proptest::prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        std::fs::write(dir.path().join("a.yaml"), bytes).unwrap();
        proptest::prop_assert_ne!(digest(dir.path()).expect("readable"), streamed);
    }
}
