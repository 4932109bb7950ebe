// A front-end as CRM front-ends are: the real socket.io-client, joined to a room,
// printing every live event as one JSON line. On every (re)connect it joins again
// with `since`, the last event id it saw per shard, so the master can replay.
//
//   node listen.mjs <master url> [json options: {apiKey, ws, all}]
import { io } from "socket.io-client";

const [url, optionsText] = process.argv.slice(2);
const options = JSON.parse(optionsText || "{}");
const lastIds = {};
const print = (record) => process.stdout.write(JSON.stringify(record) + "\n");

const socket = io(url, {
  transports: ["websocket"],
  auth: options.apiKey ? { apiKey: options.apiKey } : {},
  reconnectionDelay: 100,
  reconnectionDelayMax: 300,
});

socket.on("connect", () => {
  const join = { since: { ...lastIds } };
  if (options.all) join.all = true;
  if (options.ws) join.ws = options.ws;
  socket.emit("join", join, (answer) => print({ type: "joined", answer }));
});
socket.on("connect_error", (error) => print({ type: "connect_error", message: error.message }));
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, payload) => {
  if (payload && payload.shard && payload.eventId) lastIds[payload.shard] = payload.eventId;
  print({ type: "event", event, payload });
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
