// godot 0.7.10's own TCP server with one counting reactor, for
// `weir bench --godot`: the same generator feeds it and weir, so the two
// figures come from one run on one machine (run with `node -e`, godot on
// NODE_PATH, the ports in GODOT_TCP_PORT and GODOT_HTTP_PORT). Prints "listening" once both
// ports are open; GET / on the HTTP port answers the events counted.
'use strict';

const http = require('http');
const godot = require('godot');

const tcpPort = Number(process.env.GODOT_TCP_PORT);
const httpPort = Number(process.env.GODOT_HTTP_PORT);
let counted = 0;
const server = godot.createServer({
  type: 'tcp',
  reactors: [godot.reactor().map(function (event) { counted += 1; return event; })],
});
server.listen(tcpPort, '127.0.0.1', function (err) {
  if (err) { throw err; }
  http.createServer(function (req, res) { res.end(String(counted)); })
    .listen(httpPort, '127.0.0.1', function () { console.log('listening'); });
});
