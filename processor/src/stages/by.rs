//! `by FIELD [FIELD…] [idle=D] [(PIPELINE)]`: fans out per key. Each
//! distinct value of the fields gets its own copy of the pipeline — the
//! nested one, or else the rest of the enclosing pipeline — and the copies'
//! outputs are recombined in key order. A key with no event for `idle`
//! (default 1h) and no pending timer is evicted with its state, so a
//! departed host does not hold memory forever (godot and Riemann never
//! free them).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{json, Value};
use weir_event::Event;

use crate::lang::{Literal, ParseError, StageSpec};
use crate::predicate::Field;
use crate::stage::{Chain, Stage, StateError};

const DEFAULT_IDLE_SECS: f64 = 3600.0;

/// Per-key fan-out.
pub struct By {
    fields: Vec<Field>,
    template: Vec<StageSpec>,
    idle: f64,
    children: BTreeMap<String, Child>,
    /// A lower bound of every child's deadline and idle expiry; exact after a tick.
    next_deadline: Option<f64>,
}

struct Child {
    chain: Chain,
    last_seen: f64,
}

impl By {
    /// Builds `by …`; returns how many stages of `rest` it takes over.
    pub fn from_spec(spec: &StageSpec, rest: &[StageSpec]) -> Result<(By, usize), ParseError> {
        spec.only_named(&["idle"])?;
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
        let (template, consumed) = match spec.nested() {
            Some(nested) => (nested.to_vec(), 0),
            None => (rest.to_vec(), rest.len()),
        };
        // Build once now so that every later copy is known to build.
        Chain::build(&template)?;
        let by = By {
            fields,
            template,
            idle: spec.duration("idle", None)?.unwrap_or(DEFAULT_IDLE_SECS),
            children: BTreeMap::new(),
            next_deadline: None,
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

    fn child_deadline(&self, child: &Child) -> f64 {
        child
            .chain
            .deadline()
            .map_or(child.last_seen + self.idle, |d| {
                d.min(child.last_seen + self.idle)
            })
    }

    fn lower_deadline(&mut self, deadline: f64) {
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
    }
}

impl Stage for By {
    fn event(&mut self, event: Event, now: f64, out: &mut Vec<Event>) {
        let key = self.key(&event);
        if !self.children.contains_key(key.as_ref()) {
            let chain = self.new_chain();
            let child = Child {
                chain,
                last_seen: now,
            };
            self.children.insert(key.clone().into_owned(), child);
        }
        let Some(child) = self.children.get_mut(key.as_ref()) else {
            return;
        };
        child.last_seen = now;
        child.chain.event(event, now, out);
        let deadline = child
            .chain
            .deadline()
            .map_or(now + self.idle, |d| d.min(now + self.idle));
        self.lower_deadline(deadline);
    }

    fn deadline(&self) -> Option<f64> {
        self.next_deadline
    }

    fn tick(&mut self, now: f64, out: &mut Vec<Event>) {
        let idle = self.idle;
        self.children.retain(|_, child| {
            if child.chain.deadline().is_some_and(|d| d <= now) {
                child.chain.tick(now, out);
            }
            child.chain.deadline().is_some() || child.last_seen + idle > now
        });
        self.next_deadline = self
            .children
            .values()
            .map(|child| self.child_deadline(child))
            .reduce(f64::min);
    }

    fn save(&self) -> Value {
        let children: serde_json::Map<String, Value> = self
            .children
            .iter()
            .map(|(key, child)| {
                (
                    key.clone(),
                    json!({"last_seen": child.last_seen, "state": child.chain.save()}),
                )
            })
            .collect();
        Value::Object(children)
    }

    fn load(&mut self, state: Value) -> Result<(), StateError> {
        self.children.clear();
        let Value::Object(children) = state else {
            return Err(StateError("by: expected an object of keys".into()));
        };
        for (key, saved) in children {
            let last_seen = saved["last_seen"]
                .as_f64()
                .ok_or_else(|| StateError(format!("by: key {key:?} has no last_seen")))?;
            let mut chain = self.new_chain();
            chain.load(saved["state"].clone())?;
            self.children.insert(key, Child { chain, last_seen });
        }
        self.next_deadline = self
            .children
            .values()
            .map(|child| self.child_deadline(child))
            .reduce(f64::min);
        Ok(())
    }
}
