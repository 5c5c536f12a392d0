"""A poa-netstats-style agent: typed messages to weir's GET /ws, JSON in
text frames and MessagePack in binary frames, printing each answer as a
JSON line (tests/protocols.rs drives it)."""

import asyncio
import json
import sys

import msgpack
import websockets


async def main(url):
    async with websockets.connect(url) as ws:
        messages = [
            json.dumps({"type": "metric", "seq": 1,
                        "event": {"host": "ws-1", "service": "cpu", "metric": 1}}),
            msgpack.packb({"type": "metric", "seq": 2, "events": [
                {"host": "ws-2", "service": "cpu", "metric": 2.5},
                {"service": "no host"},
                {"host": "ws-3", "service": "mem", "metric": 3}]}),
            json.dumps({"type": "nope", "seq": 3,
                        "event": {"host": "ws-x", "service": "cpu"}}),
            json.dumps({"type": "block", "event": {"host": "ws-4", "service": "height", "metric": 7}}),
        ]
        for message in messages:
            await ws.send(message)
            answer = await ws.recv()
            if isinstance(answer, bytes):
                answer = {"binary": msgpack.unpackb(answer)}
            else:
                answer = {"text": json.loads(answer)}
            print(json.dumps(answer), flush=True)


asyncio.run(main(sys.argv[1]))
