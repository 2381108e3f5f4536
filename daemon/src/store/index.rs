//! The in-memory index of every name with its public facts (creation date, lock state):
//! `exists`, `lookup`, `list` and `status` answer from it without touching the engine.
//!
//! Their speed therefore does not depend on how many records fit in the engine's cache.
//!
//! It is built by a background thread after open (until then the store reads the engine);
//! writes made meanwhile go into it directly and mark the name, so the builder's scan never
//! puts back a version older than theirs.

use crate::legacy::LegacyKind;
use compact_str::CompactString;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::{Condvar, Mutex, RwLock};

/// What `lookup` tells about an account besides its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Creation date.
    pub created: time::Date,
    /// Whether the account is locked.
    pub locked: bool,
    /// Where a legacy verifier came from and its scheme, until the first login replaces it.
    pub legacy: Option<LegacyKind>,
    /// An admin started deleting the account; its hooks have not all succeeded.
    pub deleting: bool,
}

impl Facts {
    /// The creation date as stored: `YYYY-MM-DD`.
    pub fn created(&self) -> String {
        self.created.to_string()
    }
}

/// The index and how far it is built.
pub struct Index {
    /// The names, their facts and the build phase, read by every lookup and written by
    /// writers and the builder.
    state: RwLock<State>,
    /// Tells waiters (list, status) that building ended.
    built: (Mutex<bool>, Condvar),
}

struct State {
    /// Every name, in name order (list pages). Names of up to 24 bytes are kept inline in the
    /// tree's nodes: no allocation per name, no pointer to follow when comparing.
    names: BTreeMap<CompactString, Facts>,
    /// Locked accounts among them (status).
    locked: u64,
    /// Accounts still on a legacy verifier, by kind (status).
    legacy: BTreeMap<LegacyKind, u64>,
    /// Accounts being deleted (status, and the pending deletions qam-hooks asks for).
    deleting: BTreeSet<CompactString>,
    /// Whether the index may answer yet, and while building, the names writers changed so
    /// the builder's scan does not overwrite them.
    phase: Phase,
}

enum Phase {
    /// The builder is scanning; the names writers changed meanwhile.
    Building(HashSet<CompactString>),
    Ready,
    /// The builder met a record it could not read: the store is damaged.
    Failed(String),
}

/// Whether the index can answer, and if not why.
pub enum Answer<T> {
    Known(T),
    /// Still building: ask the engine.
    Unknown,
    Damaged(String),
}

impl Index {
    pub fn new() -> Index {
        Index {
            state: RwLock::new(State {
                names: BTreeMap::new(),
                locked: 0,
                legacy: BTreeMap::new(),
                deleting: BTreeSet::new(),
                phase: Phase::Building(HashSet::new()),
            }),
            built: (Mutex::new(false), Condvar::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn answer<T>(&self, with: impl FnOnce(&State) -> T) -> Answer<T> {
        let state = self.read();
        match &state.phase {
            Phase::Ready => Answer::Known(with(&state)),
            Phase::Building(_) => Answer::Unknown,
            Phase::Failed(reason) => Answer::Damaged(reason.clone()),
        }
    }

    /// The facts of `name`: Known(None) when there is no such account.
    pub fn facts(&self, name: &str) -> Answer<Option<Facts>> {
        self.answer(|state| state.names.get(name).copied())
    }

    /// Up to `limit` names after `after`, once built.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, String> {
        self.wait_built();
        let state = self.read();
        if let Phase::Failed(reason) = &state.phase {
            return Err(reason.clone());
        }
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .names
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(name, _)| name.to_string())
            .collect())
    }

    /// (users, locked, legacy by kind), once built.
    pub fn counts(&self) -> Result<(u64, u64, BTreeMap<LegacyKind, u64>), String> {
        self.wait_built();
        let state = self.read();
        match &state.phase {
            Phase::Failed(reason) => Err(reason.clone()),
            _ => Ok((state.names.len() as u64, state.locked, state.legacy.clone())),
        }
    }

    fn wait_built(&self) {
        let (done, signal) = &self.built;
        let mut done = done.lock().unwrap_or_else(|poison| poison.into_inner());
        while !*done {
            done = signal
                .wait(done)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    /// A write's outcome: `name` now has `facts` (None: removed).
    pub fn set(&self, name: &str, facts: Option<Facts>) {
        let mut state = self.write();
        if let Phase::Building(touched) = &mut state.phase {
            touched.insert(CompactString::from(name));
        }
        apply(&mut state, name, facts);
    }

    /// Every record the builder read becomes the index, with the writes made meanwhile on
    /// top. Built from sorted names, the tree's nodes are full: a third less memory than a
    /// tree grown name by name in random order.
    pub fn install(&self, mut scanned: Vec<(CompactString, Facts)>) {
        scanned.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let touched_so_far = match &self.read().phase {
            Phase::Building(touched) => touched.clone(),
            _ => return,
        };
        let mut names: BTreeMap<CompactString, Facts> = scanned
            .into_iter()
            .filter(|(name, _)| !touched_so_far.contains(name))
            .collect();
        let mut state = self.write();
        let State {
            names: written,
            phase,
            ..
        } = &mut *state;
        if let Phase::Building(touched) = phase {
            for name in touched.iter() {
                match written.get(name) {
                    Some(facts) => names.insert(name.clone(), *facts),
                    None => names.remove(name),
                };
            }
        }
        state.locked = names.values().filter(|facts| facts.locked).count() as u64;
        state.legacy = BTreeMap::new();
        for kind in names.values().filter_map(|facts| facts.legacy) {
            *state.legacy.entry(kind).or_insert(0) += 1;
        }
        state.deleting = names
            .iter()
            .filter(|(_, facts)| facts.deleting)
            .map(|(name, _)| name.clone())
            .collect();
        state.names = names;
    }

    /// The accounts being deleted, in name order, once built.
    pub fn deleting(&self) -> Result<Vec<String>, String> {
        self.wait_built();
        let state = self.read();
        match &state.phase {
            Phase::Failed(reason) => Err(reason.clone()),
            _ => Ok(state.deleting.iter().map(|name| name.to_string()).collect()),
        }
    }

    /// Building ended: `Ok` the index is complete, `Err` the store is damaged.
    pub fn finish(&self, outcome: Result<(), String>) {
        self.write().phase = match outcome {
            Ok(()) => Phase::Ready,
            Err(reason) => Phase::Failed(reason),
        };
        let (done, signal) = &self.built;
        *done.lock().unwrap_or_else(|poison| poison.into_inner()) = true;
        signal.notify_all();
    }
}

fn apply(state: &mut State, name: &str, facts: Option<Facts>) {
    if facts.is_some_and(|facts| facts.deleting) {
        state.deleting.insert(CompactString::from(name));
    } else {
        state.deleting.remove(name);
    }
    let old = match facts {
        Some(facts) => {
            if facts.locked {
                state.locked += 1;
            }
            if let Some(kind) = facts.legacy {
                *state.legacy.entry(kind).or_insert(0) += 1;
            }
            state.names.insert(CompactString::from(name), facts)
        }
        None => state.names.remove(name),
    };
    if let Some(old) = old {
        if old.locked {
            state.locked -= 1;
        }
        if let Some(kind) = old.legacy {
            if let Some(count) = state.legacy.get_mut(&kind) {
                *count -= 1;
                if *count == 0 {
                    state.legacy.remove(&kind);
                }
            }
        }
    }
}
