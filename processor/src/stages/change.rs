//! State transitions.
//!
//! - `change FIELD [from=A to=B]` (godot): emits an event whose FIELD
//!   differs from the previous event's; never the first event. With
//!   `from` and `to`, only that transition.
//! - `changed [FIELD] [init=V]` (Riemann's `changed`, FIELD defaults to
//!   `state`): like `change`, but the first event is emitted too unless
//!   its value equals `init`.
//! - `changed-state [init=V]` (Riemann's `changed-state`): `changed state`
//!   for each (host, service) on its own — `by host service (changed
//!   state init=V)`.

use serde::{Deserialize, Serialize};
use weir_event::Event;

use crate::lang::{Arg, Literal, ParseError, StageSpec};
use crate::predicate::Field;
use crate::stage::{Built, Options, StageDef, json_state, Stage};

/// The stages this file declares.
pub const STAGES: &[StageDef] = &[
    StageDef {
        name: "change",
        options: Options::Only(&["from", "to"]),
        doc: "Events whose FIELD differs from the previous event's (godot).",
        build: |spec, _| Built::one(Change::any_change(spec)?),
    },
    StageDef {
        name: "changed",
        options: Options::Only(&["init"]),
        doc: "Events whose FIELD (default state) changed, the first one too unless it equals init (Riemann).",
        build: |spec, _| Built::one(Change::changed(spec)?),
    },
    StageDef {
        name: "changed-state",
        options: Options::Only(&["init"]),
        doc: "State changes of each (host, service), the first too unless it equals init (Riemann).",
        build: |spec, _| changed_state(spec),
    },
];

/// Builds `changed-state [init=V]` as `by host service (changed state [init=V])`.
fn changed_state(spec: &StageSpec) -> Result<Built, ParseError> {
    if spec.positional(0).is_some() || spec.nested().is_some() {
        return Err(spec.error("takes only init=V"));
    }
    let word = |w: &str| Arg::Positional(Literal::Word(w.to_owned()));
    let changed = StageSpec {
        name: "changed".into(),
        args: std::iter::once(word("state"))
            .chain(spec.args.iter().cloned())
            .collect(),
        ..spec.clone()
    };
    let by = StageSpec {
        name: "by".into(),
        args: vec![word("host"), word("service"), Arg::Nested(vec![changed])],
        ..spec.clone()
    };
    crate::stage::build(&by, &[])
}

/// Emits events whose field changed.
pub struct Change {
    field: Field,
    transition: Option<(String, String)>,
    emit_first: bool,
    init: Option<String>,
    state: ChangeState,
}

#[derive(Default, Serialize, Deserialize)]
struct ChangeState {
    last: Option<String>,
}

fn text(spec: &StageSpec, key: &str) -> Result<Option<String>, ParseError> {
    match spec.named(key) {
        None => Ok(None),
        Some(literal) => literal
            .as_text()
            .map(|t| Some(t.to_owned()))
            .ok_or_else(|| spec.error(format!("{key} must be a string, found {literal}"))),
    }
}

fn field(spec: &StageSpec, default: Option<Field>) -> Result<Field, ParseError> {
    match spec.positional(0) {
        Some(literal) => {
            let name = literal
                .as_text()
                .ok_or_else(|| spec.error(format!("expected a field name, found {literal}")))?;
            Field::parse(name, spec.column)
        }
        None => default.ok_or_else(|| spec.error("needs a field, e.g. change state")),
    }
}

impl Change {
    /// Builds godot's `change FIELD [from= to=]`.
    pub fn any_change(spec: &StageSpec) -> Result<Change, ParseError> {
        let transition = match (text(spec, "from")?, text(spec, "to")?) {
            (Some(from), Some(to)) => Some((from, to)),
            (None, None) => None,
            _ => return Err(spec.error("from and to go together")),
        };
        Ok(Change {
            field: field(spec, None)?,
            transition,
            emit_first: false,
            init: None,
            state: ChangeState::default(),
        })
    }

    /// Builds Riemann's `changed [FIELD] [init=V]`.
    pub fn changed(spec: &StageSpec) -> Result<Change, ParseError> {
        Ok(Change {
            field: field(spec, Some(Field::State))?,
            transition: None,
            emit_first: true,
            init: text(spec, "init")?,
            state: ChangeState::default(),
        })
    }
}

impl Stage for Change {
    fn event(&mut self, event: Event, _now: f64, out: &mut Vec<Event>) {
        let value = self.field.key(&event).into_owned();
        let previous = self.state.last.replace(value.clone());
        let changed = match (&previous, &self.transition) {
            (None, _) => self.emit_first && self.init.as_ref() != Some(&value),
            (Some(last), None) => *last != value,
            (Some(last), Some((from, to))) => last == from && value == *to,
        };
        if changed {
            out.push(event);
        }
    }

    json_state!();
}
