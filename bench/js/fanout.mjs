// Many real socket.io-client sockets on one master, counting live events.
//
//   node fanout.mjs <master url> <sockets> <events> [connect batch]
//
// Each socket is its own connection (websocket only, forceNew, no reconnection,
// so a lost socket shows up as loss), joins the room `all` and records every
// `bench:tick` event: its number `n` and the delay from the sender's `sentAt`
// to its arrival here. Both sides read the machine's monotonic clock
// (CLOCK_MONOTONIC: Python's time.monotonic_ns, node's process.hrtime), so no
// wall-clock offset or step enters the delay. Prints JSON lines:
// `ready` once every socket has joined, `progress` while events arrive; on the
// stdin line `report <events>` it prints the `report` (latencies per phase, the
// earliest and latest arrival of each event over this process's sockets, events
// missing or seen twice per socket) and exits. It exits by itself after five minutes whatever
// happens.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

// The socket.io-client the tests install (`make js`), not a second copy.
const require = createRequire(new URL("../../tests/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const [url, countText, eventsText, batchText] = process.argv.slice(2);
const count = Number(countText);
const expected = Number(eventsText); // events numbered 1..expected
const batch = Number(batchText || 50);
const print = (record) => process.stdout.write(JSON.stringify(record) + "\n");
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms, CLOCK_MONOTONIC
setTimeout(() => process.exit(3), 300_000).unref();

const sockets = [];
// Per socket: times each event n arrived (a flat typed array, not a Map per socket,
// so the counting adds little to this process's garbage collection).
const seen = [];
const phases = {}; // phase -> {latencies, firstSent, lastReceived, spread: {n: [first, last]}}
let received = 0;
let disconnects = 0;

function open(index) {
  return new Promise((resolve) => {
    const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
    const mine = new Uint16Array(expected + 2); // [expected + 1]: any other n
    seen[index] = mine;
    sockets[index] = socket;
    socket.on("connect", () =>
      socket.emit("join", { all: true }, (answer) => resolve(Boolean(answer && answer.ok))),
    );
    socket.on("connect_error", () => resolve(false));
    socket.on("disconnect", () => (disconnects += 1));
    socket.on("bench:tick", (payload) => {
      const at = now();
      const n = payload.n;
      mine[Number.isInteger(n) && n >= 1 && n <= expected ? n : expected + 1] += 1;
      const phase = (phases[payload.phase] ||= {
        latencies: [],
        firstSent: Infinity,
        lastReceived: 0,
        spread: {},
      });
      const delay = Math.round((at - payload.sentAt) * 100) / 100;
      phase.latencies.push(delay);
      phase.firstSent = Math.min(phase.firstSent, payload.sentAt);
      phase.lastReceived = Math.max(phase.lastReceived, at);
      const spread = (phase.spread[payload.n] ||= [delay, delay]);
      spread[0] = Math.min(spread[0], delay);
      spread[1] = Math.max(spread[1], delay);
      received += 1;
    });
  });
}

let joined = 0;
for (let start = 0; start < count; start += batch) {
  const answers = await Promise.all(
    Array.from({ length: Math.min(batch, count - start) }, (_, i) => open(start + i)),
  );
  joined += answers.filter(Boolean).length;
}
print({ type: "ready", sockets: count, joined });

let told = -1;
setInterval(() => {
  if (received !== told) print({ type: "progress", received });
  told = received;
}, 100).unref();

for await (const line of createInterface({ input: process.stdin })) {
  const [word, eventsText] = line.trim().split(" ");
  if (word !== "report") continue;
  const events = Number(eventsText);
  let missing = 0;
  let duplicates = 0;
  for (const mine of seen) {
    for (let n = 1; n <= events; n += 1) {
      const times = mine[n];
      if (times === 0) missing += 1;
      if (times > 1) duplicates += times - 1;
    }
    duplicates += mine[expected + 1]; // an event this run never sent
  }
  const report = {
    type: "report",
    sockets: count,
    joined,
    received,
    missing,
    duplicates,
    disconnects,
    phases,
  };
  for (const socket of sockets) socket.close();
  // A large line to a pipe is written asynchronously: exit once it is out.
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(0));
}
