// Runs godot 0.7.10's own reactors over the events of each case in a
// cases file (tests/godot/cases.json) and prints what they emitted, for
// tests/godot_diff.rs to compare with `weir eval`.
//
// godot's timed stages read the wall clock (Date.now, setInterval,
// setTimeout); a fake clock (@sinonjs/fake-timers) is set to each
// event's time before it is written, so godot's clock is the events'
// time, as weir's is. Each case prints {"main": [...], "side": [...]}:
// what leaves the reactor, and what its side branches recorded with
// tap('side') (godot's side effects: .email(), .forward()).
'use strict';

const fs = require('fs');
const FakeTimers = require('@sinonjs/fake-timers');
const godot = require('godot');
const math = godot.math;
const windows = require('window-stream');

const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const results = {};

for (const c of cases) {
  const first = c.events.length ? c.events[0].time : 0;
  const clock = FakeTimers.install({ now: first * 1000 });
  const out = { main: [], side: [] };
  const copy = (d) => JSON.parse(JSON.stringify(d));
  // The godot expression sees: r() for godot.reactor(), math (godot's
  // combine functions), windows (window-stream) and tap(label).
  const r = () => godot.reactor();
  const tap = (label) => (d) => { out[label].push(copy(d)); return d; };
  // eslint-disable-next-line no-new-func
  const build = new Function('r', 'math', 'windows', 'tap', `return ${c.godot};`);
  const reactor = build(r, math, windows, tap);
  const source = new godot.common.ReadWriteStream();
  reactor.createStream(source).on('data', (d) => out.main.push(copy(d)));
  for (const event of c.events) {
    clock.tick(Math.max(0, event.time * 1000 - clock.now));
    source.write(Object.assign({}, event, { time: event.time * 1000 }));
  }
  clock.tick(Math.max(0, (c.until || first) * 1000 - clock.now));
  clock.uninstall();
  results[c.name] = out;
}
process.stdout.write(JSON.stringify(results) + '\n');
