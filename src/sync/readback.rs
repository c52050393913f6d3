//! Reading managed groups back from the target and replacing the known state with what
//! it holds, before planning: every group for `--full` (drift repair), and the groups with
//! an unfinished write (an intent left by a crashed or interrupted run, SPEC 6.2).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::apply::group_delta;
use super::report::{Failed, TargetReport};
use crate::model::Desired;
use crate::plan::{Keep, Known, KnownGroup, KnownMember};
use crate::store::Delta;
use crate::targets::{Ctx, OpError, RemoteGroup, Target};

/// Reads these managed groups back and replaces `known` with what the target holds; a
/// group read back has its intent dropped. A group that cannot be read fails alone (it
/// keeps its known state) and is returned; only a failure to record stops the read-back.
///
/// With `keep_members` email patterns, a member the read found whose email rostersync does
/// not know (added by hand) is asked of the target (`Target::email_of`), so the patterns
/// can protect them; a group where that question fails counts as unread.
#[allow(clippy::too_many_arguments)]
pub async fn read_back(
    ctx: &Ctx,
    target: &dyn Target,
    known: &mut Known,
    keys: &BTreeSet<String>,
    names: &HashMap<String, String>,
    keep: &Keep,
    stop: &CancellationToken,
    report: &mut TargetReport,
) -> Result<BTreeSet<String>, OpError> {
    let groups: Vec<KnownGroup> = known
        .groups
        .values()
        .filter(|g| keys.contains(&g.key))
        .cloned()
        .collect();
    let mut unread = BTreeSet::new();
    // Collected first: a lazy `map` closure in the stream makes the run future not `Send`
    // (a known higher-ranked lifetime limitation), and the daemon spawns runs.
    // Once `stop` is cancelled no further read starts (reads in flight finish): the group
    // counts as unread, so nothing is sent to it.
    let reads: Vec<_> = groups
        .iter()
        .map(|g| async move {
            if stop.is_cancelled() {
                return (g, None);
            }
            (g, Some(target.read(ctx, g).await))
        })
        .collect();
    let reads = futures::stream::iter(reads)
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let mut drift = 0;
    for (g, r) in reads {
        let Some(r) = r else {
            unread.insert(g.key.clone());
            continue;
        };
        let r = match r {
            Ok(r) => r,
            Err(e @ OpError::Record(_)) => return Err(e),
            Err(e) => {
                warn!(group = %g.name, error = %e, "--full could not read the group; it keeps its known state");
                report.failed.push(Failed {
                    group: g.name.clone(),
                    op: "read".into(),
                    error: e.to_string(),
                });
                unread.insert(g.key.clone());
                continue;
            }
        };
        match r {
            None => {
                warn!(group = %g.name, "managed group is gone from the target; it will be created again");
                drift += g.members.len();
                known.groups.remove(&g.key);
                let forget = Delta::Forget { key: g.key.clone() };
                ctx.note("forget", &g.key, &g.name, forget).await?;
            }
            Some(rg) => {
                let mut fresh = known_from_remote(g, &rg, names);
                if keep.on_emails()
                    && let Err(e) = name_strangers(ctx, target, &mut fresh).await
                {
                    if let OpError::Record(_) = e {
                        return Err(e);
                    }
                    warn!(group = %g.name, error = %e, "cannot tell whether keep_members protects a member the read found; the group keeps its known state");
                    report.failed.push(Failed {
                        group: g.name.clone(),
                        op: "read".into(),
                        error: format!("the email of a member found by the read: {e}"),
                    });
                    unread.insert(g.key.clone());
                    continue;
                }
                let d = changed(&g.members, &fresh.members) + changed(&g.owners, &fresh.owners);
                if d > 0 || fresh.name != g.name {
                    warn!(group = %g.name, drift = d, "drift found: the target differs from the known state");
                    drift += d;
                    ctx.note("drift", &g.key, &g.name, group_delta(&fresh))
                        .await?;
                }
                known.groups.insert(g.key.clone(), fresh);
            }
        }
        if known.intents.remove(&g.key) {
            ctx.recorder.drop_intent(&ctx.target, &g.key).await?;
        }
    }
    report.drift = drift;
    metrics::counter!("rostersync_drift_found_total", "target" => ctx.target.clone())
        .increment(drift as u64);
    Ok(unread)
}

/// Asks the target for the email of each member (and owner) of `g` whose email is not
/// known, so `keep_members` email patterns apply to them.
async fn name_strangers(ctx: &Ctx, target: &dyn Target, g: &mut KnownGroup) -> Result<(), OpError> {
    for m in g.members.iter_mut().chain(g.owners.iter_mut()) {
        let (id, k) = m;
        if k.email.is_none()
            && let Some(e) = target.email_of(ctx, id).await?
        {
            k.email = Some(std::sync::Arc::from(e.to_lowercase().as_str()));
        }
    }
    Ok(())
}

/// How many ids are in one map and not the other.
fn changed(a: &BTreeMap<String, KnownMember>, b: &BTreeMap<String, KnownMember>) -> usize {
    a.keys().filter(|id| !b.contains_key(*id)).count()
        + b.keys().filter(|id| !a.contains_key(*id)).count()
}

/// Member id -> email, from the source's `people[].ids` and the resolution cache: names
/// the members a `--full` read finds, so plans show emails rather than raw ids.
pub fn names_by_id(
    desired: &Desired,
    target: &str,
    cache: &HashMap<String, Option<String>>,
) -> HashMap<String, String> {
    let cached = cache
        .iter()
        .filter_map(|(e, id)| Some((id.clone()?, e.clone())));
    let given = desired
        .people
        .values()
        .filter_map(|p| Some((p.ids.get(target)?.clone(), p.email.clone())));
    cached.chain(given).collect()
}

/// Known state as a read shows it, keeping what we knew of members still there.
fn known_from_remote(
    prev: &KnownGroup,
    rg: &RemoteGroup,
    names: &HashMap<String, String>,
) -> KnownGroup {
    let rc: BTreeSet<&String> = rg.receive_call.iter().collect();
    let carry = |prev: &BTreeMap<String, KnownMember>, ids: &[String], calls: bool| {
        ids.iter()
            .map(|id| {
                let p = prev.get(id);
                let k = KnownMember {
                    owned: p.is_some_and(|p| p.owned),
                    receive_call: calls && rc.contains(id),
                    email: p
                        .and_then(|p| p.email.clone())
                        .or_else(|| names.get(id).map(|e| std::sync::Arc::from(e.as_str()))),
                };
                (id.clone(), k)
            })
            .collect()
    };
    KnownGroup {
        key: prev.key.clone(),
        remote_id: rg.id.clone(),
        name: if rg.name.is_empty() {
            prev.name.clone()
        } else {
            rg.name.clone()
        },
        members: carry(&prev.members, &rg.members, true),
        owners: carry(&prev.owners, &rg.owners, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(owned: bool, email: Option<&str>) -> KnownMember {
        KnownMember {
            owned,
            receive_call: false,
            email: email.map(Into::into),
        }
    }

    #[test]
    fn a_read_keeps_what_was_known_of_members_still_there() {
        let prev = KnownGroup {
            key: "k".into(),
            remote_id: "1".into(),
            name: "G".into(),
            members: [
                ("a".to_string(), member(true, Some("a@x.io"))),
                ("b".to_string(), member(false, None)),
            ]
            .into(),
            owners: BTreeMap::new(),
        };
        let rg = RemoteGroup {
            id: "1".into(),
            name: String::new(),
            members: vec!["a".into(), "c".into()],
            owners: vec![],
            receive_call: vec!["c".into()],
        };
        let names: HashMap<String, String> = [("c".to_string(), "c@x.io".to_string())].into();
        let fresh = known_from_remote(&prev, &rg, &names);
        assert_eq!(fresh.name, "G", "an empty name keeps the known one");
        assert_eq!(fresh.members["a"], member(true, Some("a@x.io")));
        assert!(
            !fresh.members["c"].owned,
            "a member found by a read was not added by us"
        );
        assert_eq!(fresh.members["c"].email.as_deref(), Some("c@x.io"));
        assert!(fresh.members["c"].receive_call);
        assert_eq!(changed(&prev.members, &fresh.members), 2);
    }
}
