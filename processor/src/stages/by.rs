//! `by FIELD [FIELD…] [idle=D] [recombine=false] [each=true] [(PIPELINE)]`:
//! fans out per key. Each distinct value of the fields gets its own copy
//! of the pipeline — the nested one, or else the rest of the enclosing
//! pipeline — and the copies' outputs are recombined (Riemann's `by`,
//! godot's `recombine: true`). Several fields make one composite key
//! (Riemann); `each=true` fans out on each field separately, so an event
//! goes into the copy of its host and into the copy of its service
//! (godot's `by([…])`). `recombine=false` (godot's default) passes every
//! event on unchanged and makes the copies a side branch: their results
//! go to the nested pipeline's own output (`notify …`, `forward …`,
//! `emit`); so does a nested pipeline that ends in an output.
//!
//! A key with no event for `idle` (default 1h) and no pending timer is
//! evicted with its state, so a departed host does not hold memory
//! forever (godot and Riemann never free them).
//!
//! When an application moves to another partition, the children keyed
//! by its hosts move with it (whole, with their timers); a `by` not keyed
//! by host passes the move on to its children's pipelines.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{json, Map, Value};
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::predicate::Field;
use crate::stage::{
    to_side, Built, Chain, Options, SideResult, Stage, StageDef, StateError, Time,
};
use crate::stages::output::Output;

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "by",
        options: Options::Only(&["idle", "recombine", "each"]),
        doc: "A copy of the pipeline per value of the fields.",
        build: |spec, rest| {
            let (by, consumed) = By::from_spec(spec, rest)?;
            Ok(Built {
                stage: Box::new(by),
                consumed,
            })
        },
    },
];

const DEFAULT_IDLE_SECS: f64 = 3600.0;

/// Per-key fan-out.
pub struct By {
    fields: Vec<Field>,
    /// Which of `fields` is `host`, if any: the children a move takes.
    host_field: Option<usize>,
    template: Vec<StageSpec>,
    /// Each field fans out on its own (keys `INDEX \u{1e} VALUE`).
    each: bool,
    /// Every event passes on (`recombine=false`).
    pass_through: bool,
    /// Where the copies' results go when they do not flow on.
    side: Option<Output>,
    /// Whether the copies have side branches of their own.
    template_has_side: bool,
    /// What a copy emitted, before it goes to `side`.
    emitted: Vec<Event>,
    side_results: Vec<SideResult>,
    idle: f64,
    /// Hashed (SipHash: hosts are outside input); nothing iterates it in
    /// an order that shows: timers are ordered by `timers`, and saved state
    /// is a sorted JSON map.
    children: HashMap<String, Child>,
    /// Every child's pending deadline, ordered by time then key, so the
    /// children that are due are found without a scan.
    timers: BTreeSet<(Time, String)>,
    /// When idle children are next swept out (once per `idle` of event time).
    next_sweep: Option<f64>,
}

struct Child {
    /// Its key in `children` (for its timers, once the event that found
    /// it has moved on).
    key: String,
    chain: Chain,
    last_seen: f64,
    /// The deadline this child has in `timers`.
    deadline: Option<f64>,
}

impl By {
    /// Builds `by …`; returns how many stages of `rest` it takes over.
    pub fn from_spec(spec: &StageSpec, rest: &[StageSpec]) -> Result<(By, usize), ParseError> {
        let mut fields = Vec::new();
        let mut i = 0;
        while let Some(literal) = spec.positional(i) {
            let names = match literal {
                Literal::List(items) => items.clone(),
                single => vec![single.clone()],
            };
            for name in names {
                let text = name
                    .as_text()
                    .ok_or_else(|| spec.error(format!("expected a field name, found {name}")))?;
                fields.push(Field::parse(text, spec.column)?);
            }
            i += 1;
        }
        if fields.is_empty() {
            return Err(spec.error("needs at least one field, e.g. by host"));
        }
        let recombine = flag(spec, "recombine", true)?;
        let (template, side, consumed) = match spec.nested() {
            Some(nested) => {
                let (stages, output) = Output::split_named(nested)?;
                let side = if recombine {
                    output
                } else {
                    Some(output.unwrap_or(Output::Emit))
                };
                (stages.to_vec(), side, 0)
            }
            None if recombine => (rest.to_vec(), None, rest.len()),
            None => {
                return Err(spec.error(
                    "recombine=false needs a nested pipeline: by host recombine=false (…)",
                ))
            }
        };
        // Build once now so that every later copy is known to build.
        let template_has_side = Chain::build(&template)?.has_side();
        let by = By {
            host_field: fields.iter().position(|f| matches!(f, Field::Host)),
            fields,
            template,
            each: flag(spec, "each", false)?,
            pass_through: !recombine,
            side,
            template_has_side,
            emitted: Vec::new(),
            side_results: Vec::new(),
            idle: spec.duration("idle", None)?.unwrap_or(DEFAULT_IDLE_SECS),
            children: HashMap::new(),
            timers: BTreeSet::new(),
            next_sweep: None,
        };
        Ok((by, consumed))
    }

    fn key<'a>(&self, event: &'a Event) -> Cow<'a, str> {
        if let [field] = self.fields.as_slice() {
            return field.key(event);
        }
        let mut key = String::new();
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            key.push_str(&field.key(event));
        }
        Cow::Owned(key)
    }

    fn new_chain(&self) -> Chain {
        Chain::build(&self.template).expect("the template was built in from_spec")
    }

    fn new_child(&self, key: String, last_seen: f64) -> Child {
        Child {
            key,
            chain: self.new_chain(),
            last_seen,
            deadline: None,
        }
    }

    /// Re-files the child's timer after its chain ran.
    fn reschedule(timers: &mut BTreeSet<(Time, String)>, child: &mut Child) {
        let deadline = child.chain.deadline();
        if deadline == child.deadline {
            return;
        }
        if let Some(old) = child.deadline {
            timers.remove(&(Time(old), child.key.clone()));
        }
        if let Some(new) = deadline {
            timers.insert((Time(new), child.key.clone()));
        }
        child.deadline = deadline;
    }

    /// Runs `event` through one child's chain.
    fn feed(
        timers: &mut BTreeSet<(Time, String)>,
        child: &mut Child,
        event: Event,
        now: f64,
        out: &mut Vec<Event>,
    ) {
        child.last_seen = now;
        child.chain.event(event, now, out);
        Self::reschedule(timers, child);
    }

    /// A child from its saved `{"last_seen": …, "state": …}`.
    /// (Taken by value: a checkpoint of many keys is not copied again.)
    fn restore_child(&self, key: &str, mut saved: Value) -> Result<Child, StateError> {
        let last_seen = saved["last_seen"]
            .as_f64()
            .ok_or_else(|| StateError(format!("by: key {key:?} has no last_seen")))?;
        let mut child = self.new_child(key.to_owned(), last_seen);
        child.chain.load(saved["state"].take())?;
        Ok(child)
    }

    /// Files `child` under its key, replacing (and unscheduling) any
    /// child already there.
    fn insert_child(&mut self, mut child: Child) {
        if let Some(old) = self.children.remove(&child.key) {
            if let Some(deadline) = old.deadline {
                self.timers.remove(&(Time(deadline), old.key));
            }
        }
        Self::reschedule(&mut self.timers, &mut child);
        let sweep = child.last_seen + self.idle;
        self.next_sweep = Some(self.next_sweep.map_or(sweep, |s| s.min(sweep)));
        self.children.insert(child.key.clone(), child);
    }

    /// Whether `key` is a key of one of `hosts`.
    fn keyed_by(&self, key: &str, hosts: &HashSet<String>) -> bool {
        let Some(at) = self.host_field else {
            return false;
        };
        let host = if self.each {
            key.split_once('\u{1e}')
                .filter(|(field, _)| *field == at.to_string())
                .map(|(_, host)| host)
        } else if self.fields.len() == 1 {
            Some(key)
        } else {
            key.split('\u{1f}').nth(at)
        };
        host.is_some_and(|h| hosts.contains(h))
    }

    /// Runs `event` through the copy of `key`, made when missing; what it
    /// emits goes to `out`, or to `emitted` when the copies are a side
    /// branch.
    fn dispatch(&mut self, key: Cow<'_, str>, event: Event, now: f64, out: &mut Vec<Event>) {
        let sink = if self.side.is_some() {
            &mut self.emitted
        } else {
            out
        };
        match self.children.get_mut(key.as_ref()) {
            Some(child) => Self::feed(&mut self.timers, child, event, now, sink),
            None => {
                let key = key.into_owned();
                let mut child = Child {
                    key: key.clone(),
                    chain: Chain::build(&self.template)
                        .expect("the template was built in from_spec"),
                    last_seen: now,
                    deadline: None,
                };
                Self::feed(&mut self.timers, &mut child, event, now, sink);
                self.children.insert(key, child);
            }
        }
    }

    /// Sends what the copies emitted to the side output, and collects
    /// their own side branches' results.
    fn collect_side(&mut self, key: &str) {
        if let Some(output) = &self.side {
            to_side(output, &mut self.emitted, &mut self.side_results);
        }
        if let Some(child) = self.children.get_mut(key) {
            child.chain.take_side(&mut self.side_results);
        }
    }

    /// Drops children idle for `idle` with nothing pending.
    fn sweep(&mut self, now: f64) {
        let idle = self.idle;
        self.children
            .retain(|_, child| child.deadline.is_some() || child.last_seen + idle > now);
        self.next_sweep = (!self.children.is_empty()).then_some(now + idle);
    }
}

/// A `true`/`false` option, `default` when absent.
fn flag(spec: &StageSpec, key: &str, default: bool) -> Result<bool, ParseError> {
    match spec.named(key).map(|l| l.as_text()) {
        None => Ok(default),
        Some(Some("true")) => Ok(true),
        Some(Some("false")) => Ok(false),
        Some(_) => Err(spec.error(format!("{key} must be true or false"))),
    }
}

impl Stage for By {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        let has_side = self.has_side();
        if self.each {
            for i in 0..self.fields.len() {
                let key = format!("{i}\u{1e}{}", self.fields[i].key(&event));
                self.dispatch(Cow::Borrowed(&key), event.clone(), now, out);
                if has_side {
                    self.collect_side(&key);
                }
            }
        } else if self.pass_through || has_side {
            let key = self.key(&event).into_owned();
            self.dispatch(Cow::Borrowed(&key), event.clone(), now, out);
            self.collect_side(&key);
        } else {
            // The common case: no copy of the event, no key allocated for
            // a key seen before.
            let key = self.key(&event);
            if let Some(child) = self.children.get_mut(key.as_ref()) {
                Self::feed(&mut self.timers, child, event, now, out);
            } else {
                let key = key.into_owned();
                let mut child = self.new_child(key.clone(), now);
                Self::feed(&mut self.timers, &mut child, event, now, out);
                self.children.insert(key, child);
            }
            self.next_sweep.get_or_insert(now + self.idle);
            return;
        }
        if self.pass_through {
            out.push(event);
        }
        self.next_sweep.get_or_insert(now + self.idle);
    }

    fn has_side(&self) -> bool {
        self.side.is_some() || self.template_has_side
    }

    fn take_side(&mut self, side: &mut Vec<SideResult>) {
        side.append(&mut self.side_results);
    }

    fn deadline(&self) -> Option<f64> {
        let timer = self.timers.first().map(|(t, _)| t.0);
        match (timer, self.next_sweep) {
            (Some(t), Some(s)) => Some(t.min(s)),
            (t, s) => t.or(s),
        }
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        while let Some((time, _)) = self.timers.first() {
            if time.0 > now {
                break;
            }
            let Some((_, key)) = self.timers.pop_first() else {
                break;
            };
            let Some(child) = self.children.get_mut(&key) else {
                continue;
            };
            child.deadline = None;
            let sink = if self.side.is_some() {
                &mut self.emitted
            } else {
                &mut *out
            };
            child.chain.tick(now, sink);
            Self::reschedule(&mut self.timers, child);
            if self.side.is_some() || self.template_has_side {
                self.collect_side(&key);
            }
        }
        if self.next_sweep.is_some_and(|s| s <= now) {
            self.sweep(now);
        }
    }

    fn save(&self) -> Value {
        let children: serde_json::Map<String, Value> = self
            .children
            .iter()
            .map(|(key, child)| {
                let saved = json!({"last_seen": child.last_seen, "state": child.chain.save()});
                (key.clone(), saved)
            })
            .collect();
        json!({"children": children, "next_sweep": self.next_sweep})
    }

    fn load(&mut self, mut state: Value) -> Result<(), StateError> {
        self.children.clear();
        self.timers.clear();
        let Value::Object(children) = state["children"].take() else {
            return Err(StateError("by: expected an object of keys".into()));
        };
        self.next_sweep = state["next_sweep"].as_f64();
        self.children.reserve(children.len());
        for (key, saved) in children {
            let mut child = self.restore_child(&key, saved)?;
            Self::reschedule(&mut self.timers, &mut child);
            self.children.insert(key, child);
        }
        Ok(())
    }

    /// `{"keys": {KEY: child}}` for the children keyed by `hosts`, and
    /// `{"nested": {KEY: {"last_seen": …, "state": taken}}}` for what the
    /// other children's pipelines gave up.
    fn take_hosts(&mut self, hosts: &HashSet<String>) -> Value {
        let leaving: Vec<String> = self
            .children
            .keys()
            .filter(|key| self.keyed_by(key, hosts))
            .cloned()
            .collect();
        let mut keys = Map::new();
        for key in leaving {
            if let Some(child) = self.children.remove(&key) {
                if let Some(deadline) = child.deadline {
                    self.timers.remove(&(Time(deadline), key.clone()));
                }
                let saved = json!({"last_seen": child.last_seen, "state": child.chain.save()});
                keys.insert(key, saved);
            }
        }
        let mut nested = Map::new();
        for (key, child) in &mut self.children {
            let taken = child.chain.take_hosts(hosts);
            if !taken.is_null() {
                Self::reschedule(&mut self.timers, child);
                nested.insert(
                    key.clone(),
                    json!({"last_seen": child.last_seen, "state": taken}),
                );
            }
        }
        if keys.is_empty() && nested.is_empty() {
            return Value::Null;
        }
        json!({"keys": keys, "nested": nested})
    }

    /// Files the moved children (replacing any of the same key) and hands
    /// nested state to the children of its key, made when missing.
    fn put_hosts(&mut self, state: Value) -> Result<(), StateError> {
        if state.is_null() {
            return Ok(());
        }
        let (Some(keys), Some(nested)) = (state["keys"].as_object(), state["nested"].as_object())
        else {
            return Err(StateError("by: moved state needs keys and nested".into()));
        };
        for (key, saved) in keys {
            let child = self.restore_child(key, saved.clone())?;
            self.insert_child(child);
        }
        for (key, saved) in nested {
            let mut child = match self.children.remove(key) {
                Some(child) => child,
                None => self.new_child(key.clone(), saved["last_seen"].as_f64().unwrap_or(0.0)),
            };
            child.chain.put_hosts(saved["state"].clone())?;
            self.insert_child(child);
        }
        Ok(())
    }
}
