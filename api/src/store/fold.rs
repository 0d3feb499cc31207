//! CDR events folded per call before they are written, so that a batch
//! costs a few statements whatever its size.

use super::rows::{db_text, encode_legs_security, stored_call};

/// A batch of CDR events folded per call: one `Started` row per call with
/// its answer and end merged in, and the first `Answered`/`Ended` of calls
/// whose row came in an earlier batch. Applying it (rows first, then the
/// updates) leaves the same rows as applying the events one by one,
/// because `INSERT_CALLS_MERGE` merges with the first-wins rules of the updates.
#[derive(Debug, Default)]
pub(crate) struct FoldedBatch {
    pub started: Vec<crate::store::CallRecord>,
    /// (id, at, media security as stored)
    pub answered: Vec<(String, i64, Option<String>)>,
    /// (id, at, cause, sip_status, duration_ms)
    pub ended: Vec<(String, i64, String, u16, i64)>,
    /// The last resume snapshot of each call the batch left resumable:
    /// (id, node, snapshot, at).
    pub resume_save: Vec<(String, String, String, i64)>,
    /// Calls the batch left not resumable.
    pub resume_drop: Vec<String>,
}

pub(crate) fn fold<'a>(events: &'a [crate::store::CdrEvent]) -> FoldedBatch {
    use crate::store::CdrEvent;
    use std::collections::HashMap;
    use std::collections::hash_map::Entry;
    let mut f = FoldedBatch::default();
    let mut started: HashMap<&str, usize> = HashMap::new();
    let mut answered: HashMap<&str, usize> = HashMap::new();
    let mut ended: HashMap<&str, ()> = HashMap::new();
    // Each call's last resume change, in first-seen order: (node,
    // snapshot, at), or None when withdrawn.
    type Change<'a> = Option<(&'a str, &'a str, i64)>;
    let mut resume: Vec<(&str, Change)> = Vec::new();
    let mut resume_at: HashMap<&str, usize> = HashMap::new();
    let mut set_resume = |id: &'a str, v: Change<'a>| match resume_at.entry(id) {
        Entry::Occupied(o) => resume[*o.get()].1 = v,
        Entry::Vacant(e) => {
            e.insert(resume.len());
            resume.push((id, v));
        }
    };
    for ev in events {
        match ev {
            CdrEvent::Resumable {
                id,
                node,
                snapshot,
                at,
            } => set_resume(id, Some((node, snapshot, *at))),
            CdrEvent::NotResumable { id } => set_resume(id, None),
            CdrEvent::Started(c) => {
                if let Entry::Vacant(v) = started.entry(c.id.as_str()) {
                    v.insert(f.started.len());
                    f.started.push(stored_call(c));
                }
            }
            CdrEvent::Answered {
                id,
                at,
                media_security,
            } => match started.get(id.as_str()) {
                Some(&i) => {
                    let c = &mut f.started[i];
                    c.answer_at = c.answer_at.or(Some(*at));
                    if media_security.is_some() {
                        c.media_security = media_security.clone();
                    }
                }
                None => {
                    let media = media_security.as_ref().map(encode_legs_security);
                    match answered.entry(id.as_str()) {
                        Entry::Vacant(v) => {
                            v.insert(f.answered.len());
                            f.answered.push((id.clone(), *at, media));
                        }
                        // The first time stays; the latest security wins.
                        Entry::Occupied(o) => {
                            if media.is_some() {
                                f.answered[*o.get()].2 = media;
                            }
                        }
                    }
                }
            },
            CdrEvent::Ended {
                id,
                at,
                cause,
                sip_status,
                duration_ms,
            } => match started.get(id.as_str()) {
                Some(&i) => {
                    let c = &mut f.started[i];
                    if c.end_at.is_none() {
                        c.end_at = Some(*at);
                        c.end_cause = Some(db_text(cause).into_owned());
                        c.sip_status = Some(*sip_status);
                        c.duration_ms = Some(*duration_ms);
                    }
                }
                None => {
                    if ended.insert(id.as_str(), ()).is_none() {
                        f.ended.push((
                            id.clone(),
                            *at,
                            db_text(cause).into_owned(),
                            *sip_status,
                            *duration_ms,
                        ));
                    }
                }
            },
        }
    }
    for (id, v) in resume {
        match v {
            Some((node, snapshot, at)) => {
                f.resume_save
                    .push((id.to_string(), node.to_string(), snapshot.to_string(), at));
            }
            None => f.resume_drop.push(id.to_string()),
        }
    }
    f
}

/// Rows per multi-row statement (14 binds per row stays far below both
/// databases' parameter limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 200;
