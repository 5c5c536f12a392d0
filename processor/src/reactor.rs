//! Reactors (a named pipeline with its output) and the per-partition
//! [`Engine`] that runs every reactor over a partition's entries on event
//! time.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use prometheus::IntCounter;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_event::{Entry, Event, Handoff, Moved, ResultId, ResultRecord};

use crate::lang::{self, ParseError};
use crate::metrics::LATE_EVENTS;
use crate::stage::{Chain, SideResult, Stage, StateError};
use crate::stages::output::Output;

/// A reactor as written in the config (`[[reactor]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReactorConfig {
    /// Unique name; part of every result id.
    pub name: String,
    /// The pipeline text.
    pub pipeline: String,
}

/// A reactor that failed to build, with its name and the position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pipeline \"{reactor}\", {error}")]
pub struct ReactorError {
    /// The reactor's name.
    pub reactor: String,
    /// What is wrong, and where.
    pub error: ParseError,
}

/// A built reactor.
pub struct Reactor {
    name: Arc<str>,
    version: Arc<str>,
    /// Its results, counted (`weir_processor_emits_total{reactor}`).
    emits: IntCounter,
    chain: Chain,
    output: Output,
    /// The topics it forwards to (side branches included).
    topics: Vec<String>,
    /// Whether its pipeline has side branches.
    has_side: bool,
}

/// FNV-1a over the pipeline text: a version that is stable across builds.
fn version_of(pipeline: &str) -> String {
    let hash = pipeline.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

impl Reactor {
    /// Parses and builds a reactor.
    pub fn build(config: &ReactorConfig) -> Result<Reactor, ReactorError> {
        let wrap = |error| ReactorError {
            reactor: config.name.clone(),
            error,
        };
        let specs = lang::parse(&config.pipeline).map_err(wrap)?;
        let (stages, output) = Output::split(&specs).map_err(wrap)?;
        let chain = Chain::build(stages).map_err(wrap)?;
        Ok(Reactor {
            name: config.name.as_str().into(),
            version: version_of(&config.pipeline).into(),
            emits: crate::metrics::EMITS.with_label_values(&[&config.name]),
            has_side: chain.has_side(),
            chain,
            output,
            topics: Output::topics(&specs),
        })
    }

    /// The topics this reactor forwards to (they must exist).
    pub fn forward_topics(&self) -> &[String] {
        &self.topics
    }

    /// The reactor's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name@version`, the key of this reactor's state.
    pub fn identity(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Runs every reactor over one partition's entries, in log order.
pub struct Engine {
    partition: u32,
    reactors: Vec<Reactor>,
    /// The partition's event-time clock: the largest time seen.
    clock: f64,
    /// The clock does not move past this ([`Engine::limit_clock`]).
    clock_limit: f64,
    /// Events older than `clock - lateness` are counted as late.
    lateness: f64,
    /// State of reactor versions no longer configured, kept in every
    /// checkpoint until [`Engine::forget`] drops it.
    retired: Map<String, Value>,
    /// Ids of the latest moves handed off or taken in, so that a marker or
    /// moved state seen again (a retried hand-off) is applied once.
    moves: VecDeque<String>,
    /// Hand-offs processed since [`Engine::take_handovers`].
    handovers: Vec<Handover>,
    /// Whether it counts in the processor's metrics (a backtest does not).
    counted: bool,
}

/// Move ids an engine remembers.
const REMEMBERED_MOVES: usize = 1000;

/// What a processed hand-off marker asks of the worker: append the moved
/// state (none when this move was handed off before) to the new
/// partition, then the registry record that completes the move.
#[derive(Debug)]
pub struct Handover {
    /// The marker.
    pub handoff: Handoff,
    /// The state the reactors gave up.
    pub moved: Option<Moved>,
}

impl Engine {
    /// An engine for `partition` with fresh state.
    pub fn new(partition: u32, reactors: Vec<Reactor>, lateness: f64) -> Engine {
        Engine {
            partition,
            reactors,
            clock: f64::NEG_INFINITY,
            clock_limit: f64::INFINITY,
            lateness,
            retired: Map::new(),
            moves: VecDeque::new(),
            handovers: Vec::new(),
            counted: true,
        }
    }

    /// The same engine, not counting in the processor's metrics (what a
    /// backtest runs must not look like live results).
    pub fn uncounted(mut self) -> Engine {
        self.counted = false;
        self
    }

    /// The event-time clock (−∞ before the first entry).
    pub fn clock(&self) -> f64 {
        self.clock
    }

    /// Processes the entry at `offset` and appends its results to `out`.
    pub fn process(&mut self, offset: u64, entry: Entry, out: &mut Vec<ResultRecord>) {
        let event = match entry {
            Entry::Tick(time) => {
                self.advance(time, offset, out);
                return;
            }
            Entry::Handoff(handoff) => return self.hand_off(handoff),
            Entry::Moved(moved) => return self.take_in(moved),
            Entry::Decommission(gone) => return self.decommission(offset, &gone.host, out),
            Entry::Event(event) => event,
        };
        if event.time < self.clock - self.lateness && self.counted {
            // Late events are processed at the current clock (timers never
            // run backwards); the metric makes them visible.
            LATE_EVENTS.inc();
        }
        self.advance(event.time, offset, out);
        let now = self.clock;
        let mut emitted = Vec::new();
        let Some((last, others)) = self.reactors.split_last_mut() else {
            return;
        };
        for reactor in others {
            reactor.chain.event(event.clone(), now, &mut emitted);
            Self::collect(
                reactor,
                self.partition,
                offset,
                &mut emitted,
                out,
                self.counted,
            );
        }
        // The last reactor takes the event itself: no copy in the common case.
        last.chain.event(event, now, &mut emitted);
        Self::collect(
            last,
            self.partition,
            offset,
            &mut emitted,
            out,
            self.counted,
        );
    }

    /// Takes the state every reactor keeps for the hosts of an application
    /// that moves to another partition, for [`Engine::take_handovers`].
    fn hand_off(&mut self, handoff: Handoff) {
        if handoff.to == self.partition {
            return;
        }
        if self.moves.contains(&handoff.id) {
            // Handed off before: only the completion is repeated.
            return self.handovers.push(Handover {
                handoff,
                moved: None,
            });
        }
        let hosts: HashSet<String> = handoff.hosts.iter().cloned().collect();
        let mut reactors = Map::new();
        for reactor in &mut self.reactors {
            let taken = reactor.chain.take_hosts(&hosts);
            if !taken.is_null() {
                reactors.insert(reactor.identity(), taken);
            }
        }
        self.remember(handoff.id.clone());
        tracing::info!(partition = self.partition, uid = %handoff.uid, to = handoff.to, id = %handoff.id,
            reactors = reactors.len(), "handing an application's state over");
        let moved = Moved {
            id: handoff.id.clone(),
            uid: handoff.uid.clone(),
            from: self.partition,
            reactors,
        };
        self.handovers.push(Handover {
            handoff,
            moved: Some(moved),
        });
    }

    /// Drops what every reactor keeps for `host` (removed from the
    /// registry) and emits one `decommissioned` result from each reactor
    /// that kept something, instead of the expiry it would have had.
    fn decommission(&mut self, offset: u64, host: &str, out: &mut Vec<ResultRecord>) {
        let hosts = HashSet::from([host.to_owned()]);
        let time = if self.clock.is_finite() {
            self.clock
        } else {
            0.0
        };
        for reactor in &mut self.reactors {
            if reactor.chain.take_hosts(&hosts).is_null() {
                continue;
            }
            let mut event = Event::new(host, time);
            event.state = Some("decommissioned".into());
            event.description = Some("removed from the registry: its state was dropped".into());
            let mut emitted = vec![event];
            Self::collect(
                reactor,
                self.partition,
                offset,
                &mut emitted,
                out,
                self.counted,
            );
        }
        tracing::info!(
            partition = self.partition,
            host,
            "host decommissioned: its state dropped"
        );
    }

    /// Adds state moved here from another partition, once per move.
    fn take_in(&mut self, mut moved: Moved) {
        if self.moves.contains(&moved.id) {
            return;
        }
        self.remember(moved.id.clone());
        for reactor in &mut self.reactors {
            let Some(state) = moved.reactors.remove(&reactor.identity()) else {
                continue;
            };
            if let Err(error) = reactor.chain.put_hosts(state) {
                crate::metrics::MOVED_STATE_DROPPED.inc();
                weir_log::drops::dropped("processor", "moved_state", 1, || {
                    format!("{} state of {}: {error}", reactor.name, moved.uid)
                });
                tracing::warn!(partition = self.partition, reactor = %reactor.name, uid = %moved.uid, %error,
                    "moved state does not fit the reactor; dropped");
            }
        }
        if !moved.reactors.is_empty() {
            crate::metrics::MOVED_STATE_DROPPED.inc_by(moved.reactors.len() as u64);
            weir_log::drops::dropped(
                "processor",
                "moved_state",
                moved.reactors.len() as u64,
                || format!("state of {} for reactors not running here", moved.uid),
            );
            tracing::warn!(partition = self.partition, uid = %moved.uid, reactors = ?moved.reactors.keys().collect::<Vec<_>>(),
                "moved state of reactors not running here; dropped");
        }
        tracing::info!(partition = self.partition, uid = %moved.uid, from = moved.from, id = %moved.id, "took an application's state in");
    }

    fn remember(&mut self, id: String) {
        if self.moves.len() == REMEMBERED_MOVES {
            self.moves.pop_front();
        }
        self.moves.push_back(id);
    }

    /// The hand-offs processed since the last call, in order.
    pub fn take_handovers(&mut self) -> Vec<Handover> {
        std::mem::take(&mut self.handovers)
    }

    /// Reads a `weir.events` record: bounds the clock by its append time
    /// plus `max_future` (the log keeps append times, so a replay, a
    /// backtest or an explanation computes the same clock as live
    /// processing did) and decodes its entry.
    pub fn entry_of(
        &mut self,
        record: &weir_log::Record,
        max_future: f64,
    ) -> Result<Entry, weir_event::Rejection> {
        if record.timestamp_ms > 0 {
            self.limit_clock(record.timestamp_ms as f64 / 1000.0 + max_future);
        }
        Entry::decode(&record.value)
    }

    /// Keeps the clock at or below `limit` from the next entry on: the
    /// runtime bounds it by each entry's append time, so an event stamped
    /// far ahead moves the clock no further than that.
    pub fn limit_clock(&mut self, limit: f64) {
        self.clock_limit = limit;
    }

    /// Moves the clock to `time` (if later, and at most to the limit)
    /// and fires due timers.
    pub fn advance(&mut self, time: f64, offset: u64, out: &mut Vec<ResultRecord>) {
        let time = time.min(self.clock_limit);
        if time <= self.clock {
            return;
        }
        self.clock = time;
        let mut fired = Vec::new();
        for reactor in &mut self.reactors {
            // Fire timers in deadline order, each at its own time, so a jump
            // of the clock gives the same results as a steady one.
            let mut previous = f64::NEG_INFINITY;
            while let Some(deadline) = reactor.chain.deadline().filter(|d| *d <= time) {
                if deadline <= previous {
                    // A deadline that does not move after its tick: fire the rest at `time`.
                    reactor.chain.tick(time, &mut fired);
                    break;
                }
                reactor.chain.tick(deadline, &mut fired);
                previous = deadline;
            }
            Self::collect(
                reactor,
                self.partition,
                offset,
                &mut fired,
                out,
                self.counted,
            );
        }
    }

    /// Turns a reactor's emitted events, then what its side branches
    /// produced, into result records with ids numbered after the ones
    /// this input offset already produced.
    fn collect(
        reactor: &mut Reactor,
        partition: u32,
        offset: u64,
        emitted: &mut Vec<Event>,
        out: &mut Vec<ResultRecord>,
        counted: bool,
    ) {
        let mut side = Vec::new();
        if reactor.has_side {
            reactor.chain.take_side(&mut side);
        }
        if emitted.is_empty() && side.is_empty() {
            return;
        }
        if counted {
            reactor.emits.inc_by((emitted.len() + side.len()) as u64);
        }
        let first_seq = out
            .iter()
            .rev()
            .take_while(|r| r.id.offset == offset)
            .filter(|r| r.id.reactor == reactor.name)
            .count() as u32;
        let main = emitted.drain(..).map(|event| SideResult {
            output: reactor.output.clone(),
            event,
        });
        for (i, result) in main.chain(side).enumerate() {
            out.push(ResultRecord {
                id: ResultId {
                    reactor: reactor.name.clone(),
                    version: reactor.version.clone(),
                    partition,
                    offset,
                    seq: first_seq + i as u32,
                },
                notify: result.output.notify(),
                forward: result.output.forward(),
                event: result.event,
            });
        }
    }

    /// Whether checkpointed engine `state` holds the state of reactor
    /// version `identity` (`name@version`).
    pub fn saved(state: &Value, identity: &str) -> bool {
        state
            .get("reactors")
            .and_then(Value::as_object)
            .is_some_and(|reactors| reactors.contains_key(identity))
    }

    /// The state of every reactor and the clock, for a checkpoint:
    /// `{"clock": …, "reactors": {"name@version": state}, "moves": […]}`
    /// (built in place: the reactors' state, which can be large, is not
    /// copied again).
    pub fn save(&self) -> Value {
        let mut reactors = self.retired.clone();
        reactors.extend(self.reactors.iter().map(|r| (r.identity(), r.chain.save())));
        let clock = if self.clock.is_finite() {
            self.clock
        } else {
            f64::MIN
        };
        let mut state = Map::new();
        state.insert("clock".into(), Value::from(clock));
        state.insert("reactors".into(), Value::Object(reactors));
        if !self.moves.is_empty() {
            let moves = self.moves.iter().map(|id| Value::from(id.as_str()));
            state.insert("moves".into(), Value::Array(moves.collect()));
        }
        Value::Object(state)
    }

    /// Restores a checkpoint. A reactor whose `name@version` is absent (new
    /// or changed pipeline) starts fresh; the names of those are returned.
    /// State of versions no longer configured is kept, not run.
    pub fn load(&mut self, state: Value) -> Result<Vec<String>, StateError> {
        let Value::Object(mut state) = state else {
            return Err(StateError("engine state: expected an object".into()));
        };
        let clock = state
            .get("clock")
            .and_then(Value::as_f64)
            .ok_or_else(|| StateError("engine state: no clock".into()))?;
        let Some(Value::Object(mut reactors)) = state.remove("reactors") else {
            return Err(StateError("engine state: no reactors".into()));
        };
        let moves: VecDeque<String> = match state.remove("moves") {
            Some(moves) => serde_json::from_value(moves)?,
            None => VecDeque::new(),
        };
        self.clock = if clock == f64::MIN {
            f64::NEG_INFINITY
        } else {
            clock
        };
        self.moves = moves;
        let mut fresh = Vec::new();
        for reactor in &mut self.reactors {
            match reactors.remove(&reactor.identity()) {
                Some(state) => reactor.chain.load(state)?,
                None => fresh.push(reactor.name.to_string()),
            }
        }
        self.retired = reactors;
        Ok(fresh)
    }

    /// Drops the kept state of a retired reactor version (`name@version`);
    /// false if there is none.
    pub fn forget(&mut self, identity: &str) -> bool {
        self.retired.remove(identity).is_some()
    }
}
