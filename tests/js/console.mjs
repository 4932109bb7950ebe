// The console in a real browser (headless Chromium through playwright-core), as a user
// would use it: log A1 in with its QR code, log A2 in, send from A1 to A2, read it in A2.
// Screenshots go to the artifacts folder; one JSON line per step goes to stdout.
//
// With an API key as third argument (the master has API_KEYS) it checks the key flow
// instead: the console asks for the key once, keeps it, and then works.
//
//   CHROMIUM=/usr/bin/chromium node console.mjs <console url> <artifacts dir> [api key]
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, artifacts, apiKey] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
// A word no other message has: the search across shards must find exactly ours.
const WORD = `w${Date.now().toString(36)}`;
const TEXT = `Hello A2, from the console ${WORD}`;
const FAR = `Hello A51 on the other shard ${WORD}`;
const A1_JID = "555101000000001@s.whatsapp.net";
const STEP_MS = 15000;
const started = Date.now();
const print = (record) => process.stdout.write(JSON.stringify({ ms: Date.now() - started, ...record }) + "\n");

mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.setDefaultTimeout(STEP_MS);
const consoleErrors = [];
page.on("console", (message) => {
  if (message.type() === "error") consoleErrors.push(message.text());
});
page.on("pageerror", (error) => consoleErrors.push(String(error)));

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

async function openSlot(slot) {
  await page.click(`a.tile[data-slot="${slot}"]`);
  await page.waitForFunction((s) => document.getElementById("slot-id").textContent === s, slot);
  await page.waitForSelector("#slot:not([hidden])");
}

async function logIn(slot) {
  await openSlot(slot);
  const connect = page.locator('#slot-actions [data-action="connect"]');
  if (await connect.isVisible()) await connect.click();
  await page.waitForFunction(() => {
    const image = document.getElementById("qr-image");
    return !document.getElementById("qr-card").hidden && image.src.startsWith("data:image/png") && image.naturalWidth > 0;
  });
  await page.waitForSelector(`a.tile.s-connecting[data-slot="${slot}"]`);
}

async function scan(slot) {
  await page.click("#scan-button");
  await page.waitForFunction(() => document.getElementById("slot-status").textContent === "Connected");
  await page.waitForSelector(`a.tile.s-connected[data-slot="${slot}"]`);
  await page.waitForSelector("#qr-card[hidden]", { state: "attached" });
}

async function keyFlow() {
  await step("asks for the API key", async () => {
    await page.goto(url);
    await page.waitForSelector("#key-dialog[open]");
  });
  await shot("10-key-dialog");
  await step("a wrong key is refused", async () => {
    await page.fill("#key-input", "not-the-key");
    await page.click('#key-form button[value="save"]');
    await page.waitForSelector("#key-dialog[open]");
  });
  await step("the right key opens everything", async () => {
    await page.fill("#key-input", apiKey);
    await page.click('#key-form button[value="save"]');
    await page.waitForSelector("article.shard >> nth=1");
    await page.waitForSelector('#live[data-state="live"]');
  });
  await step("kept for the next visit", async () => {
    await page.reload();
    await page.waitForSelector('#live[data-state="live"]');
    await page.waitForSelector("article.shard >> nth=1");
    if (await page.isVisible("#key-dialog[open]")) throw new Error("asked again");
  });
}

async function userFlow() {
  await step("open console", async () => {
    await page.goto(url);
    await page.waitForSelector("article.shard >> nth=1");
    await page.waitForSelector('#live[data-state="live"]');
    await page.waitForSelector('article.shard[data-shard="w1"] .pill.h-running');
    await page.waitForSelector('article.shard[data-shard="w2"] .pill.h-running');
  });
  await shot("01-overview");

  await step("A1 shows its QR code", () => logIn("A1"));
  await shot("02-a1-qr");

  await step("A1 scanned: connected", () => scan("A1"));

  await step("A2 logged in", async () => {
    await logIn("A2");
    await scan("A2");
  });

  await step("A1 sends to A2", async () => {
    await openSlot("A1");
    await page.selectOption("#to-slot", "A2");
    const phone = await page.inputValue("#to-phone");
    if (phone !== "555101000000002") throw new Error(`A2's number in the form is ${phone}`);
    await page.fill("#message-text", TEXT);
    await page.click("#send-button");
    await page.waitForSelector(`.bubble.out:not(.pending) >> text=${TEXT}`);
  });
  await shot("03-a1-sent");

  await step("A2's chat list shows it unread, with the message", async () => {
    await openSlot("A2");
    const chat = page.locator(`#chat-list .chat[data-chat="${A1_JID}"]`);
    await chat.waitFor();
    await page.waitForFunction((jid) => {
      const item = document.querySelector(`#chat-list .chat[data-chat="${jid}"]`);
      return item && item.dataset.unread === "1" && item.querySelector(".badge")?.textContent === "1";
    }, A1_JID);
    const title = await chat.locator(".chat-title").textContent();
    if (title.trim() !== "A1 · Sales") throw new Error(`the chat is titled ${title}`);
    const preview = await chat.locator(".chat-preview").textContent();
    if (preview.trim() !== TEXT) throw new Error(`the chat's last message shows as ${preview}`);
    if (await page.isVisible(".bubble.in")) throw new Error("a chat was opened (and marked read) unasked");
  });
  await shot("04-a2-unread");

  await step("A2 received it", async () => {
    await page.click(`#chat-list .chat[data-chat="${A1_JID}"]`);
    await page.waitForSelector(`.bubble.in >> text=${TEXT}`);
    await page.waitForSelector(`#chat-list .chat[data-chat="${A1_JID}"][data-unread="0"]`);
  });
  await shot("04-a2-received");

  await step("A1 sees it read (A2 opened the chat: a read receipt)", async () => {
    await openSlot("A1");
    await page.click('#chat-list .chat[data-chat="555101000000002@s.whatsapp.net"]');
    await page.waitForSelector(`.bubble.out[data-status="read"] >> text=${TEXT}`);
  });

  await step("capacity shows the sessions", async () => {
    await page.waitForFunction(() => {
      const text = document.querySelector('article.shard[data-shard="w1"] .capacity-text')?.textContent || "";
      return /^[2-9]\d* \/ 20 active$/.test(text.trim());
    });
    // ... and the master, from the worker's /health, agrees.
    await page.waitForFunction(async () => {
      const answer = await (await fetch("/api/shards")).json();
      return answer.shards.find((shard) => shard.id === "w1").active >= 2;
    }, null, { polling: 300 });
  });
  await page.waitForFunction(() => document.getElementById("toasts").childElementCount === 0, null, {
    timeout: 8000,
  });
  await shot("05-console");

  await step("search finds it across shards", async () => {
    // A51 is w2's: log it in and write to it from A1 through the API.
    const far = await page.evaluate(async ({ far }) => {
      const post = async (path, body) => {
        const answer = await fetch(path, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: body ? JSON.stringify(body) : undefined,
        });
        return [answer.status, await answer.json()];
      };
      await post("/api/accounts/A51/connect");
      const scanned = await post("/api/accounts/A51/scan");
      const sent = await post("/api/accounts/A1/send", { to: "555101000000051", text: far });
      return { scanned: scanned[1].status, sent: sent[0] };
    }, { far: FAR });
    if (far.scanned !== "CONNECTED" || far.sent !== 202) throw new Error(`A51: ${JSON.stringify(far)}`);
    await page.fill("#search-input", WORD);
    await page.press("#search-input", "Enter");
    // Out on A1 twice, in on A2 and on A51: four hits in two shards. A51's may need a moment.
    await page.waitForFunction((word) => {
      const hits = [...document.querySelectorAll("#search-hits .hit")];
      if (hits.length === 4) return true;
      document.getElementById("search-input").value = word;
      document.getElementById("search").requestSubmit();
      return false;
    }, WORD, { polling: 1000 });
    const hits = await page.$$eval("#search-hits .hit", (found) =>
      found.map((hit) => `${hit.dataset.slot} ${hit.querySelector(".hit-text").textContent}`).sort(),
    );
    const wanted = [`A1 ${FAR}`, `A1 ${TEXT}`, `A2 ${TEXT}`, `A51 ${FAR}`].sort();
    if (JSON.stringify(hits) !== JSON.stringify(wanted)) throw new Error(`hits: ${JSON.stringify(hits)}`);
  });
  await shot("07-search");

  await step("a hit opens its chat", async () => {
    await page.click('#search-hits .hit[data-slot="A51"]');
    await page.waitForFunction(() => location.hash === "#/A51");
    await page.waitForFunction(() => document.getElementById("slot-id").textContent === "A51");
    await page.waitForSelector(`.bubble.in >> text=${FAR}`);
    await page.waitForSelector(`#chat-list .chat.current[data-chat="${A1_JID}"]`);
  });
  await shot("08-hit-opened");

  await step("phone-sized page", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
    const small = await phone.newPage();
    small.setDefaultTimeout(STEP_MS);
    await small.goto(url + "#/A2");
    await small.click(`#chat-list .chat[data-chat="${A1_JID}"]`);
    await small.waitForSelector(`.bubble.in >> text=${TEXT}`);
    await shot("06-phone-a2", small);
    await phone.close();
  });

}

try {
  await (apiKey ? keyFlow() : userFlow());
  // A refused key is a 401 the browser reports; nothing else may go wrong in the page.
  const unexpected = consoleErrors.filter((text) => !(apiKey && /401/.test(text)));
  if (unexpected.length) throw new Error(`errors in the page: ${unexpected.join(" | ")}`);
  print({ step: "done", ok: true });
  await browser.close();
} catch (error) {
  print({ step: "failed", error: String(error && error.stack ? error.stack : error), consoleErrors });
  await page.screenshot({ path: join(artifacts, "failure.png") }).catch(() => {});
  await browser.close();
  process.exit(1);
}
