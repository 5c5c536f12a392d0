// Sends events to weir with godot's own client, unchanged:
//   node send.js tcp|udp|unix PORT_OR_PATH SERVICE COUNT
// One producer emits every 100 ms (godot's ttl is in milliseconds); the
// script closes the client after COUNT events.
var godot = require('godot');

var type = process.argv[2], target = process.argv[3];
var service = process.argv[4], count = +process.argv[5];

var producer = godot.producer({ host: 'godot-' + type, service: service, ttl: 100 });
var client = godot.createClient({ type: type, producers: [producer] });
var sent = 0;
producer.on('data', function () {
  sent += 1;
  if (sent >= count) {
    clearInterval(producer.ttlId);
    client.remove(producer);
    setTimeout(function () { client.close(); process.exit(0); }, 200);
  }
});
if (type === 'unix') {
  client.connect(target);
} else {
  client.connect(+target, '127.0.0.1');
}
