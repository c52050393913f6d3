//! Saved plans: `sync --dry-run --save-plan FILE` writes one, `sync --plan FILE` applies
//! exactly it, or refuses (exit 2, nothing sent to any target) if the source or a target's
//! known state changed since, or if a fresh plan differs from the saved one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::RunReport;
use crate::model::Desired;
use crate::plan::{Known, TargetPlan};

/// The format version written into saved plans.
const FORMAT: u32 = 1;

/// A plan saved by `sync --dry-run --save-plan FILE`, applied by `sync --plan FILE`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Format version.
    pub rostersync_plan: u32,
    pub source_digest: String,
    pub full: bool,
    pub allow_mass_removal: bool,
    /// `--only`: the plan is scoped to these people, and is applied with the same scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    pub targets: BTreeMap<String, SavedTarget>,
}

/// One target's part of a saved plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedTarget {
    /// Digest of the known state the plan was made from.
    pub known_digest: String,
    pub plan: TargetPlan,
}

/// Why a saved plan cannot be read, written or applied.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("--plan {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--plan {path}: not a saved plan: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "--plan {path}: format {found} is not the one this rostersync writes ({FORMAT}); make a new plan"
    )]
    Format { path: PathBuf, found: u32 },
    #[error("cannot write the plan to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--plan {path}: the plan holds no target (the dry-run that saved it could not plan any); make a new plan once the targets can be planned"
    )]
    Empty { path: PathBuf },
    #[error(
        "the source changed since the plan was saved; make a new plan with `sync --dry-run --save-plan FILE`"
    )]
    SourceChanged,
    #[error(
        "the known state of target {0} changed since the plan was saved (another run happened); make a new plan"
    )]
    KnownChanged(String),
}

impl SavedPlan {
    /// The plan of a dry-run, to save, with the run's `--only` scope.
    pub fn from_report(r: &RunReport, allow_mass_removal: bool, only: &[String]) -> SavedPlan {
        let targets = r
            .targets
            .iter()
            .filter_map(|t| {
                let plan = t.plan.clone()?;
                let known_digest = t.known_digest.clone();
                Some((t.name.clone(), SavedTarget { known_digest, plan }))
            })
            .collect();
        SavedPlan {
            rostersync_plan: FORMAT,
            source_digest: r.source_digest.clone(),
            full: r.full,
            allow_mass_removal,
            only: only.to_vec(),
            targets,
        }
    }

    /// Reads a saved plan to apply: one that holds at least one target.
    pub fn read(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        let bytes = std::fs::read(path).map_err(|source| SavedPlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let plan: SavedPlan =
            serde_json::from_slice(&bytes).map_err(|source| SavedPlanError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if plan.rostersync_plan != FORMAT {
            return Err(SavedPlanError::Format {
                path: path.to_path_buf(),
                found: plan.rostersync_plan,
            });
        }
        if plan.targets.is_empty() {
            return Err(SavedPlanError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(plan)
    }

    /// The targets a `sync --plan` run selects: those the plan holds. Never empty, so never
    /// "every target": a target the plan does not hold is never touched.
    pub fn selection(&self, path: &Path) -> Result<Vec<String>, SavedPlanError> {
        if self.targets.is_empty() {
            return Err(SavedPlanError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(self.targets.keys().cloned().collect())
    }

    /// Writes the plan, readable by its owner only (it names people).
    pub fn write(&self, path: &Path) -> Result<(), SavedPlanError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let fail = |source| SavedPlanError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| fail(e.into()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        f.write_all(&text).map_err(fail)?;
        f.sync_all().map_err(fail)
    }

    /// Refuses when the source changed since the plan was saved.
    pub fn check_source(&self, desired: &Desired) -> Result<(), SavedPlanError> {
        if self.source_digest != desired.digest {
            return Err(SavedPlanError::SourceChanged);
        }
        Ok(())
    }

    /// Refuses when this target's known state changed since the plan was saved.
    pub fn check_known(&self, target: &str, known: &Known) -> Result<(), SavedPlanError> {
        match self.targets.get(target) {
            Some(st) if known_digest(known) != st.known_digest => {
                Err(SavedPlanError::KnownChanged(target.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Whether a fresh plan for this target equals the saved one. A target the plan does
    /// not hold never matches: nothing unreviewed is sent.
    pub fn matches(&self, target: &str, plan: &TargetPlan) -> bool {
        self.targets
            .get(target)
            .is_some_and(|st| super::presence::unmarked(&st.plan) == *plan)
    }
}

/// Digest of one target's known state (to tell whether it changed since a plan was saved).
pub fn known_digest(known: &Known) -> String {
    use sha2::Digest as _;
    // Streamed into the hash: at a million memberships the JSON is too large to build whole.
    let mut hasher = sha2::Sha256::new();
    serde_json::to_writer(&mut hasher, known).expect("the known state serializes");
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SavedPlan::read` of a file holding `text`.
    fn read_text(text: &str) -> Result<SavedPlan, SavedPlanError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(&path, text).unwrap();
        SavedPlan::read(&path)
    }

    /// A target's part of a plan with nothing to do, made from `known`.
    fn nothing_to_do(known: &Known) -> SavedTarget {
        SavedTarget {
            known_digest: known_digest(known),
            plan: crate::plan::TargetPlan {
                ops: Vec::new(),
                unchanged: 0,
                left_alone: Vec::new(),
                guard: None,
                skipped: Vec::new(),
            },
        }
    }

    #[test]
    fn a_saved_plan_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let mut p = SavedPlan {
            rostersync_plan: FORMAT,
            source_digest: "abc".into(),
            full: false,
            allow_mass_removal: false,
            only: Vec::new(),
            targets: BTreeMap::new(),
        };
        p.targets
            .insert("t".into(), nothing_to_do(&Known::default()));
        p.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SavedPlan::read(&path).unwrap().source_digest, "abc");
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let e = read_text(
            r#"{"rostersync_plan": 9, "source_digest": "", "full": false, "allow_mass_removal": false, "targets": {}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, SavedPlanError::Format { found: 9, .. }), "{e}");
    }

    #[test]
    fn a_changed_known_state_is_refused() {
        let mut p = SavedPlan {
            rostersync_plan: FORMAT,
            source_digest: String::new(),
            full: false,
            allow_mass_removal: false,
            only: Vec::new(),
            targets: BTreeMap::new(),
        };
        let known = Known::default();
        p.targets.insert("t".into(), nothing_to_do(&known));
        assert!(p.check_known("t", &known).is_ok());
        let mut other = Known::default();
        other.intents.insert("k".into());
        assert!(matches!(
            p.check_known("t", &other),
            Err(SavedPlanError::KnownChanged(_))
        ));
        // A target the plan does not name is not checked here, but it never matches.
        assert!(p.check_known("u", &other).is_ok());
        assert!(!p.matches("u", &p.targets["t"].plan));
        assert!(p.matches("t", &p.targets["t"].plan));
        assert_eq!(p.selection(Path::new("p.json")).unwrap(), ["t"]);
        p.targets.clear();
        assert!(matches!(
            p.selection(Path::new("p.json")),
            Err(SavedPlanError::Empty { .. })
        ));
    }

    #[test]
    fn a_plan_that_holds_no_target_is_refused() {
        let e = read_text(
            r#"{"rostersync_plan": 1, "source_digest": "", "full": false, "allow_mass_removal": false, "targets": {}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, SavedPlanError::Empty { .. }), "{e}");
    }
}
