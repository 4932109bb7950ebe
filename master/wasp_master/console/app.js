// The wasp console: shards, every slot's session, QR log-in, chats and sending, and a
// search of every shard's messages at once (GET /api/search). In a chat an agent replies
// to, reacts to, edits and deletes messages, and sees the other side typing.
//
// It speaks only to the master that serves it: the HTTP API under /api/ (with
// `x-api-key` when the master has API keys) and the live events over Socket.IO
// (/socket.io). State comes from GET /api/shards and /api/accounts, then from
// the events: on every (re)connect the console joins with `since`, the last
// event id it saw per shard, and the master replays what came after, so a
// reload or a lost connection rebuilds the same picture. No framework: a few
// DOM helpers and text nodes only (message bodies are never parsed as HTML).
//
// It calls each operation by the name the master's route table gives it (OPERATIONS),
// finding its method and path in the master's OpenAPI document, generated from that table.
"use strict";

const KEY_STORAGE = "wasp.apiKey";
const SHARDS_EVERY_MS = 3000;
const SLOT_RE = /^([A-Z]{1,8})([1-9][0-9]{0,8})$/;
// WhatsApp lets a sender edit a message for 15 minutes.
const EDIT_WINDOW_S = 15 * 60;
const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
// Typing: tell WhatsApp again at most this often while keys are pressed, "paused" after
// this long without one (WhatsApp itself drops a typing state after about 25 s).
const TYPING_EVERY_MS = 4000;
const TYPING_IDLE_MS = 5000;
const PRESENCE_SHOWN_MS = 25000;

// The operations this page calls, by the name the master's route table gives each one (its
// operationId in /openapi.json): the page reads that document once and takes each one's
// method and path from it, so a path changed in the table moves the console with it, and
// an operation the master does not document is not offered. UNNAMED would hold one the
// table has no name for, found by its documented method and path: none now.
const OPERATIONS = [
  "shards",
  "accountsList",
  "status",
  "connect",
  "scan",
  "destroy",
  "logout",
  "chats",
  "conversations",
  "openChat",
  "send",
  "media",
  "react",
  "editMessage",
  "deleteMessage",
  "setPresence",
  "searchAcrossShards",
];
const UNNAMED = {
};

const state = {
  shards: [], // GET /api/shards
  accounts: new Map(), // slot -> account from accounts.json
  sessions: new Map(), // slot -> {status, qr}
  unread: new Map(), // slot -> count of live messages not yet seen
  lastIds: {}, // shard -> eventId of the last event seen
  selected: null, // the slot whose page is open
  chats: [], // the selected slot's conversations (GET .../conversations)
  chatId: null,
  wantChat: null, // {slot, chatId} to open once the slot's page loads (a search hit)
  search: { q: "", items: [], next: null, partial: [], busy: false },
  messages: [],
  pending: [], // messages sent from this page, not yet in the chat: {id, waMessageId, to, body, state}
  actions: [], // reactions, edits and deletes queued from this page: {id, slot, chatId}
  routes: null, // name -> [method, path template] of OPERATIONS, from /openapi.json once read
  chosen: null, // wa_message_id of the message whose actions are shown
  picking: null, // wa_message_id whose emoji picker is open
  compose: null, // {mode: "reply" | "edit", id: wa_message_id} while replying or editing
  presence: null, // {slot, chatId, state, until}: the open chat's peer typing or recording
  noScan: new Set(), // shards whose backend has no scan (not the simulator)
  replaying: false,
  loaded: false,
};

// ---------- small helpers ----------

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function parseSlot(text) {
  const found = SLOT_RE.exec(text || "");
  return found ? { prefix: found[1], number: Number(found[2]) } : null;
}

function slotsOf(shard) {
  const first = parseSlot(shard.from);
  const last = parseSlot(shard.to);
  const out = [];
  if (!first || !last) return out;
  for (let n = first.number; n <= last.number && out.length < 100000; n++) out.push(first.prefix + n);
  return out;
}

function shardOf(slot) {
  const parsed = parseSlot(slot);
  if (!parsed) return null;
  return (
    state.shards.find((s) => {
      const a = parseSlot(s.from);
      const b = parseSlot(s.to);
      return a && b && a.prefix === parsed.prefix && a.number <= parsed.number && parsed.number <= b.number;
    }) || null
  );
}

// The simulator's phone number of a slot (worker/wasp_worker/backends/simulator.py `phone_of`):
// 555, the prefix length, two digits per prefix letter, the number in nine digits.
function phoneOf(slot) {
  const parsed = parseSlot(slot);
  if (!parsed) return "";
  const letters = [...parsed.prefix].map((c) => String(c.charCodeAt(0) - 64).padStart(2, "0")).join("");
  return `555${parsed.prefix.length}${letters}${String(parsed.number).padStart(9, "0")}`;
}

function slotOfPhone(phone) {
  const digits = String(phone || "").split("@")[0];
  if (!digits.startsWith("555") || digits.length < 4) return null;
  const size = Number(digits[3]);
  const letters = digits.slice(4, 4 + 2 * size);
  const number = Number(digits.slice(4 + 2 * size));
  if (!size || letters.length !== 2 * size || !Number.isInteger(number) || number < 1) return null;
  let prefix = "";
  for (let i = 0; i < letters.length; i += 2) prefix += String.fromCharCode(Number(letters.slice(i, i + 2)) + 64);
  const slot = prefix + number;
  return parseSlot(slot) && phoneOf(slot) === digits ? slot : null;
}

function chatLabel(chatId) {
  const slot = slotOfPhone(chatId);
  const user = String(chatId).split("@")[0];
  if (!slot) return { title: "+" + user, sub: chatId.endsWith("@g.us") ? "group" : "" };
  const name = state.accounts.get(slot)?.name;
  return { title: name ? `${slot} · ${name}` : slot, sub: "+" + user };
}

// ---------- what a message says ----------

// A message's extra fields (location, contacts, poll, mentions, quoted_id) as the item
// carries them, or inside its `payload` (the store's JSON of them, a string or an object).
function extra(m, key) {
  if (m[key] !== undefined && m[key] !== null) return m[key];
  let payload = m.payload;
  if (typeof payload === "string") {
    try {
      payload = JSON.parse(payload);
    } catch (error) {
      payload = null;
    }
  }
  return payload && typeof payload === "object" ? payload[key] ?? null : null;
}

const kindOf = (m) => m.message_type || m.media_type || "text";
const isOwn = (m) => m.direction === "out";
const findMessage = (id) => state.messages.find((m) => m.wa_message_id === id) || null;

function senderLabel(m) {
  if (isOwn(m)) return "You";
  return m.push_name || chatLabel(String(m.sender || state.chatId || "")).title;
}

// A contact card's number, international with its +: the item's `phone`, else its vCard's TEL.
function phoneOfCard(card) {
  const tel = /TEL[^:\n]*:([^\r\n]+)/i.exec(card.vcard || "");
  const phone = String(card.phone || (tel ? tel[1].trim() : ""));
  return /^[0-9]+$/.test(phone) ? "+" + phone : phone;
}

const optionName = (option) => (typeof option === "string" ? option : option?.name || "");

// One line for a message: chat list previews, quotes, the composer's "replying to".
function snippet(m) {
  if (!m) return "";
  if (m.deleted_at) return "This message was deleted";
  const kind = kindOf(m);
  switch (kind) {
    case "text":
      return m.body || "";
    case "location":
      return "📍 " + (extra(m, "location")?.name || "Location");
    case "contact":
      return "👤 " + ((extra(m, "contacts") || []).map((c) => c.name).join(", ") || "Contact");
    case "poll":
      return "📊 " + (extra(m, "poll")?.question || "Poll");
    case "voice":
      return "🎤 Voice note";
    case "sticker":
      return "Sticker";
    default:
      return m.body ? (m.media_type ? `[${kind}] ${m.body}` : m.body) : `[${kind}]`;
  }
}

// Reactions by emoji: how many, and whether this account's is one of them.
function reactionGroups(m) {
  const groups = new Map();
  for (const r of m.reactions || []) {
    if (!r.emoji) continue;
    const group = groups.get(r.emoji) || { emoji: r.emoji, count: 0, mine: false, pending: false };
    group.count += 1;
    group.mine = group.mine || Boolean(r.from_me);
    group.pending = group.pending || Boolean(r.pending); // shown before the store has it
    groups.set(r.emoji, group);
  }
  return [...groups.values()];
}

const myReaction = (m) => (m.reactions || []).find((r) => r.from_me && r.emoji)?.emoji || "";

function editable(m) {
  const young = Date.now() / 1000 - (m.timestamp || 0) < EDIT_WINDOW_S;
  return isOwn(m) && !m.deleted_at && kindOf(m) === "text" && young && offered("editMessage");
}

const deletable = (m) => isOwn(m) && !m.deleted_at && offered("deleteMessage");

function statusOf(slot) {
  return state.sessions.get(slot)?.status || "OFF";
}

function timeText(seconds) {
  if (!seconds) return "";
  const when = new Date(seconds * 1000);
  const sameDay = when.toDateString() === new Date().toDateString();
  return sameDay
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleDateString([], { month: "short", day: "numeric" });
}

function toast(text, kind = "info") {
  const node = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  $("toasts").append(node);
  setTimeout(() => node.classList.add("leaving"), 4200);
  setTimeout(() => node.remove(), 4700);
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers["x-api-key"] = key;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, "the master does not answer");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  if (response.status === 401) {
    askForKey(keyReason());
    throw new ApiError(401, data?.error || "API key needed");
  }
  if (!response.ok || (data && data.ok === false)) {
    throw new ApiError(response.status, data?.error || `${response.status} ${response.statusText}`);
  }
  return data || {};
}

// The master's operations by name, from its OpenAPI document (read once; again after a failure).
let routesRead = null;
function loadRoutes() {
  routesRead ??= fetch("/openapi.json", { headers: { accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    })
    .then((doc) => {
      const unnamed = new Map(Object.entries(UNNAMED).map(([name, route]) => [route.join(" "), name]));
      const routes = new Map();
      for (const [path, item] of Object.entries(doc.paths || {})) {
        for (const [method, operation] of Object.entries(item)) {
          const route = [method.toUpperCase(), path];
          const name = operation.operationId || unnamed.get(route.join(" "));
          if (name) routes.set(name, route);
        }
      }
      state.routes = routes;
    })
    .catch((error) => {
      routesRead = null;
      throw new ApiError(0, `cannot read the master's API document (${error.message})`);
    });
  return routesRead;
}

// Only the operations listed above: the test holds each of them to the route table.
const listed = (name) => OPERATIONS.includes(name) || Object.hasOwn(UNNAMED, name);

// Whether the master documents an operation (false until its document is read).
const offered = (name) => listed(name) && Boolean(state.routes && state.routes.has(name));

// An operation by name: its method and path, the path's parameters filled in (encoded).
async function fill(name, params) {
  if (!listed(name)) throw new ApiError(0, `${name} is not one of the console's operations`);
  await loadRoutes();
  const route = state.routes.get(name);
  if (!route) throw new ApiError(0, `the master has no operation ${name}`);
  const [method, template] = route;
  const path = template.replace(/\{(\w+)\}/g, (_, key) => {
    if (params[key] === undefined || params[key] === null) throw new ApiError(0, `${name}: no ${key}`);
    return encodeURIComponent(params[key]);
  });
  return [method, path];
}

async function call(name, params = {}, { body, query } = {}) {
  const [method, path] = await fill(name, params);
  const search = query ? `?${new URLSearchParams(query)}` : "";
  return api(method, path + search, body);
}

// A stored media file as a blob: URL (an <img> or <audio> cannot send the API key), kept.
const blobs = new Map();
async function mediaUrl(slot, name) {
  const [, path] = await fill("media", { slot, name });
  if (!blobs.has(path)) {
    const key = localStorage.getItem(KEY_STORAGE);
    const response = await fetch(path, { headers: key ? { "x-api-key": key } : {} });
    if (!response.ok) throw new ApiError(response.status, `media: ${response.status}`);
    blobs.set(path, URL.createObjectURL(await response.blob()));
  }
  return blobs.get(path);
}

const newKey = () => `console-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;

// ---------- API keys ----------

function keyReason() {
  return localStorage.getItem(KEY_STORAGE)
    ? "The master refused the saved key. Enter another one."
    : "This master needs an API key (one of its API_KEYS) for its API and live events.";
}

function askForKey(reason) {
  const dialog = $("key-dialog");
  $("key-button").hidden = false;
  if (dialog.open) return;
  $("key-reason").textContent = reason;
  $("key-input").value = localStorage.getItem(KEY_STORAGE) || "";
  dialog.showModal();
}

function setupKeyDialog() {
  $("key-button").hidden = !localStorage.getItem(KEY_STORAGE);
  $("key-button").addEventListener("click", () => askForKey("The API key this browser sends as x-api-key."));
  $("key-form").addEventListener("submit", () => {
    const value = $("key-input").value.trim();
    if (value) localStorage.setItem(KEY_STORAGE, value);
    reconnectEverything();
  });
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("key-dialog").close();
    reconnectEverything();
  });
}

// ---------- loading ----------

async function loadShards() {
  const wasRunning = Boolean(state.selected && shardOf(state.selected)?.running);
  try {
    const data = await call("shards");
    state.shards = data.shards || [];
    state.loaded = true;
  } catch (error) {
    if (!state.loaded) $("shards-empty").textContent = `Cannot load shards: ${error.message}`;
    return;
  }
  // A slot opened before its worker answered (a page loaded as the fleet starts) has no
  // chats yet: read them once its shard runs.
  if (!wasRunning && state.selected && shardOf(state.selected)?.running) loadChats();
  render();
}

async function loadAccounts() {
  try {
    const data = await call("accountsList");
    state.accounts = new Map((data.accounts || []).map((a) => [a.slot, a]));
  } catch (error) {
    return;
  }
  render();
}

async function refreshStatus(slot) {
  try {
    const data = await call("status", { slot });
    applyStatus(slot, data.status, data.qr);
  } catch (error) {
    if (error.status !== 401) applyStatus(slot, "OFF", null);
  }
}

// ---------- live events ----------

let socket = null;

function connectSocket() {
  if (socket) socket.disconnect();
  socket = io({
    path: "/socket.io",
    transports: ["websocket", "polling"],
    auth: (give) => give(localStorage.getItem(KEY_STORAGE) ? { apiKey: localStorage.getItem(KEY_STORAGE) } : {}),
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
  });
  socket.on("connect", () => {
    setLive("joining");
    const since = {};
    for (const shard of state.shards) since[shard.id] = state.lastIds[shard.id] ?? null;
    state.replaying = true;
    socket.emit("join", { all: true, since }, (answer) => {
      state.replaying = false;
      if (answer && answer.ok) {
        setLive("live");
        verifySessions();
      } else {
        setLive("offline");
        toast(`Live events refused: ${answer?.error || "no answer"}`, "error");
      }
    });
  });
  socket.on("disconnect", () => setLive("offline"));
  socket.on("connect_error", (error) => {
    setLive("offline");
    if (/key/i.test(error.message || "")) askForKey(keyReason());
  });
  socket.onAny((event, payload) => {
    if (payload && payload.shard && payload.eventId) state.lastIds[payload.shard] = payload.eventId;
    const handle = HANDLERS[event];
    if (handle && payload) handle(payload);
  });
}

// The master reads workers' /health every 2 s: after a session starts or stops, ask again
// a little later so the capacity bar follows.
let shardsTimer = 0;
function refreshShardsSoon() {
  if (shardsTimer) return;
  shardsTimer = setTimeout(() => {
    shardsTimer = 0;
    loadShards();
  }, 2500);
}

function setLive(mode) {
  const node = $("live");
  node.dataset.state = mode;
  node.textContent = { live: "live", joining: "joining", offline: "offline", connecting: "connecting" }[mode];
}

// A replay can describe sessions of a worker that restarted since: ask the slots that
// look alive (and the named accounts) what they are now.
function verifySessions() {
  const slots = new Set([...state.accounts.keys()]);
  for (const [slot, session] of state.sessions) if (session.status !== "OFF") slots.add(slot);
  if (state.selected) slots.add(state.selected);
  for (const slot of slots) if (shardOf(slot)?.running) refreshStatus(slot);
}

const HANDLERS = {
  "wa:status": (p) => applyStatus(p.slot, p.status, p.status === "CONNECTING" ? undefined : null),
  "wa:qr": (p) => applyStatus(p.slot, "CONNECTING", p.qr),
  "wa:message": (p) => onInbound(p),
  "wa:message_status": (p) => onMessageStatus(p),
  "wa:reaction": (p) =>
    onChange(p, (m) => {
      const rest = (m.reactions || []).filter((r) => r.reactor !== p.reactor && !(p.from_me && r.from_me));
      m.reactions = p.emoji ? [...rest, { reactor: p.reactor, emoji: p.emoji, from_me: Boolean(p.from_me) }] : rest;
    }),
  "wa:message_edited": (p) =>
    onChange(p, (m) => {
      if (typeof p.body === "string") m.body = p.body;
      m.edited_at = p.edited_at || Date.now() / 1000;
    }),
  "wa:message_deleted": (p) =>
    onChange(p, (m) => {
      m.deleted_at = p.deleted_at || Date.now() / 1000;
      m.body = "";
      m.reactions = [];
    }),
  // Counts need every voter's choice: the store has them, the event only this voter's.
  "wa:poll_vote": (p) => onChange({ ...p, wa_message_id: p.poll_id }, null),
  "wa:presence": (p) => onPresence(p),
};

// A change to a stored message (reaction, edit, delete, vote): shown at once when its chat
// is open, then the chat read again from the store, which has the whole picture.
function onChange(change, apply) {
  if (change.slot !== state.selected) return;
  if (change.chat_id !== state.chatId) {
    if (!state.replaying) loadChats();
    return;
  }
  const message = findMessage(change.wa_message_id);
  if (message && apply) apply(message);
  renderConversation();
  if (!state.replaying) refreshSoon();
}

let refreshTimer = 0;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (state.chatId) openChat(state.chatId, { quiet: true });
  }, 200);
}

// The open chat's peer typing or recording: shown until "paused" (or another state), a
// message from them, or PRESENCE_SHOWN_MS without news. Replayed presence is stale: skipped.
function onPresence(p) {
  if (p.slot !== state.selected || state.replaying) return;
  if (p.state === "typing" || p.state === "recording") {
    const who = String(p.chat_id).endsWith("@g.us") ? chatLabel(String(p.sender || "")).title : "";
    state.presence = { slot: p.slot, chatId: p.chat_id, state: p.state, who, until: Date.now() + PRESENCE_SHOWN_MS };
    setTimeout(renderPresence, PRESENCE_SHOWN_MS + 50);
  } else if (state.presence && state.presence.chatId === p.chat_id) {
    state.presence = null;
  }
  renderPresence();
}

function renderPresence() {
  const node = $("presence");
  if (!node) return;
  const p = state.presence;
  const shown = p && p.slot === state.selected && p.chatId === state.chatId && Date.now() < p.until;
  // In a group, who: "Ana is typing…"; in a direct chat the header already says who.
  const doing = shown ? (p.state === "recording" ? "recording…" : "typing…") : "";
  node.textContent = shown && p.who ? `${p.who} is ${doing}` : doing;
  node.dataset.state = shown ? p.state : "";
}

function applyStatus(slot, status, qr) {
  if (!slot) return;
  const before = state.sessions.get(slot) || { status: "OFF", qr: null };
  const next = { status: status === "DISCONNECTED" ? "OFF" : status, qr: qr === undefined ? before.qr : qr };
  if (next.status !== "CONNECTING") next.qr = null;
  state.sessions.set(slot, next);
  if (!state.replaying && slot === state.selected && before.status === "CONNECTING" && next.status === "CONNECTED") {
    toast(`${slot} is connected`, "ok");
  }
  if (before.status !== next.status) refreshShardsSoon();
  render();
}

function onInbound(message) {
  if (message.slot === state.selected) {
    if (message.chat_id === state.chatId) {
      if (!state.messages.some((m) => m.wa_message_id === message.wa_message_id)) {
        state.messages.push({
          ...message,
          direction: message.from_me ? "out" : "in",
          sender: message.from,
          body: message.body || "",
        });
      }
      // WhatsApp clears "typing…" when the message it announced arrives.
      if (state.presence?.chatId === message.chat_id) state.presence = null;
      if (!state.replaying) openChat(state.chatId, { quiet: true });
    } else if (!state.replaying) {
      loadChats();
    }
  } else if (!state.replaying) {
    state.unread.set(message.slot, (state.unread.get(message.slot) || 0) + 1);
    const from = slotOfPhone(message.from) || "+" + message.from;
    toast(`${message.slot}: new message from ${from}`);
  }
  render();
}

const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓", played: "✓✓" };

// Sent or failed rows not (yet) known to this page: an action's 202 can come after its
// status event (the queue may send first); `track` looks here.
const finished = new Map();

function onMessageStatus(update) {
  const action = state.actions.find((a) => a.id === update.id && a.slot === update.slot);
  if (update.state === "sent" || update.state === "failed") {
    if (!action) {
      finished.set(`${update.slot}/${update.id}`, update);
      if (finished.size > 500) finished.delete(finished.keys().next().value);
    } else {
      actionDone(action, update);
      return;
    }
  }
  if (action) return;
  if (update.state in TICKS && update.state !== "sent") {
    // A receipt: a sent message was delivered, read or played.
    const shown = update.slot === state.selected && state.messages.find((m) => m.wa_message_id === update.waMessageId);
    if (shown) {
      shown.status = update.state;
      renderConversation();
    }
    return;
  }
  const mine = state.pending.find((m) => m.id === update.id && m.slot === update.slot);
  if (!mine) return;
  mine.state = update.state;
  mine.reason = update.reason;
  if (update.state === "failed" && !state.replaying) toast(`Not sent: ${update.reason || "failed"}`, "error");
  if (update.state === "sent" && update.slot === state.selected) {
    if (state.chatId === update.to) openChat(update.to, { quiet: true });
    else loadChats();
  }
  renderConversation();
}

// ---------- slot page ----------

// The chat list is the store's conversations (unread counts, names, pinned first as the
// worker sorts them); a conversation row names its last message by id only, so the text
// shown under it comes from the slot's chats when the row carries none.
async function fetchChats(slot) {
  const data = await call("conversations", { slot }, { query: { limit: "100" } });
  const items = data.items || [];
  if (items.length && !items.every((c) => c.last_message)) {
    const chats = await call("chats", { slot });
    const last = new Map((chats.chats || []).map((c) => [c.chat_id, c.last_message]));
    for (const item of items) item.last_message = item.last_message || last.get(item.chat_id) || null;
  }
  return items;
}

async function loadChats() {
  const slot = state.selected;
  if (!slot || !shardOf(slot)?.running) return;
  try {
    const items = await fetchChats(slot);
    if (slot !== state.selected) return;
    state.chats = items;
  } catch (error) {
    state.chats = [];
  }
  const wanted = state.wantChat && state.wantChat.slot === slot ? state.wantChat.chatId : null;
  if (wanted) {
    state.wantChat = null;
    await openChat(wanted, { quiet: true });
    return;
  }
  renderChats();
}

async function openChat(chatId, { quiet = false } = {}) {
  const slot = state.selected;
  if (!slot) return;
  try {
    const data = await call("openChat", { slot }, { body: { chat_id: chatId, limit: 100 } });
    if (slot !== state.selected) return;
    if (state.chatId !== data.chat_id) leaveChat();
    state.chatId = data.chat_id;
    state.messages = data.messages || [];
    const known = new Set(state.messages.map((m) => m.wa_message_id));
    state.pending = state.pending.filter((m) => !known.has(m.waMessageId));
    const peer = slotOfPhone(state.chatId);
    if (peer) {
      $("to-slot").value = peer;
    }
    $("to-phone").value = state.chatId.split("@")[0];
  } catch (error) {
    if (!quiet) toast(`Cannot open the chat: ${error.message}`, "error");
  }
  // Refresh the list too: opening marked messages read.
  try {
    const items = await fetchChats(slot);
    if (slot === state.selected) state.chats = items;
  } catch (error) {
    // the conversation is still shown
  }
  renderChats();
  renderConversation();
}

// What belongs to the open chat only: its chosen message, the composer's reply or edit,
// the peer's typing, this agent's typing.
function leaveChat() {
  stopTyping();
  state.chosen = state.picking = null;
  if (state.compose) clearCompose();
  state.presence = null;
}

function select(slot) {
  if (slot === state.selected) return;
  leaveChat();
  state.selected = slot;
  state.chats = [];
  state.chatId = null;
  state.messages = [];
  state.pending = [];
  if (slot) {
    state.unread.delete(slot);
    $("to-slot").value = "";
    $("to-phone").value = "";
    $("message-text").value = "";
    refreshStatus(slot);
    loadChats();
  }
  render();
}

async function act(action) {
  const slot = state.selected;
  if (!slot) return;
  if (action === "logout" && !confirm(`Log ${slot} out? Its device is unlinked and its session wiped.`)) return;
  const buttons = document.querySelectorAll("[data-action]");
  buttons.forEach((b) => (b.disabled = true));
  try {
    const data = await call(action, { slot });
    applyStatus(slot, data.status, data.qr ?? null);
    if (action === "connect") loadChats();
  } catch (error) {
    if (action === "scan" && error.status === 400 && /simulator/.test(error.message)) {
      const shard = shardOf(slot);
      if (shard) state.noScan.add(shard.id);
      toast("This shard runs real WhatsApp: scan the code with a phone.", "info");
    } else if (error.status === 404 && (action === "destroy" || action === "logout")) {
      applyStatus(slot, "OFF", null);
    } else {
      toast(`${action} ${slot}: ${error.message}`, "error");
    }
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    render();
  }
}

async function send(event) {
  event.preventDefault();
  const slot = state.selected;
  const text = $("message-text").value;
  if (state.compose?.mode === "edit") return saveEdit(slot, text);
  // A reply goes to the chat of the message it quotes, whatever the "To" field says.
  const replyTo = state.compose?.mode === "reply" && state.chatId ? state.compose.id : null;
  const to = replyTo ? state.chatId : $("to-phone").value.trim();
  if (!slot || !to || !text.trim()) return;
  stopTyping();
  $("send-button").disabled = true;
  try {
    const body = { to, text, idempotency_key: newKey() };
    if (replyTo) body.reply_to = replyTo;
    const data = await call("send", { slot }, { body });
    const message = data.message;
    state.pending.push({ ...message, slot, body: text, state: message.state, quoted_id: replyTo });
    // The queue may have sent it before this answer came: its status event waited here.
    const early = finished.get(`${slot}/${message.id}`);
    if (early) onMessageStatus(early);
    $("message-text").value = "";
    if (replyTo) state.compose = null;
    if (state.chatId !== message.to) {
      state.chatId = message.to;
      state.messages = [];
      await openChat(message.to, { quiet: true });
    }
  } catch (error) {
    toast(`Not sent: ${error.message}`, "error");
  } finally {
    $("send-button").disabled = false;
    $("message-text").focus();
    renderConversation();
  }
}

// ---------- acting on a message: reply, react, edit, delete ----------

// A queued action (its 202 answer is the queue row, as /send's): its status event ends it.
function track(data, slot, chatId) {
  const id = data?.message?.id ?? data?.id;
  if (id === undefined) return refreshSoon();
  const action = { id, slot, chatId };
  const early = finished.get(`${slot}/${id}`);
  if (early) actionDone(action, early);
  else if (data?.message?.state === "sent") actionDone(action, data.message);
  else state.actions.push(action);
}

function actionDone(action, update) {
  state.actions = state.actions.filter((a) => a !== action && a.id !== action.id);
  if (update.state === "failed" && !state.replaying) toast(`Not done: ${update.reason || "failed"}`, "error");
  if (action.slot === state.selected && action.chatId === state.chatId) refreshSoon();
}

function choose(id) {
  state.chosen = state.chosen === id ? null : id;
  state.picking = null;
  renderConversation();
}

function startReply(m) {
  state.compose = { mode: "reply", id: m.wa_message_id };
  state.chosen = state.picking = null;
  renderConversation();
  $("message-text").focus();
}

function startEdit(m) {
  state.compose = { mode: "edit", id: m.wa_message_id };
  state.chosen = state.picking = null;
  $("message-text").value = m.body || "";
  renderConversation();
  $("message-text").focus();
}

function clearCompose() {
  if (state.compose?.mode === "edit") $("message-text").value = "";
  state.compose = null;
  renderCompose();
}

async function saveEdit(slot, text) {
  const id = state.compose.id;
  const chatId = state.chatId;
  const message = findMessage(id);
  if (!slot || !chatId || !text.trim()) return;
  $("send-button").disabled = true;
  try {
    const body = { text, idempotency_key: newKey() };
    const data = await call("editMessage", { slot, chat_id: chatId, message_id: id }, { body });
    if (message) Object.assign(message, { body: text, edited_at: Date.now() / 1000, acting: true });
    clearCompose();
    track(data, slot, chatId);
  } catch (error) {
    toast(`Not edited: ${error.message}`, "error");
  } finally {
    $("send-button").disabled = false;
    renderConversation();
  }
}

// Clicking the emoji this account already reacted with removes it (an empty emoji).
async function react(m, emoji) {
  const slot = state.selected;
  const chatId = state.chatId;
  const next = myReaction(m) === emoji ? "" : emoji;
  state.picking = null;
  try {
    const body = { emoji: next, idempotency_key: newKey() };
    const data = await call("react", { slot, chat_id: chatId, message_id: m.wa_message_id }, { body });
    const others = (m.reactions || []).filter((r) => !r.from_me);
    m.reactions = next ? [...others, { reactor: "", emoji: next, from_me: true, pending: true }] : others;
    track(data, slot, chatId);
  } catch (error) {
    toast(`No reaction: ${error.message}`, "error");
  }
  renderConversation();
}

async function remove(m) {
  if (!confirm("Delete this message for everyone?")) return;
  const slot = state.selected;
  const chatId = state.chatId;
  state.chosen = null;
  try {
    const data = await call("deleteMessage", { slot, chat_id: chatId, message_id: m.wa_message_id });
    m.acting = true;
    if (state.compose?.id === m.wa_message_id) clearCompose();
    track(data, slot, chatId);
  } catch (error) {
    toast(`Not deleted: ${error.message}`, "error");
  }
  renderConversation();
}

// "typing" to the open chat while the agent types: again at most every TYPING_EVERY_MS,
// "paused" once idle for TYPING_IDLE_MS, on leaving the field, the chat or the page, and
// when the message goes. Best effort: a refusal is not worth a toast on every key.
const typing = { active: false, sentAt: 0, idle: 0, slot: null, chatId: null, unsupported: false };

function onTyping() {
  const slot = state.selected;
  const chatId = state.chatId;
  if (!slot || !chatId || typing.unsupported || !offered("setPresence") || statusOf(slot) !== "CONNECTED") return;
  if (state.compose?.mode === "edit") return; // correcting a sent message is not writing one
  if (!$("message-text").value) return stopTyping();
  clearTimeout(typing.idle);
  typing.idle = setTimeout(stopTyping, TYPING_IDLE_MS);
  const same = typing.active && typing.slot === slot && typing.chatId === chatId;
  if (same && Date.now() - typing.sentAt < TYPING_EVERY_MS) return;
  if (typing.active && !same) stopTyping();
  Object.assign(typing, { active: true, sentAt: Date.now(), slot, chatId });
  sendPresence(slot, chatId, "typing");
}

function stopTyping() {
  clearTimeout(typing.idle);
  if (!typing.active) return;
  typing.active = false;
  sendPresence(typing.slot, typing.chatId, "paused");
}

async function sendPresence(slot, chatId, presence) {
  try {
    await call("setPresence", { slot, chat_id: chatId }, { body: { state: presence } });
  } catch (error) {
    if (error.status === 501) typing.unsupported = true;
  }
}

// The slots of the same shard to send to: accounts and connected slots first. Rebuilt
// only when that list changes, so an open drop-down is not pulled from under the user.
let recipientsShown = "";
function fillRecipients() {
  const select = $("to-slot");
  const slot = state.selected;
  const shard = shardOf(slot);
  const candidates = shard
    ? slotsOf(shard).filter((s) => s !== slot && (state.accounts.has(s) || statusOf(s) === "CONNECTED"))
    : [];
  const signature = JSON.stringify([slot, shard?.id, candidates.map((s) => [s, statusOf(s)])]);
  if (signature === recipientsShown) return;
  recipientsShown = signature;
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "" }, "Slot…"));
  if (!shard) return;
  for (const s of candidates) {
    const name = state.accounts.get(s)?.name;
    const connected = statusOf(s) === "CONNECTED";
    select.append(h("option", { value: s }, `${s}${name ? " · " + name : ""}${connected ? "" : " (offline)"}`));
  }
  const other = slotsOf(shard).filter((s) => s !== slot && !candidates.includes(s));
  if (other.length) {
    const group = h("optgroup", { label: "Other slots" });
    for (const s of other) group.append(h("option", { value: s }, s));
    select.append(group);
  }
  select.value = chosen && chosen !== slot ? chosen : "";
}

// ---------- rendering ----------

let frame = 0;
function render() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    renderTotals();
    renderShards();
    renderSlot();
  });
}

function renderTotals() {
  let sessions = 0;
  let connected = 0;
  for (const s of state.sessions.values()) {
    if (s.status !== "OFF") sessions++;
    if (s.status === "CONNECTED") connected++;
  }
  const slots = state.shards.reduce((n, s) => n + slotsOf(s).length, 0);
  $("totals").replaceChildren(
    h("span", {}, h("b", {}, state.shards.length), state.shards.length === 1 ? " shard" : " shards"),
    h("span", {}, h("b", {}, slots), " slots"),
    h("span", {}, h("b", {}, connected), " connected"),
    h("span", {}, h("b", {}, sessions - connected), " logging in"),
  );
}

function shardHealth(shard) {
  if (shard.suspended) return ["suspended", "Suspended: the first request wakes it"];
  if (!shard.running) return ["down", "The worker does not answer /health"];
  if (shard.ready === false) return ["starting", "Not ready yet"];
  return ["running", "Serving its slots"];
}

function renderShards() {
  const list = $("shards");
  if (!state.loaded) return;
  if (!state.shards.length) {
    list.replaceChildren(h("p", { class: "empty" }, "No shards are configured."));
    return;
  }
  list.replaceChildren(...state.shards.map(renderShard));
}

function renderShard(shard) {
  const [health, why] = shardHealth(shard);
  const slots = slotsOf(shard);
  // What the worker last reported, or the sessions seen live since, if more.
  const seen = slots.filter((slot) => statusOf(slot) !== "OFF").length;
  const active = Math.max(shard.active ?? 0, shard.running ? seen : 0);
  const max = shard.maxActive || 0;
  const share = max ? Math.min(1, active / max) : 0;
  const level = share >= 1 ? "full" : share >= 0.8 ? "high" : "ok";
  const tiles = slots.map((slot) => {
    const status = statusOf(slot);
    const account = state.accounts.get(slot);
    const unread = state.unread.get(slot) || 0;
    const label = [slot, account?.name, status === "OFF" ? "no session" : status.toLowerCase()]
      .filter(Boolean)
      .join(" · ");
    return h(
      "a",
      {
        class: `tile s-${status.toLowerCase()}${account ? " named" : ""}${slot === state.selected ? " selected" : ""}`,
        href: `#/${slot}`,
        title: label,
        "aria-label": label,
        dataset: { slot },
      },
      String(parseSlot(slot).number),
      unread ? h("span", { class: "badge" }, unread > 9 ? "9+" : unread) : null,
    );
  });
  return h(
    "article",
    { class: `shard h-${health}`, dataset: { shard: shard.id } },
    h(
      "header",
      { class: "shard-head" },
      h("div", {}, h("h2", {}, shard.id), h("span", { class: "range" }, `${shard.from} – ${shard.to}`)),
      h("span", { class: `pill h-${health}`, title: why }, health),
    ),
    h(
      "div",
      { class: "capacity", title: "Sessions (logging in or connected) against MAX_ACTIVE" },
      h(
        "div",
        {
          class: `bar ${level}`,
          role: "meter",
          "aria-valuemin": 0,
          "aria-valuemax": max,
          "aria-valuenow": active,
          "aria-label": `${shard.id} capacity`,
        },
        h("span", { style: `width:${(share * 100).toFixed(1)}%` }),
      ),
      h("span", { class: "capacity-text" }, h("b", {}, shard.running ? active : "–"), ` / ${max || "–"} active`),
    ),
    h("div", { class: "grid", role: "list", "aria-label": `${shard.id} slots` }, tiles),
  );
}

function renderSlot() {
  const slot = state.selected;
  $("layout").classList.toggle("has-slot", Boolean(slot));
  $("panel-empty").hidden = Boolean(slot);
  $("slot").hidden = !slot;
  if (!slot) return;
  const shard = shardOf(slot);
  const session = state.sessions.get(slot) || { status: "OFF", qr: null };
  const account = state.accounts.get(slot);
  $("slot-id").textContent = slot;
  $("slot-name").textContent = account?.name || "";
  const meta = [
    shard ? h("span", {}, "shard ", h("b", {}, shard.id)) : h("span", {}, "no shard serves this slot"),
    h("span", {}, "phone ", h("b", {}, "+" + phoneOf(slot)), " (simulated)"),
  ];
  if (account && !account.enabled) meta.push(h("span", {}, "warm-up disabled"));
  $("slot-meta").replaceChildren(...meta);
  const pill = $("slot-status");
  pill.className = `pill s-${session.status.toLowerCase()}`;
  pill.textContent = { OFF: "No session", CONNECTING: "Logging in", CONNECTED: "Connected" }[session.status] || session.status;

  const has = session.status !== "OFF";
  const buttons = $("slot-actions");
  buttons.querySelector('[data-action="connect"]').hidden = has;
  buttons.querySelector('[data-action="destroy"]').hidden = !has;
  buttons.querySelector('[data-action="logout"]').hidden = !has;

  const showQr = session.status === "CONNECTING";
  $("qr-card").hidden = !showQr;
  if (showQr) {
    const image = $("qr-image");
    if (session.qr && image.getAttribute("src") !== session.qr) image.src = session.qr;
    image.classList.toggle("waiting", !session.qr);
    const scannable = shard && !state.noScan.has(shard.id);
    $("scan-button").hidden = !scannable;
    $("scan-hint").hidden = !scannable;
  }
  fillRecipients();
  const connected = session.status === "CONNECTED";
  $("composer").classList.toggle("disabled", !connected);
  $("composer-hint").textContent = connected
    ? "Pick a slot to send to its simulated number, or type any number. The simulator delivers to slots of the same shard."
    : "Connect this slot to send: messages wait in the queue until it is connected.";
  renderChats();
  renderConversation();
}

function renderChats() {
  const list = $("chat-list");
  if (!state.chats.length) {
    list.replaceChildren(h("li", { class: "empty" }, "No chats yet. Send a message below."));
    return;
  }
  list.replaceChildren(
    ...state.chats.map((chat) => {
      const label = chatLabel(chat.chat_id);
      const title = chat.name && !slotOfPhone(chat.chat_id) ? chat.name : label.title;
      const last = chat.last_message || {};
      const preview = (last.direction === "out" ? "You: " : "") + snippet(last);
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: `chat${chat.chat_id === state.chatId ? " current" : ""}`,
            onclick: () => openChat(chat.chat_id),
            dataset: { chat: chat.chat_id, unread: String(chat.unread || 0) },
          },
          h("span", { class: "chat-title" }, chat.pinned ? "📌 " : "", title),
          h("span", { class: "chat-time" }, timeText(chat.last_timestamp)),
          h("span", { class: "chat-preview" }, preview),
          chat.unread ? h("span", { class: "badge", title: "unread" }, chat.unread) : null,
        ),
      );
    }),
  );
}

// Kept across renders: the conversation scrolls to its end for a new chat or a new
// message, and otherwise stays where the agent scrolled it.
let shownChat = { chatId: null, count: 0 };

function renderConversation() {
  const box = $("conversation");
  if (!state.chatId) {
    box.replaceChildren();
    box.hidden = true;
    shownChat = { chatId: null, count: 0 };
    renderCompose();
    return;
  }
  box.hidden = false;
  const before = box.querySelector(".bubbles");
  const atEnd = !before || before.scrollHeight - before.scrollTop - before.clientHeight < 40;
  const top = before ? before.scrollTop : 0;
  const label = chatLabel(state.chatId);
  const known = new Set(state.messages.map((m) => m.wa_message_id));
  const pending = state.pending.filter((m) => m.to === state.chatId && !known.has(m.waMessageId));
  const bubbles = [...state.messages.map(renderMessage), ...pending.map(renderPending)];
  box.replaceChildren(
    h(
      "div",
      { class: "conversation-head" },
      h("b", {}, label.title),
      " ",
      h("span", {}, label.sub),
      h("span", { class: "presence", id: "presence", "aria-live": "polite" }),
    ),
    bubbles.length ? h("div", { class: "bubbles" }, bubbles) : h("p", { class: "empty" }, "No messages in this chat yet."),
  );
  renderPresence();
  const scroller = box.querySelector(".bubbles");
  if (scroller) {
    const grew = shownChat.chatId !== state.chatId || bubbles.length > shownChat.count;
    scroller.scrollTop = atEnd || grew ? scroller.scrollHeight : top;
  }
  shownChat = { chatId: state.chatId, count: bubbles.length };
  renderCompose();
}

// Handlers of controls inside a bubble: the bubble's own click chooses it.
const only = (handler) => (event) => {
  event.stopPropagation();
  handler(event);
};

function renderMessage(m) {
  const id = m.wa_message_id;
  const kind = kindOf(m);
  const classes = ["bubble", m.direction, `k-${kind}`];
  if (m.deleted_at) classes.push("deleted");
  if (id === state.chosen) classes.push("chosen");
  if (m.acting) classes.push("acting");
  return h(
    "div",
    {
      class: classes.join(" "),
      dataset: { id, status: m.status || "", kind },
      tabindex: "0",
      "aria-label": `${senderLabel(m)}: ${snippet(m)}`,
      onclick: () => choose(id),
      onkeydown: (event) => {
        if (event.key === "Enter" && event.target === event.currentTarget) choose(id);
      },
    },
    quoteOf(m),
    messageBody(m),
    h(
      "span",
      { class: "meta" },
      m.edited_at && !m.deleted_at ? h("span", { class: "edited", title: "Edited" }, "edited ") : null,
      timeText(m.timestamp),
      isOwn(m) ? h("span", { class: `ticks ${m.status || "sent"}`, title: m.status || "sent" }, " " + (TICKS[m.status] || "✓")) : "",
    ),
    m.deleted_at ? null : reactionsOf(m),
    id === state.chosen && !m.deleted_at ? actionsOf(m) : null,
    id === state.picking && !m.deleted_at ? pickerOf(m) : null,
  );
}

function renderPending(m) {
  return h(
    "div",
    { class: `bubble out pending ${m.state}`, dataset: { id: m.waMessageId } },
    quoteOf(m),
    h("p", {}, m.body),
    h("span", { class: "meta" }, m.state === "failed" ? `failed: ${m.reason || "?"}` : m.state),
  );
}

// The quoted message above a reply's text; a click brings it into view when it is loaded.
function quoteOf(m) {
  const quotedId = extra(m, "quoted_id");
  if (!quotedId) return null;
  const quoted = findMessage(quotedId);
  return h(
    "div",
    {
      class: `quote${quoted ? "" : " missing"}`,
      role: "button",
      tabindex: "0",
      dataset: { quoted: quotedId },
      title: "Show the quoted message",
      onclick: only(() => showMessage(quotedId)),
    },
    h("b", {}, quoted ? senderLabel(quoted) : "Quoted message"),
    h("span", {}, quoted ? snippet(quoted) : "Not loaded in this view"),
  );
}

function showMessage(id) {
  const node = [...document.querySelectorAll("#conversation .bubble")].find((b) => b.dataset.id === id);
  if (!node) {
    toast("The quoted message is older than this view shows.");
    return;
  }
  node.scrollIntoView({ block: "center", behavior: "smooth" });
  node.classList.remove("flash");
  void node.offsetWidth; // restart the animation
  node.classList.add("flash");
}

function messageBody(m) {
  if (m.deleted_at) return h("p", { class: "tombstone" }, "⊘ This message was deleted");
  const kind = kindOf(m);
  switch (kind) {
    case "text":
      return h("p", {}, m.body || "");
    case "location":
      return locationCard(extra(m, "location") || {});
    case "contact":
      return h("div", { class: "contacts" }, (extra(m, "contacts") || []).map(contactCard));
    case "poll":
      return pollCard(m, extra(m, "poll") || {});
    case "voice":
      return voiceNote(m);
    case "sticker":
      return sticker(m);
    default:
      return h("p", {}, m.media_type || kind !== "text" ? h("span", { class: "media-tag" }, `[${kind}] `) : null, m.body || "");
  }
}

function locationCard(place) {
  const lat = Number(place.latitude);
  const lon = Number(place.longitude);
  const known = Number.isFinite(lat) && Number.isFinite(lon);
  const map = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
  return h(
    "div",
    { class: "card location" },
    h("span", { class: "card-icon", "aria-hidden": "true" }, "📍"),
    h(
      "div",
      {},
      h("b", {}, place.name || "Location"),
      place.address ? h("span", { class: "sub" }, place.address) : null,
      known
        ? h("a", { class: "coords", href: map, target: "_blank", rel: "noopener noreferrer", onclick: only(() => {}) }, `${lat.toFixed(5)}, ${lon.toFixed(5)}`)
        : null,
    ),
  );
}

function contactCard(card) {
  const phone = phoneOfCard(card);
  return h(
    "div",
    { class: "card contact" },
    h("span", { class: "card-icon", "aria-hidden": "true" }, "👤"),
    h("div", {}, h("b", {}, card.name || "Contact"), phone ? h("span", { class: "sub" }, phone) : null),
  );
}

function pollCard(m, poll) {
  const votes = m.votes || {};
  const options = (poll.options || []).map(optionName);
  const total = options.reduce((sum, name) => sum + (Number(votes[name]) || 0), 0);
  const many = Number(poll.selectable_count) > 1;
  return h(
    "div",
    { class: "poll" },
    h("b", { class: "poll-question" }, "📊 ", poll.question || "Poll"),
    h("span", { class: "sub" }, many ? `Choose up to ${poll.selectable_count}` : "Choose one"),
    h(
      "ul",
      { class: "poll-options" },
      options.map((name) => {
        const count = Number(votes[name]) || 0;
        return h(
          "li",
          { dataset: { option: name, votes: String(count) } },
          h("span", { class: "poll-option" }, name),
          h("span", { class: "poll-count" }, count),
          h("span", { class: "poll-bar" }, h("i", { style: `width:${total ? Math.round((100 * count) / total) : 0}%` })),
        );
      }),
    ),
    h("span", { class: "sub" }, `${total} vote${total === 1 ? "" : "s"}`),
  );
}

const mediaName = (m) => /\/media\/([^/?#]+)$/.exec(m.media_url || "")?.[1] || null;

// Voice notes the agent opened, by message id -> their audio's blob URL: the chat view is
// drawn again on every live event, and an opened one must stay open.
const openedVoice = new Map();

function voiceNote(m) {
  const name = mediaName(m);
  const box = h("div", { class: "voice" });
  const opened = openedVoice.get(m.wa_message_id);
  if (opened) {
    box.append(h("audio", { controls: true, src: opened }));
    return box;
  }
  const play = h(
    "button",
    {
      type: "button",
      class: "play",
      "aria-label": "Play the voice note",
      disabled: !name,
      onclick: only(async () => {
        try {
          const src = await mediaUrl(state.selected, name);
          openedVoice.set(m.wa_message_id, src);
          // The bubble on the page now (the one clicked may have been drawn again since).
          const shown = document.querySelector(`.bubble[data-id="${CSS.escape(m.wa_message_id)}"] .voice`);
          (shown || box).replaceChildren(h("audio", { controls: true, autoplay: true, src }));
        } catch (error) {
          toast(`Cannot play it: ${error.message}`, "error");
        }
      }),
    },
    "▶",
  );
  box.append(play, h("span", {}, "🎤 Voice note"));
  return box;
}

function sticker(m) {
  const name = mediaName(m);
  if (!name) return h("p", { class: "sticker-text" }, "Sticker");
  const image = h("img", { class: "sticker", alt: "Sticker", width: "128", height: "128" });
  mediaUrl(state.selected, name).then(
    (src) => (image.src = src),
    () => image.replaceWith(h("p", { class: "sticker-text" }, "Sticker")),
  );
  return image;
}

function reactionsOf(m) {
  const groups = reactionGroups(m);
  if (!groups.length) return null;
  return h(
    "div",
    { class: "reactions" },
    groups.map((group) =>
      h(
        "button",
        {
          type: "button",
          class: `reaction${group.mine ? " mine" : ""}${group.pending ? " pending" : ""}`,
          dataset: { emoji: group.emoji, count: String(group.count) },
          "aria-pressed": String(group.mine),
          title: group.mine ? "Your reaction: click to remove it" : "React with this too",
          disabled: !offered("react"),
          onclick: only(() => react(m, group.emoji)),
        },
        group.emoji,
        h("span", { class: "count" }, group.count),
      ),
    ),
  );
}

function actionsOf(m) {
  const button = (act, text, handler, extraAttrs = {}) =>
    h("button", { type: "button", class: "act", dataset: { act }, onclick: only(handler), ...extraAttrs }, text);
  return h(
    "div",
    { class: "bubble-actions", role: "toolbar", "aria-label": "Message actions" },
    offered("send") ? button("reply", "↩ Reply", () => startReply(m)) : null,
    offered("react")
      ? button("react", "☺ React", () => {
          state.picking = state.picking === m.wa_message_id ? null : m.wa_message_id;
          renderConversation();
        }, { "aria-expanded": String(state.picking === m.wa_message_id) })
      : null,
    editable(m) ? button("edit", "✎ Edit", () => startEdit(m)) : null,
    deletable(m) ? button("delete", "✕ Delete", () => remove(m)) : null,
  );
}

function pickerOf(m) {
  const mine = myReaction(m);
  return h(
    "div",
    { class: "emoji-picker", role: "group", "aria-label": "React with" },
    REACTIONS.map((emoji) =>
      h(
        "button",
        {
          type: "button",
          class: emoji === mine ? "mine" : "",
          dataset: { emoji },
          "aria-pressed": String(emoji === mine),
          title: emoji === mine ? "Remove your reaction" : `React with ${emoji}`,
          onclick: only(() => react(m, emoji)),
        },
        emoji,
      ),
    ),
  );
}

// Above the composer's field: the message replied to or being edited, and a way out.
function renderCompose() {
  const bar = $("compose-context");
  const compose = state.compose;
  const message = compose && findMessage(compose.id);
  $("send-button").textContent = compose?.mode === "edit" ? "Save" : "Send";
  if (!compose || !message) {
    bar.hidden = true;
    bar.replaceChildren();
    return;
  }
  bar.hidden = false;
  bar.dataset.mode = compose.mode;
  bar.dataset.id = compose.id;
  const title = compose.mode === "edit" ? "Edit your message" : `Reply to ${senderLabel(message)}`;
  bar.replaceChildren(
    h("div", { class: "quote" }, h("b", {}, title), h("span", {}, snippet(message))),
    h("button", { type: "button", class: "linkish", id: "compose-cancel", "aria-label": "Cancel", onclick: () => clearCompose() }, "✕"),
  );
}

// ---------- search across shards ----------

const SEARCH_DELAY_MS = 250;
const SEARCH_PAGE = 20;
let searchTimer = 0;

// The hit's body as text, the searched words marked. (The worker's snippet marks matches
// with brackets, which a body may hold too; marking here keeps the text exact.)
function marked(text, q) {
  const body = String(text || "");
  const words = q.toLowerCase().split(/\s+/).filter(Boolean);
  const lower = body.toLowerCase();
  const out = [];
  let at = 0;
  while (at < body.length) {
    let next = -1;
    let size = 0;
    for (const word of words) {
      const found = lower.indexOf(word, at);
      if (found >= 0 && (next < 0 || found < next)) {
        next = found;
        size = word.length;
      }
    }
    if (next < 0) break;
    out.push(body.slice(at, next), h("mark", {}, body.slice(next, next + size)));
    at = next + size;
  }
  out.push(body.slice(at));
  return out;
}

async function runSearch({ more = false } = {}) {
  const q = $("search-input").value.trim();
  const box = $("search-results");
  if (!q) {
    state.search = { q: "", items: [], next: null, partial: [], busy: false };
    box.hidden = true;
    return;
  }
  const params = new URLSearchParams({ q, limit: String(SEARCH_PAGE) });
  if (more && state.search.next) params.set("cursor", state.search.next);
  state.search.busy = true;
  try {
    const data = await call("searchAcrossShards", {}, { query: params });
    if ($("search-input").value.trim() !== q) return; // typed on meanwhile
    const before = more ? state.search.items : [];
    state.search = {
      q,
      items: [...before, ...(data.items || [])],
      next: data.next_cursor || null,
      partial: data.missing || [],
      busy: false,
    };
  } catch (error) {
    state.search = { q, items: [], next: null, partial: [], busy: false, error: error.message };
  }
  renderSearch();
}

function renderSearch() {
  const box = $("search-results");
  const found = state.search;
  box.hidden = !found.q;
  if (!found.q) return;
  const parts = [];
  if (found.error) parts.push(h("p", { class: "empty" }, `Search failed: ${found.error}`));
  for (const gap of found.partial) {
    parts.push(h("p", { class: "partial" }, `Without ${gap.shard} (${gap.from}–${gap.to}): ${gap.reason}`));
  }
  if (!found.items.length && !found.error) parts.push(h("p", { class: "empty" }, `No message has “${found.q}”.`));
  if (found.items.length) {
    parts.push(
      h(
        "ul",
        { id: "search-hits" },
        found.items.map((hit) =>
          h(
            "li",
            {},
            h(
              "a",
              {
                class: "hit",
                href: `#/${encodeURIComponent(hit.slot)}`,
                dataset: { slot: hit.slot, chat: hit.chat_id },
                onclick: (event) => openHit(event, hit),
              },
              h("span", { class: "hit-slot" }, hit.slot),
              h("span", { class: "hit-chat" }, (hit.direction === "out" ? "to " : "from ") + chatLabel(hit.chat_id).title),
              h("span", { class: "hit-time" }, timeText(hit.timestamp)),
              h("span", { class: "hit-text" }, marked(hit.body, found.q)),
            ),
          ),
        ),
      ),
    );
  }
  if (found.next) {
    parts.push(h("button", { type: "button", class: "linkish search-more", onclick: () => runSearch({ more: true }) }, "More results"));
  }
  box.replaceChildren(...parts);
}

function openHit(event, hit) {
  event.preventDefault();
  $("search-results").hidden = true;
  if (state.selected === hit.slot) {
    openChat(hit.chat_id);
    return;
  }
  state.wantChat = { slot: hit.slot, chatId: hit.chat_id };
  location.hash = `#/${encodeURIComponent(hit.slot)}`;
}

function setupSearch() {
  const input = $("search-input");
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  });
  input.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, SEARCH_DELAY_MS);
  });
  input.addEventListener("focus", () => {
    if (state.search.q) $("search-results").hidden = false;
  });
  document.addEventListener("click", (event) => {
    if (!$("search").contains(event.target)) $("search-results").hidden = true;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") $("search-results").hidden = true;
  });
}

// ---------- wiring ----------

function route() {
  const wanted = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  select(parseSlot(wanted) ? wanted : null);
}

function reconnectEverything() {
  $("key-button").hidden = !localStorage.getItem(KEY_STORAGE);
  loadShards().then(loadAccounts).then(connectSocket);
}

function start() {
  setupKeyDialog();
  setupSearch();
  document.querySelectorAll("[data-action]").forEach((button) =>
    button.addEventListener("click", () => act(button.dataset.action)),
  );
  $("composer").addEventListener("submit", send);
  $("message-text").addEventListener("input", onTyping);
  $("message-text").addEventListener("blur", stopTyping);
  $("message-text").addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.compose) clearCompose();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopTyping();
  });
  $("to-slot").addEventListener("change", (event) => {
    if (event.target.value) $("to-phone").value = phoneOf(event.target.value);
  });
  $("chats-refresh").addEventListener("click", () => loadChats());
  window.addEventListener("hashchange", route);
  loadShards()
    .then(loadAccounts)
    .then(() => {
      route();
      connectSocket();
    });
  setInterval(() => {
    if (!document.hidden) loadShards();
  }, SHARDS_EVERY_MS);
}

start();
