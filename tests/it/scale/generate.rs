//! The scale generator (SPEC section 9, issue 11), shared by the CI smoke test
//! (`tests/it/scale/mod.rs`, size S) and the benchmark (`benches/scale.rs`, S, L and XL).
//!
//! Deterministic: the same size and churn give the same bytes. People are split over
//! several `people-N` files and groups over several `groups-N` files; group `g` goes to
//! target `g % 4`, so every kind gets a quarter of the groups and all four run at once.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

/// One size of the benchmark.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub name: &'static str,
    pub people: usize,
    pub groups: usize,
    pub per_group: usize,
}

pub const S: Scale = Scale {
    name: "S",
    people: 1_000,
    groups: 100,
    per_group: 10,
};
pub const L: Scale = Scale {
    name: "L",
    people: 50_000,
    groups: 5_000,
    per_group: 50,
};
pub const XL: Scale = Scale {
    name: "XL",
    people: 100_000,
    groups: 10_000,
    per_group: 100,
};

impl Scale {
    pub fn by_name(name: &str) -> Option<Scale> {
        [S, L, XL]
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }
    pub fn memberships(&self) -> usize {
        self.groups * self.per_group
    }
}

/// The four target names, one per kind, in `g % 4` order.
pub const TARGETS: [&str; 4] = ["maestro", "teams", "deepcall", "kazoo"];

/// How many files people and groups are spread over.
pub const FILES: usize = 4;

/// Source format of the structured files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

pub fn email(i: usize) -> String {
    format!("agent{i:06}@example.com")
}

pub fn group_name(g: usize) -> String {
    format!("Group {g:05}")
}

/// Which source changes to make on top of the base: `churn` changes one member (one
/// add, one remove) in 1% of the groups, spread over the four targets; `one` changes one
/// membership of group 0 (MaestroQA's: no presence read). `round` picks which replacement (so repeated churns differ).
#[derive(Clone, Copy, Debug, Default)]
pub struct Change {
    pub churn: bool,
    pub one: bool,
    pub round: usize,
}

/// The groups `Change::churn` touches: 4 in every 400 (1%), one per target.
pub fn churned(g: usize) -> bool {
    (g / 4).is_multiple_of(100)
}

/// The members of group `g` (person indices), distinct within the group.
pub fn members(s: &Scale, g: usize, change: Change) -> Vec<usize> {
    let mut m: Vec<usize> = (0..s.per_group)
        .map(|k| (g * 7919 + k * 131) % s.people)
        .collect();
    if (change.churn && churned(g)) || (change.one && g == 0) {
        // Replace the first member by someone not in the group.
        let mut p = (m[0] + 1 + change.round * 17) % s.people;
        while m.contains(&p) {
            p = (p + 1) % s.people;
        }
        m[0] = p;
    }
    m
}

/// Groups for target `t` (index into [`TARGETS`]).
pub fn groups_of(s: &Scale, t: usize) -> usize {
    (0..s.groups).filter(|g| g % 4 == t).count()
}

/// Writes the source files into `dir` (removing the old ones). `ids(target, person)`
/// gives the id written under `people[].ids.<target>` (None: not written).
pub fn write_source(
    dir: &Path,
    s: &Scale,
    format: Format,
    change: Change,
    ids: &dyn Fn(usize, usize) -> Option<String>,
) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let ext = match format {
        Format::Yaml => "yaml",
        Format::Json => "json",
    };
    for f in 0..FILES {
        let mut out = String::with_capacity(s.people / FILES * 150);
        let people = (0..s.people).filter(|p| p % FILES == f);
        match format {
            Format::Yaml => {
                out.push_str("people:\n");
                for p in people {
                    let _ = writeln!(out, "  - email: {}\n    name: Agent {p}", email(p));
                    let ids: Vec<String> = (0..4)
                        .filter_map(|t| Some(format!("{}: \"{}\"", TARGETS[t], ids(t, p)?)))
                        .collect();
                    if !ids.is_empty() {
                        let _ = writeln!(out, "    ids: {{ {} }}", ids.join(", "));
                    }
                }
            }
            Format::Json => {
                out.push_str("{\"people\": [\n");
                let mut first = true;
                for p in people {
                    if !first {
                        out.push_str(",\n");
                    }
                    first = false;
                    let ids: Vec<String> = (0..4)
                        .filter_map(|t| Some(format!("\"{}\": \"{}\"", TARGETS[t], ids(t, p)?)))
                        .collect();
                    let _ = write!(
                        out,
                        "  {{\"email\": \"{}\", \"name\": \"Agent {p}\", \"ids\": {{{}}}}}",
                        email(p),
                        ids.join(", ")
                    );
                }
                out.push_str("\n]}\n");
            }
        }
        std::fs::write(dir.join(format!("people-{f}.{ext}")), out).unwrap();

        let mut out = String::with_capacity(s.groups / FILES * s.per_group * 30);
        let groups = (0..s.groups).filter(|g| g % FILES == f);
        match format {
            Format::Yaml => out.push_str("groups:\n"),
            Format::Json => out.push_str("{\"groups\": [\n"),
        }
        let mut first = true;
        for g in groups {
            let ms: Vec<String> = members(s, g, change).into_iter().map(email).collect();
            match format {
                Format::Yaml => {
                    let _ = writeln!(
                        out,
                        "  - name: \"{}\"\n    targets: [{}]\n    members:",
                        group_name(g),
                        TARGETS[g % 4]
                    );
                    for m in ms {
                        let _ = writeln!(out, "      - {m}");
                    }
                }
                Format::Json => {
                    if !first {
                        out.push_str(",\n");
                    }
                    first = false;
                    let ms: Vec<String> = ms.iter().map(|m| format!("\"{m}\"")).collect();
                    let _ = write!(
                        out,
                        "  {{\"name\": \"{}\", \"targets\": [\"{}\"], \"members\": [{}]}}",
                        group_name(g),
                        TARGETS[g % 4],
                        ms.join(", ")
                    );
                }
            }
        }
        if format == Format::Json {
            out.push_str("\n]}\n");
        }
        std::fs::write(dir.join(format!("groups-{f}.{ext}")), out).unwrap();
    }
}

/// The config: the source directory, the state, and one `[[target]]` per kind.
/// `blocks[t]` is target `t`'s block (from the fake, or a dummy one).
pub fn write_config(dir: &Path, blocks: &[String]) {
    let text = format!(
        "source = \"source\"\nstate = \"state/rostersync.db\"\n\n[safety]\nmax_removals = 100000\nmax_removal_ratio = 1.0\n\n{}\n",
        blocks.join("\n")
    );
    std::fs::write(dir.join("rostersync.toml"), text).unwrap();
}

/// The minimal requests (SPEC 5) per target for the initial sync of a scale: every kind
/// with ids in the source (no lookups), groups of at most 100 (one batch).
/// maestro: 1 listing + 1 create (with members) per group; teams: 1 listing + 1 create +
/// 1 add per group; deepcall: per group, a `Group/list` by name, a `Group/add`, the
/// `Group/list` by name that proves the listing shows the new group, and one assign; kazoo: 1 login + 1 listing + 1 create (with members) per group.
pub fn minimal_initial(s: &Scale) -> [usize; 4] {
    let n = |t| groups_of(s, t);
    [1 + n(0), 1 + 2 * n(1), 4 * n(2), 2 + n(3)]
}

/// The minimal requests per target for [`Change::churn`] (one add and one remove in
/// each changed group): maestro 1 PATCH, teams 1 PATCH + 1 DELETE + 1 presence read,
/// deepcall 1 relation read (the assign replaces the whole list: agents rostersync does
/// not know of stay) + 1 assign,
/// kazoo 1 login + 1 PATCH per group.
pub fn minimal_churn(s: &Scale) -> [usize; 4] {
    let c = |t| (0..s.groups).filter(|g| g % 4 == t && churned(*g)).count();
    // teams: one add, one remove and the presence read SPEC 5 asks for before a removal.
    [c(0), 3 * c(1), 2 * c(2), 1 + c(3)]
}
