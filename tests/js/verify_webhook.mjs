// Verifies webhook deliveries with the official Standard Webhooks library for
// JavaScript, as a receiver would: reads one JSON object per line on stdin,
// {secret, headers, body}, and writes one line per delivery: "ok <id>" or "bad <reason>".
import { createInterface } from "node:readline";
import { Webhook } from "standardwebhooks";

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { secret, headers, body } = JSON.parse(line);
  try {
    const payload = new Webhook(secret).verify(body, headers);
    console.log(`ok ${payload.id}`);
  } catch (error) {
    console.log(`bad ${error.message}`);
  }
}
