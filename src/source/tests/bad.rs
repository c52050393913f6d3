//! Every bad source: exit-2 errors naming file, line and value.

use super::*;

#[test]
fn bad_sources() {
    let cases: &[BadCase] = &[
        // Paths.
        (
            "missing path",
            "nope",
            &[],
            &[("nope", None, &["does not exist"])],
        ),
        (
            "unsupported single file",
            "g.txt",
            &[("g.txt", "x")],
            &[("g.txt", None, &["unsupported file type"])],
        ),
        (
            "control character in a name",
            "",
            &[("g.yaml", "groups:\n  - name: \"A\\tB\"\n")],
            &[("g.yaml", Some(2), &["control character"])],
        ),
        // Syntax, unknown fields, wrong types, duplicate keys.
        (
            "yaml syntax",
            "",
            &[("g.yaml", "groups:\n  - name: A\n    members: [a@x.io\n")],
            &[("g.yaml", Some(3), &["unclosed"])],
        ),
        (
            "toml syntax",
            "",
            &[("g.toml", "[[groups]]\nname = \"A\nmembers = []\n")],
            &[("g.toml", Some(2), &[])],
        ),
        (
            "json syntax (truncated)",
            "",
            &[("g.json", "{\"groups\": [\n  {\"name\": \"A\",\n")],
            &[("g.json", Some(3), &["EOF"])],
        ),
        (
            "yaml unknown field",
            "",
            &[("g.yaml", "groups:\n  - name: A\n    member: [a@x.io]\n")],
            &[("g.yaml", Some(3), &["unknown field", "member"])],
        ),
        (
            "toml unknown field",
            "",
            &[(
                "g.toml",
                "[[groups]]\nname = \"A\"\nmember = [\"a@x.io\"]\n",
            )],
            &[("g.toml", Some(3), &["unknown field", "member"])],
        ),
        (
            "json unknown field",
            "",
            &[(
                "g.json",
                "{\"groups\": [{\"name\": \"A\",\n \"member\": []}]}",
            )],
            &[("g.json", Some(2), &["unknown field", "member"])],
        ),
        (
            "yaml unknown top-level field",
            "",
            &[("g.yaml", "group:\n  - name: A\n")],
            &[("g.yaml", Some(1), &["unknown field", "group"])],
        ),
        (
            "yaml wrong type",
            "",
            &[("g.yaml", "groups:\n  - name: A\n    members: a@x.io\n")],
            &[("g.yaml", Some(3), &[])],
        ),
        (
            "toml wrong type (a number for an id)",
            "",
            &[(
                "g.toml",
                "[[people]]\nemail = \"a@x.io\"\nids = { deepcall = 1001 }\n",
            )],
            &[("g.toml", Some(3), &["string"])],
        ),
        (
            "json wrong type",
            "",
            &[("g.json", "{\"groups\": [{\"name\": 7}]}")],
            &[("g.json", Some(1), &["invalid type", "7"])],
        ),
        (
            "json list instead of a map, at the top and for a group",
            "",
            &[
                ("a.json", "[{\"name\": \"A\"}]"),
                ("b.json", "{\"groups\": [\n[\"A\", \"k\", [], [], [], []]]}"),
            ],
            &[
                (
                    "a.json",
                    Some(1),
                    &["invalid type: sequence, expected a map"],
                ),
                (
                    "b.json",
                    Some(2),
                    &["invalid type: sequence, expected a map"],
                ),
            ],
        ),
        (
            "toml list instead of a table for a group",
            "",
            &[("g.toml", "groups = [[\"A\", \"k\"]]\n")],
            &[("g.toml", Some(1), &["expected a map"])],
        ),
        (
            "yaml duplicate key",
            "",
            &[("g.yaml", "groups:\n  - name: A\n    name: B\n")],
            &[("g.yaml", Some(3), &["duplicate", "name"])],
        ),
        (
            "toml duplicate key",
            "",
            &[("g.toml", "[[groups]]\nname = \"A\"\nname = \"B\"\n")],
            &[("g.toml", Some(3), &["duplicate"])],
        ),
        (
            "json duplicate field",
            "",
            &[(
                "g.json",
                "{\"groups\": [{\"name\": \"A\",\n \"name\": \"B\"}]}",
            )],
            &[("g.json", Some(2), &["duplicate field", "name"])],
        ),
        (
            "json target given twice in ids",
            "",
            &[(
                "g.json",
                "{\"people\": [{\"email\": \"a@x.io\", \"ids\": {\"dixa\": \"1\",\n \"dixa\": \"2\"}}],\n \"groups\": [{\"name\": \"A\"}]}",
            )],
            &[("g.json", Some(2), &["\"dixa\" is given twice", "g.json:1"])],
        ),
        // Emails.
        (
            "yaml emails that are not emails, in every place",
            "",
            &[(
                "g.yaml",
                "people:\n  - email: ana.example.com\ngroups:\n  - name: A\n    members: [\"a b@x.io\"]\n    owners: [\"@x.io\"]\n    receive_call: [a@x]\n",
            )],
            &[
                (
                    "g.yaml",
                    Some(2),
                    &[
                        "person email \"ana.example.com\" is not an email address",
                        "no @",
                    ],
                ),
                (
                    "g.yaml",
                    Some(5),
                    &["member \"a b@x.io\" of group \"A\"", "space"],
                ),
                ("g.yaml", Some(6), &["owner", "\"@x.io\"", "before the @"]),
                ("g.yaml", Some(7), &["receive_call", "\"a@x\"", "no dot"]),
            ],
        ),
        (
            "toml email that is not an email",
            "",
            &[(
                "g.toml",
                "[[groups]]\nname = \"A\"\nmembers = [\n  \"a@x.io\",\n  \"b@@x.io\",\n]\n",
            )],
            &[("g.toml", Some(5), &["\"b@@x.io\"", "more than one @"])],
        ),
        (
            "json email that is not an email",
            "",
            &[(
                "g.json",
                "{\"groups\": [{\"name\": \"A\",\n \"members\": [\"a@x.io\",\n \"b@x..io\"]}]}",
            )],
            &[("g.json", Some(3), &["\"b@x..io\"", "empty part"])],
        ),
        (
            "csv email that is not an email",
            "",
            &[("m.csv", "group,email\nA,a@x.io\nA,<b@x.io>\n")],
            &[("m.csv", Some(3), &["email \"<b@x.io>\" of group \"A\""])],
        ),
        // Group keys and names.
        (
            "group key defined twice in one file",
            "",
            &[("g.yaml", "groups:\n  - name: A\n  - name: B\n    key: A\n")],
            &[("g.yaml", Some(3), &["\"A\" is defined twice", "g.yaml:2"])],
        ),
        (
            "group key defined in yaml and toml: both places named",
            "",
            &[
                ("a.yaml", "groups:\n  - name: Tier 1\n    key: t1\n"),
                (
                    "b.toml",
                    "\n[[groups]]\nkey = \"t1\"\nname = \"Tier One\"\n",
                ),
            ],
            &[("b.toml", Some(3), &["\"t1\" is defined twice", "a.yaml:2"])],
        ),
        (
            "group key defined in json and yaml",
            "",
            &[
                ("a.json", "{\"groups\": [\n{\"name\": \"X\"}]}"),
                ("b.yaml", "groups:\n  - name: X\n"),
            ],
            &[("b.yaml", Some(2), &["\"X\" is defined twice", "a.json:2"])],
        ),
        (
            "empty and padded names",
            "",
            &[(
                "g.yaml",
                "groups:\n  - name: \"\"\n  - name: \" A\"\n  - name: B\n    key: \"\"\n",
            )],
            &[
                ("g.yaml", Some(2), &["group name \"\"", "empty"]),
                ("g.yaml", Some(3), &["group name \" A\"", "spaces"]),
                ("g.yaml", Some(5), &["group key \"\"", "empty"]),
            ],
        ),
        (
            "two keys share one display name",
            "",
            &[(
                "g.yaml",
                "groups:\n  - name: Sales\n    key: s1\n  - name: sales\n    key: s2\n",
            )],
            &[(
                "g.yaml",
                Some(4),
                &["\"sales\"", "\"s2\"", "\"s1\"", "g.yaml:2"],
            )],
        ),
        (
            "csv rows without a key make a second group with the name of a keyed one",
            "",
            &[
                ("a.yaml", "groups:\n  - name: Tier 1\n    key: tier1\n"),
                ("b.csv", "group,email\nTier 1,a@x.io\n"),
            ],
            &[(
                "b.csv",
                Some(2),
                &["\"Tier 1\"", "\"tier1\"", "a.yaml:2", "same `key`"],
            )],
        ),
        // People.
        (
            "person with conflicting ids in yaml and json",
            "",
            &[
                (
                    "a.yaml",
                    "people:\n  - email: a@x.io\n    ids:\n      dixa: d1\ngroups:\n  - name: G\n",
                ),
                (
                    "b.json",
                    "{\"people\": [\n {\"email\": \"A@x.io\", \"ids\": {\"dixa\": \"d2\"}}]}",
                ),
            ],
            &[(
                "b.json",
                Some(2),
                &["\"d2\"", "\"d1\"", "\"dixa\"", "a.yaml:4"],
            )],
        ),
        (
            "person with conflicting names in toml",
            "",
            &[(
                "p.toml",
                "[[people]]\nemail = \"a@x.io\"\nname = \"Ann\"\n\n[[people]]\nemail = \"a@x.io\"\nname = \"Anne\"\n\n[[groups]]\nname = \"G\"\n",
            )],
            &[("p.toml", Some(7), &["\"Anne\"", "\"Ann\"", "p.toml:3"])],
        ),
        (
            "ids naming an unknown target, and an empty id",
            "",
            &[(
                "g.yaml",
                "people:\n  - email: a@x.io\n    ids:\n      dixa2: x\n      kazoo: \"\"\ngroups:\n  - name: G\n",
            )],
            &[
                (
                    "g.yaml",
                    Some(4),
                    &["unknown target \"dixa2\"", "configured targets: maestro"],
                ),
                ("g.yaml", Some(5), &["empty id", "\"kazoo\""]),
            ],
        ),
        // Targets and receive_call.
        (
            "yaml group naming an unknown target",
            "",
            &[(
                "g.yaml",
                "groups:\n  - name: G\n    targets:\n      - maestro\n      - zendesk\n",
            )],
            &[(
                "g.yaml",
                Some(5),
                &[
                    "unknown target \"zendesk\"",
                    "group \"G\"",
                    "configured targets",
                ],
            )],
        ),
        (
            "toml group naming an unknown target",
            "",
            &[(
                "g.toml",
                "[[groups]]\nname = \"G\"\ntargets = [\"mastro\"]\n",
            )],
            &[("g.toml", Some(3), &["unknown target \"mastro\""])],
        ),
        (
            "json group naming an unknown target",
            "",
            &[(
                "g.json",
                "{\"groups\": [{\"name\": \"G\",\n\"targets\": [\"maestro\",\n\"kazo\"]}]}",
            )],
            &[("g.json", Some(3), &["unknown target \"kazo\""])],
        ),
        (
            "receive_call not a member (csv members count)",
            "",
            &[
                (
                    "g.yaml",
                    "groups:\n  - name: G\n    members: [a@x.io]\n    receive_call:\n      - a@x.io\n      - b@x.io\n      - c@x.io\n",
                ),
                ("m.csv", "group,email\nG,c@x.io\n"),
            ],
            &[(
                "g.yaml",
                Some(6),
                &["receive_call \"b@x.io\"", "not a member of group \"G\""],
            )],
        ),
        // CSV.
        (
            "csv header without email",
            "",
            &[("m.csv", "group,mail\nA,a@x.io\n")],
            &[
                ("m.csv", Some(1), &["unknown column \"mail\""]),
                (
                    "m.csv",
                    Some(1),
                    &["must name the columns", "\"group\", \"mail\""],
                ),
            ],
        ),
        (
            "csv unknown column and repeated column",
            "",
            &[("m.csv", "group,email,name,email\nA,a@x.io,Ann,a@x.io\n")],
            &[
                ("m.csv", Some(1), &["unknown column \"name\""]),
                ("m.csv", Some(1), &["\"email\" appears twice"]),
            ],
        ),
        (
            "csv row with the wrong number of columns, and an empty group",
            "",
            &[("m.csv", "group,email\nA,a@x.io\nA,b@x.io,extra\n,c@x.io\n")],
            &[
                ("m.csv", Some(3), &["3 columns", "header has 2"]),
                ("m.csv", Some(4), &["group name \"\"", "empty"]),
            ],
        ),
        (
            "csv group name disagrees with a yaml definition read later",
            "",
            &[
                ("a.csv", "group,key,email\nTier One,t1,a@x.io\n"),
                ("b.yaml", "groups:\n  - name: Tier 1\n    key: t1\n"),
            ],
            &[(
                "a.csv",
                Some(2),
                &["\"Tier One\"", "\"t1\"", "\"Tier 1\"", "b.yaml:2"],
            )],
        ),
        (
            "csv group name disagrees with a toml definition read earlier",
            "",
            &[
                ("a.toml", "[[groups]]\nname = \"Tier 1\"\nkey = \"t1\"\n"),
                (
                    "b.csv",
                    "group,key,email\nTier 1,t1,a@x.io\nTier One,t1,b@x.io\n",
                ),
            ],
            &[(
                "b.csv",
                Some(3),
                &["\"Tier One\"", "\"Tier 1\"", "a.toml:2"],
            )],
        ),
        (
            "csv rows of one key disagree on the name across files",
            "",
            &[
                ("a.csv", "group,key,email\nTier 1,t1,a@x.io\n"),
                ("b.csv", "group,key,email\nTier One,t1,b@x.io\n"),
            ],
            &[("b.csv", Some(2), &["\"Tier One\"", "\"Tier 1\"", "a.csv:2"])],
        ),
        // Empty sources.
        (
            "empty directory",
            "",
            &[],
            &[("", None, &["no groups", "allow_empty_source"])],
        ),
        (
            "empty file",
            "g.yaml",
            &[("g.yaml", "")],
            &[("g.yaml", None, &["defines no groups", "allow_empty_source"])],
        ),
        (
            "truncated-to-nothing files next to good ones",
            "",
            &[
                ("a.yaml", "groups:\n  - name: A\n"),
                ("b.json", "{}"),
                ("c.csv", "group,email\n"),
                ("d.toml", "# all gone\n"),
                ("e.yaml", "groups: []\n"),
            ],
            &[
                ("b.json", None, &["defines no groups"]),
                ("c.csv", None, &["defines no groups"]),
                ("d.toml", None, &["defines no groups"]),
                ("e.yaml", None, &["defines no groups"]),
            ],
        ),
        (
            "people but no groups",
            "",
            &[("p.yaml", "people:\n  - email: a@x.io\n")],
            &[("", None, &["defines no groups"])],
        ),
        // All errors of all files at once.
        (
            "errors are collected across files and formats",
            "",
            &[
                ("a.yaml", "groups:\n  - name: A\n    members: [bad]\n"),
                (
                    "b.toml",
                    "[[groups]]\nname = \"B\"\nmembers = [\"worse\"]\n",
                ),
                (
                    "c.json",
                    "{\"groups\": [{\"name\": \"C\", \"members\": [\"worst\"]}]}",
                ),
                ("d.csv", "group,email\nD,nope\n"),
                ("e.yaml", "groups: [\n"),
            ],
            &[
                ("a.yaml", Some(3), &["\"bad\""]),
                ("b.toml", Some(3), &["\"worse\""]),
                ("c.json", Some(1), &["\"worst\""]),
                ("d.csv", Some(2), &["\"nope\""]),
                ("e.yaml", Some(1), &[]),
            ],
        ),
    ];
    for (name, load_path, files, expected) in cases {
        check_err(name, load_path, files, expected);
    }
}
