// An agent acting on messages in the console, in a real browser (headless Chromium through
// playwright-core): A2 writes to A1; the agent on A1 replies to it, reacts (and takes the
// reaction back, and reacts again), edits the reply, deletes a wrong message; A2 types.
// Two pages: A1's (the agent) and A2's, open on the chat, which must follow live. After
// each action the script also waits for A2's store (the master's data API) to show it.
// One JSON line per step goes to stdout; the last but one names the messages' ids.
//
//   CHROMIUM=/usr/bin/chromium node console_actions.mjs <console url> <artifacts dir>
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, artifacts] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const WORD = `w${Date.now().toString(36)}`;
const QUESTION = `Can you confirm order 1042? ${WORD}`;
const REPLY = `Confirmed, it ships tomorow ${WORD}`;
const EDITED = `Confirmed, it ships tomorrow ${WORD}`;
const WRONG = `Meeting at 3pm (wrong chat) ${WORD}`;
const A1_JID = "555101000000001@s.whatsapp.net";
const A2_JID = "555101000000002@s.whatsapp.net";
// A voice note's first bytes (its type is read from them) and a sticker, base64.
const OGG = Buffer.concat([Buffer.from("OggS\x00\x02", "latin1"), Buffer.alloc(22), Buffer.from("\x13OpusHead", "latin1"), Buffer.alloc(40)]).toString("base64");
const WEBP = "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="; // a real 1x1 WebP
const STEP_MS = 20000;
const started = Date.now();
const print = (record) => process.stdout.write(JSON.stringify({ ms: Date.now() - started, ...record }) + "\n");

mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
const page = await context.newPage(); // the agent on A1
const peer = await context.newPage(); // A2
const consoleErrors = [];
const presenceSent = []; // A2's presence requests: [state, ms]
for (const [name, target] of [["A1", page], ["A2", peer]]) {
  target.setDefaultTimeout(STEP_MS);
  target.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(`${name}: ${message.text()}`);
  });
  target.on("pageerror", (error) => consoleErrors.push(`${name}: ${error}`));
}
peer.on("request", (request) => {
  if (request.url().endsWith("/presence")) presenceSent.push([JSON.parse(request.postData()).state, Date.now()]);
});

async function shot(name, target = page) {
  const path = join(artifacts, `${name}.png`);
  await target.screenshot({ path });
  print({ step: "screenshot", path });
}

async function step(name, body) {
  const at = Date.now();
  await body();
  print({ step: name, took: Date.now() - at });
}

async function master(method, path, body) {
  const answer = await fetch(new URL(path, url), {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return [answer.status, await answer.json()];
}

// The slot's messages with the other one, as its store has them (newest first).
async function stored(slot, chat) {
  const [status, page] = await master("GET", `/api/accounts/${slot}/conversations/${encodeURIComponent(chat)}/messages?limit=50`);
  if (status !== 200) throw new Error(`${slot}'s messages: ${status} ${JSON.stringify(page)}`);
  return page.items;
}

// Wait for A2's store to show what `test` looks for in its chat with A1.
async function inA2(what, test) {
  const until = Date.now() + STEP_MS;
  let items = [];
  while (Date.now() < until) {
    items = await stored("A2", A1_JID);
    if (test(items)) return items;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`A2's store never showed ${what}: ${JSON.stringify(items).slice(0, 2000)}`);
}

const bubble = (target, id) => target.locator(`#conversation .bubble[data-id="${id}"]`);

// Choose a message (its actions show); choosing it again would close them. Clicked on its
// time line: the middle of a reply is its quote, which shows the quoted message instead.
async function choose(id) {
  if (!(await page.locator(`#conversation .bubble.chosen[data-id="${id}"]`).count())) await bubble(page, id).locator(".meta").click();
  await page.waitForSelector(`#conversation .bubble.chosen[data-id="${id}"] .bubble-actions`);
}

async function openChat(target, slot, chat) {
  await target.goto(`${url}#/${slot}`);
  await target.waitForSelector('#live[data-state="live"]');
  await target.waitForFunction((s) => document.getElementById("slot-status").textContent === "Connected" && document.getElementById("slot-id").textContent === s, slot);
  await target.click(`#chat-list .chat[data-chat="${chat}"]`);
  await target.waitForSelector(`#chat-list .chat.current[data-chat="${chat}"]`);
}

const ids = {};

async function flow() {
  await step("A1 and A2 logged in", async () => {
    await page.goto(url);
    await page.waitForSelector('#live[data-state="live"]');
    await page.waitForSelector('article.shard[data-shard="w1"] .pill.h-running');
    for (const slot of ["A1", "A2"]) {
      const [, now] = await master("GET", `/api/accounts/${slot}/status`);
      if (now.status !== "CONNECTED") {
        await master("POST", `/api/accounts/${slot}/connect`);
        const [, scanned] = await master("POST", `/api/accounts/${slot}/scan`);
        if (scanned.status !== "CONNECTED") throw new Error(`${slot}: ${JSON.stringify(scanned)}`);
      }
      // Many messages to one chat in a minute: pace them as a demo would, not as a phone.
      const fast = { perMinute: 600, burst: 50 };
      const [paced] = await master("PUT", `/api/accounts/${slot}/pacing`, { session: fast, recipient: fast });
      if (paced !== 200) throw new Error(`${slot}'s pacing: ${paced}`);
    }
  });

  await step("A2 writes to A1", async () => {
    await peer.goto(`${url}#/A2`);
    await peer.waitForSelector('#live[data-state="live"]');
    await peer.waitForFunction(() => document.getElementById("slot-status").textContent === "Connected");
    await peer.selectOption("#to-slot", "A1");
    await peer.fill("#message-text", QUESTION);
    await peer.click("#send-button");
    await peer.waitForSelector(`.bubble.out:not(.pending) >> text=${QUESTION}`);
  });

  await step("A1 opens the chat", async () => {
    await openChat(page, "A1", A2_JID);
    const question = page.locator(".bubble.in", { hasText: QUESTION });
    await question.waitFor();
    ids.question = await question.getAttribute("data-id");
  });

  await step("an incoming message can be replied to and reacted to, not edited or deleted", async () => {
    await choose(ids.question);
    const offered = await bubble(page, ids.question).locator(".bubble-actions .act").evaluateAll((found) => found.map((b) => b.dataset.act));
    if (JSON.stringify(offered) !== JSON.stringify(["reply", "react"])) throw new Error(`offered: ${offered}`);
  });

  await step("A1 replies quoting A2's message", async () => {
    await bubble(page, ids.question).locator('[data-act="reply"]').click();
    const context = page.locator(`#compose-context[data-mode="reply"][data-id="${ids.question}"]`);
    await context.waitFor();
    if (!(await context.textContent()).includes(QUESTION)) throw new Error("the composer does not quote the message");
    await page.fill("#message-text", REPLY);
    await page.click("#send-button");
    const reply = page.locator(`.bubble.out:not(.pending):has(.quote[data-quoted="${ids.question}"])`, { hasText: REPLY });
    await reply.waitFor();
    ids.reply = await reply.getAttribute("data-id");
    const quoted = await reply.locator(".quote").textContent();
    if (!quoted.includes(QUESTION)) throw new Error(`the quote shows ${quoted}`);
    await page.waitForSelector("#compose-context", { state: "hidden" });
    await inA2("the reply quoting the question", (items) =>
      items.some((m) => m.wa_message_id === ids.reply && m.body === REPLY && m.quoted_id === ids.question),
    );
  });
  await shot("21-a1-replied");

  await step("A2 sees the reply's quote; clicking it shows the quoted message", async () => {
    const quote = bubble(peer, ids.reply).locator(`.quote[data-quoted="${ids.question}"]`);
    await quote.waitFor();
    await peer.evaluate(() => (document.querySelector("#conversation .bubbles").scrollTop = 1e6));
    await quote.click();
    await peer.waitForSelector(`#conversation .bubble.flash[data-id="${ids.question}"]`);
  });

  await step("A1 reacts 👍 (own reaction highlighted) and A2 sees it", async () => {
    await choose(ids.question);
    await bubble(page, ids.question).locator('[data-act="react"]').click();
    await bubble(page, ids.question).locator('.emoji-picker button[data-emoji="👍"]').click();
    await bubble(page, ids.question).locator('.reaction.mine[data-emoji="👍"][data-count="1"]').waitFor();
    // ... and once A1's store has it (the queue sent it), as the store says: A1's own.
    await bubble(page, ids.question).locator('.reaction.mine:not(.pending)[data-emoji="👍"][data-count="1"]').waitFor();
    await inA2("A1's 👍", (items) => {
      const question = items.find((m) => m.wa_message_id === ids.question);
      return question && question.reactions.length === 1 && question.reactions[0].emoji === "👍" && !question.reactions[0].from_me;
    });
    await bubble(peer, ids.question).locator('.reaction:not(.mine)[data-emoji="👍"][data-count="1"]').waitFor();
  });
  await shot("22-a1-reacted");
  await shot("22-a2-sees-reaction", peer);

  await step("clicking the own reaction again removes it, here and at A2", async () => {
    await bubble(page, ids.question).locator('.reaction.mine[data-emoji="👍"]').click();
    await bubble(page, ids.question).locator(".reaction").waitFor({ state: "detached" });
    await inA2("no reaction left", (items) => items.find((m) => m.wa_message_id === ids.question)?.reactions.length === 0);
    await bubble(peer, ids.question).locator(".reaction").waitFor({ state: "detached" });
  });

  await step("A1 reacts ❤️ from the picker", async () => {
    await choose(ids.question);
    await bubble(page, ids.question).locator('[data-act="react"]').click();
    await bubble(page, ids.question).locator('.emoji-picker button[data-emoji="❤️"]').click();
    await bubble(page, ids.question).locator('.reaction.mine:not(.pending)[data-emoji="❤️"]').waitFor();
    await inA2("A1's ❤️", (items) => items.find((m) => m.wa_message_id === ids.question)?.reactions[0]?.emoji === "❤️");
    await bubble(peer, ids.question).locator('.reaction[data-emoji="❤️"]').waitFor();
  });

  await step("A1 edits its reply", async () => {
    await choose(ids.reply);
    await bubble(page, ids.reply).locator('[data-act="edit"]').click();
    await page.waitForSelector(`#compose-context[data-mode="edit"][data-id="${ids.reply}"]`);
    if ((await page.inputValue("#message-text")) !== REPLY) throw new Error("the composer does not hold the text to edit");
    if ((await page.textContent("#send-button")) !== "Save") throw new Error("the button does not say Save");
    await page.fill("#message-text", EDITED);
    await page.click("#send-button");
    await bubble(page, ids.reply).locator(".edited").waitFor();
    await page.waitForFunction(
      ([id, text]) => document.querySelector(`#conversation .bubble[data-id="${id}"]:not(.acting) p`)?.textContent === text,
      [ids.reply, EDITED],
    );
    await inA2("the edited text", (items) => {
      const reply = items.find((m) => m.wa_message_id === ids.reply);
      return reply && reply.body === EDITED && reply.edited_at;
    });
    await bubble(peer, ids.reply).locator(".edited").waitFor();
    await peer.waitForFunction(
      ([id, text]) => document.querySelector(`#conversation .bubble[data-id="${id}"] > p`)?.textContent === text,
      [ids.reply, EDITED],
    );
  });
  await shot("23-a1-edited");

  await step("A1 deletes a wrong message for everyone", async () => {
    await page.fill("#message-text", WRONG);
    await page.click("#send-button");
    const wrong = page.locator(".bubble.out:not(.pending)", { hasText: WRONG });
    await wrong.waitFor();
    ids.wrong = await wrong.getAttribute("data-id");
    await inA2("the wrong message", (items) => items.some((m) => m.wa_message_id === ids.wrong));
    await bubble(peer, ids.wrong).waitFor();
    await choose(ids.wrong);
    let asked = "";
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      dialog.accept();
    });
    await bubble(page, ids.wrong).locator('[data-act="delete"]').click();
    await page.locator(`#conversation .bubble[data-id="${ids.wrong}"]:not(.acting) .tombstone >> text=This message was deleted`).waitFor();
    if (!/for everyone/.test(asked)) throw new Error(`asked: ${asked}`);
    await inA2("the tombstone", (items) => {
      const gone = items.find((m) => m.wa_message_id === ids.wrong);
      return gone && gone.deleted_at && gone.body === "";
    });
    await bubble(peer, ids.wrong).locator(".tombstone >> text=This message was deleted").waitFor();
    // Nowhere on A1's page any more: not in the chat, not as the chat list's last message.
    await page.waitForFunction((text) => !document.body.innerText.includes(text), WRONG);
    await page.waitForSelector(`#chat-list .chat[data-chat="${A2_JID}"] .chat-preview >> text=You: This message was deleted`);
  });
  await shot("24-a1-deleted");

  await step("A2 sends a location, a contact card, a poll, a voice note, a sticker; A1 sees each", async () => {
    const send = async (body) => {
      const [status, answer] = await master("POST", "/api/accounts/A2/send", { to: A1_JID, ...body });
      if (status !== 202) throw new Error(`A2 ${body.type}: ${status} ${JSON.stringify(answer)}`);
      return answer.message.waMessageId;
    };
    ids.location = await send({ type: "location", latitude: -23.55052, longitude: -46.633308, name: "Store 12", address: "Av. Paulista 1000" });
    ids.contact = await send({ type: "contact", contacts: [{ name: "Ana Souza", phone: "5511988887777" }] });
    ids.poll = await send({ type: "poll", question: `Delivery day? ${WORD}`, options: ["Monday", "Tuesday"] });
    ids.voice = await send({ type: "voice", media_base64: OGG });
    ids.sticker = await send({ type: "sticker", media_base64: WEBP });
    const place = bubble(page, ids.location);
    await place.locator(".card.location >> text=Store 12").waitFor();
    const coords = place.locator("a.coords");
    if ((await coords.textContent()) !== "-23.55052, -46.63331") throw new Error(`coordinates: ${await coords.textContent()}`);
    if (!(await coords.getAttribute("href")).includes("mlat=-23.55052&mlon=-46.633308")) throw new Error("map link");
    const card = bubble(page, ids.contact).locator(".card.contact");
    await card.locator("text=Ana Souza").waitFor();
    if (!(await card.textContent()).includes("+5511988887777")) throw new Error(`card: ${await card.textContent()}`);
    await bubble(page, ids.poll).locator('li[data-option="Tuesday"][data-votes="0"]').waitFor();
    // A2 votes in its own poll: A1's page counts it (live, wa:poll_vote).
    const path = `/api/accounts/A2/conversations/${encodeURIComponent(A1_JID)}/messages/${ids.poll}/vote`;
    const [voted] = await master("POST", path, { options: ["Tuesday"] });
    if (voted !== 202) throw new Error(`vote: ${voted}`);
    await bubble(page, ids.poll).locator('li[data-option="Tuesday"][data-votes="1"]').waitFor();
    await bubble(page, ids.poll).locator('li[data-option="Monday"][data-votes="0"]').waitFor();
    await bubble(page, ids.poll).locator("text=1 vote").waitFor();
    await bubble(page, ids.voice).locator(".voice >> text=Voice note").waitFor();
    await bubble(page, ids.voice).locator("button.play").click();
    await page.waitForFunction((id) => document.querySelector(`.bubble[data-id="${id}"] audio`)?.src.startsWith("blob:"), ids.voice);
    // The view is drawn again on every live event: an opened voice note stays open.
    const reaction = `/api/accounts/A2/conversations/${encodeURIComponent(A1_JID)}/messages/${ids.poll}/reaction`;
    const [reacted] = await master("POST", reaction, { emoji: "🎉" });
    if (reacted !== 202) throw new Error(`reaction: ${reacted}`);
    await bubble(page, ids.poll).locator(".reactions >> text=🎉").waitFor();
    await page.waitForFunction((id) => document.querySelector(`.bubble[data-id="${id}"] audio`)?.src.startsWith("blob:"), ids.voice);
    // The sticker's own bytes, from the store through the API (with the key, were there one).
    await page.waitForFunction((id) => {
      const image = document.querySelector(`.bubble[data-id="${id}"] img.sticker`);
      return image?.src.startsWith("blob:") && image.complete && image.naturalWidth === 1;
    }, ids.sticker);
  });
  await shot("26-a1-kinds");

  await step("A2 types: A1 sees typing…, then not once A2 leaves the field", async () => {
    await peer.bringToFront();
    await peer.click("#message-text");
    const before = presenceSent.length;
    await peer.type("#message-text", "Thanks!", { delay: 60 });
    await page.waitForFunction(() => document.getElementById("presence")?.textContent === "typing…");
    await shot("25-a1-sees-typing");
    const left = Date.now();
    await peer.locator("#message-text").blur();
    await page.waitForFunction(() => document.getElementById("presence")?.textContent === "");
    const sent = presenceSent.slice(before);
    // Seven keys in well under TYPING_EVERY_MS: one "typing" (throttled), then one "paused".
    if (JSON.stringify(sent.map(([state]) => state)) !== JSON.stringify(["typing", "paused"])) {
      throw new Error(`A2 sent ${JSON.stringify(sent)}`);
    }
    // "paused" because A2 left the field, not because it was idle for TYPING_IDLE_MS (unless
    // A1 took that long to show "typing…": then it was idle before it left).
    const late = sent[1][1] - left;
    if (late > 1500) throw new Error(`paused ${late} ms after the blur`);
    // Recording a voice note shows too (A2's presence through the API this time).
    const presence = `/api/accounts/A2/conversations/${encodeURIComponent(A1_JID)}/presence`;
    await master("POST", presence, { state: "recording" });
    await page.waitForFunction(() => document.getElementById("presence")?.textContent === "recording…");
    await master("POST", presence, { state: "paused" });
    await page.waitForFunction(() => document.getElementById("presence")?.textContent === "");
  });

  await step("past WhatsApp's 15 minutes a sent message offers no Edit, still Delete", async () => {
    // A page of its own whose clock the test moves (the page reads Date.now()).
    const later = await context.newPage();
    later.setDefaultTimeout(STEP_MS);
    later.on("pageerror", (error) => consoleErrors.push(`A1 later: ${error}`));
    await later.clock.install();
    await openChat(later, "A1", A2_JID);
    const acts = async () => {
      const mine = bubble(later, ids.reply);
      if (!(await later.locator(`#conversation .bubble.chosen[data-id="${ids.reply}"]`).count())) await mine.locator(".meta").click();
      await mine.locator(".bubble-actions").waitFor();
      return mine.locator(".bubble-actions .act").evaluateAll((found) => found.map((b) => b.dataset.act));
    };
    const now = await acts();
    if (JSON.stringify(now) !== JSON.stringify(["reply", "react", "edit", "delete"])) throw new Error(`now: ${now}`);
    await later.clock.setSystemTime(Date.now() + 15 * 60 * 1000 + 5000);
    await bubble(later, ids.reply).locator(".meta").click(); // closes the actions ...
    const past = await acts(); // ... and opens them again, drawn at the new time
    if (JSON.stringify(past) !== JSON.stringify(["reply", "react", "delete"])) throw new Error(`past: ${past}`);
    await later.close();
  });

  print({ step: "ids", ids, texts: { QUESTION, REPLY, EDITED, WRONG } });
}

try {
  await flow();
  if (consoleErrors.length) throw new Error(`errors in the page: ${consoleErrors.join(" | ")}`);
  print({ step: "done", ok: true });
  await browser.close();
} catch (error) {
  print({ step: "failed", error: String(error && error.stack ? error.stack : error), consoleErrors });
  await page.screenshot({ path: join(artifacts, "failure-a1.png") }).catch(() => {});
  await peer.screenshot({ path: join(artifacts, "failure-a2.png") }).catch(() => {});
  await browser.close();
  process.exit(1);
}
