// The admin console in headless Chromium, driven by playwright-core; run by
// tests/tests/browser.rs, which starts the relay and the console and
// passes their addresses in the environment:
//   CONSOLE_URL, ADMIN_USER, ADMIN_PASSWORD, RELAY_ADDR, SUBJECT, CHROMIUM,
//   CONTROL_URL (the test's hand on the fake Gmail and on `apimail log`),
//   OUT (a directory: the downloaded CSV and the log's go there),
//   SHOTS (screenshots).
// Each step prints `step: …`; any failure throws, and node exits non-zero.

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env("CONSOLE_URL");
const subject = env("SUBJECT");
const shots = env("SHOTS");
const out = env("OUT");
const control = env("CONTROL_URL");
const TIMEOUT = 60_000;

const step = (text) => console.log(`step: ${text}`);

/// Waits for `check` to be true, reloading the page between tries (a
/// console with live updates needs no reload; one without gets it).
async function eventually(page, what, check) {
  const until = Date.now() + TIMEOUT;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(500);
    if (await check()) return;
    await page.reload();
  }
}

/// Asks the test's control server (see tests/tests/browser.rs).
async function tell(method, path) {
  const answer = await fetch(`${control}${path}`, {
    method,
    signal: AbortSignal.timeout(TIMEOUT),
  });
  if (!answer.ok) throw new Error(`${method} ${path}: ${answer.status} ${await answer.text()}`);
  return Buffer.from(await answer.arrayBuffer());
}

/// Submits a message through the relay with Python's smtplib.
function submit(title) {
  const sent = execFileSync("python3", ["-c", SMTPLIB, env("RELAY_ADDR"), title], {
    encoding: "utf8",
    timeout: TIMEOUT,
  });
  if (!sent.includes("sent")) throw new Error(`smtplib: ${sent}`);
}

/// The log page's row of the message titled `title`.
const logRow = (page, title) =>
  page.locator("table.log tbody tr", { hasText: title });

/// Waits on the log page until the row of `title` shows `outcome`.
async function logShows(page, title, outcome) {
  await page.goto(`${url}/log`);
  await eventually(page, `"${title}" to show ${outcome}`, async () =>
    (await logRow(page, title).locator(`.o-${outcome}`).count()) > 0,
  );
}

/// The queue page's row of the message titled `title` (by its id).
async function queueRowOf(page, title) {
  await page.goto(`${url}/log`);
  const link = logRow(page, title).locator("a[href^='/messages/']").first();
  await link.waitFor();
  const id = decodeURIComponent((await link.getAttribute("href")).slice("/messages/".length));
  return { id, row: page.locator(`table.queue tbody tr[data-id="${id}"]`) };
}

const SMTPLIB = `
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
message = ("From: Scanner <scanner@example.com>\\r\\nTo: boss@example.org\\r\\n"
           "Subject: " + sys.argv[2] + "\\r\\n\\r\\nA scan.\\r\\n")
s = smtplib.SMTP(host, int(port), timeout=30)
s.sendmail("scanner@example.com", ["boss@example.org"], message.encode())
s.quit()
print("sent")
`;

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({
    acceptDownloads: true,
    locale: "en-US",
    viewport: { width: 1280, height: 800 },
  });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();

  step("log in");
  await page.goto(`${url}/login`);
  await page.screenshot({ path: join(shots, "login.png") });
  await page.fill("input[name=user]", env("ADMIN_USER"));
  await page.fill("input[name=password]", env("ADMIN_PASSWORD"));
  await Promise.all([page.waitForURL(`${url}/`), page.click("button[type=submit]")]);
  await page.getByRole("heading", { level: 1 }).waitFor();

  step("submit a message through the relay and see its row");
  await page.goto(`${url}/log`);
  submit(subject);
  const row = logRow(page, subject);
  await eventually(page, "the message's row", async () => (await row.count()) > 0);
  // Delivered by the relay's workers: the row turns to sent.
  await eventually(page, "the row to show sent", async () =>
    (await row.locator(".o-sent").count()) > 0,
  );
  await page.screenshot({ path: join(shots, "log.png"), fullPage: true });

  step("filter it");
  await page.fill("input[name=q]", subject);
  await Promise.all([page.waitForURL(/q=/), page.click("form.filters button[type=submit]")]);
  const rows = page.locator("table.log tbody tr");
  if ((await rows.count()) !== 1) throw new Error(`the filter shows ${await rows.count()} rows`);

  step("download the CSV of the filtered rows");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("a.button[href^='/log.csv']"),
  ]);
  await download.saveAs(join(out, "console.csv"));
  // `apimail log --csv` of this moment, for the test to compare.
  writeFileSync(join(out, "apimail-log.csv"), await tell("GET", "/log.csv"));

  step("open it and see its timeline");
  await Promise.all([page.waitForURL(/\/messages\//), rows.first().locator("a").first().click()]);
  const timeline = page.locator("h2 + table tbody tr");
  await timeline.first().waitFor();
  const outcomes = await timeline.locator(".outcome").allTextContents();
  if (!outcomes.includes("queued") || !outcomes.includes("sent")) {
    throw new Error(`the timeline shows ${JSON.stringify(outcomes)}`);
  }
  if (!(await page.locator("dd", { hasText: subject }).count())) {
    throw new Error("the message page does not show the Subject");
  }
  if (!(await page.locator("dd", { hasText: "127.0.0.1" }).count())) {
    throw new Error("the message page does not show the client");
  }
  await page.screenshot({ path: join(shots, "message.png"), fullPage: true });

  step("the overview");
  await page.goto(`${url}/`);
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });

  step("two messages whose sends end uncertain are held");
  await tell("POST", "/uncertain?n=2");
  submit("Uncertain one");
  submit("Uncertain two");
  // Their last record: held (after an uncertain one); the queue says why.
  await logShows(page, "Uncertain one", "held");
  await logShows(page, "Uncertain two", "held");
  const one = await queueRowOf(page, "Uncertain one");
  const two = await queueRowOf(page, "Uncertain two");
  await page.goto(`${url}/queue?state=uncertain`);
  await eventually(page, "both on the queue page", async () =>
    (await one.row.locator(".o-uncertain").count()) > 0 &&
    (await two.row.locator(".o-uncertain").count()) > 0,
  );
  await page.screenshot({ path: join(shots, "queue.png"), fullPage: true });

  step("retry an uncertain message from the queue page");
  await Promise.all([
    page.waitForURL(/done=retry/),
    one.row.locator("button[value=retry]").click(),
  ]);
  await page.locator("p.notice", { hasText: "Due now" }).waitFor();
  await logShows(page, "Uncertain one", "sent");
  await page.goto(`${url}/messages/${encodeURIComponent(one.id)}`);
  const retried = await page.locator("h2 + table tbody .outcome").allTextContents();
  if (!retried.includes("uncertain") || !retried.includes("sent")) {
    throw new Error(`the retried message's timeline shows ${JSON.stringify(retried)}`);
  }

  step("drop one with a confirmation");
  await page.goto(`${url}/queue?state=uncertain`);
  await two.row.waitFor();
  if (await one.row.count()) throw new Error("the retried message is still in the queue");
  await Promise.all([
    page.waitForURL(/\/queue\/action/),
    two.row.locator("button[value=drop]").click(),
  ]);
  // Nothing is dropped before the confirmation.
  await page.locator("p.question strong.count", { hasText: "1" }).waitFor();
  if (!(await page.locator("form.confirm + table code", { hasText: two.id }).count())) {
    throw new Error("the confirmation does not name the entry");
  }
  await page.screenshot({ path: join(shots, "queue-drop.png"), fullPage: true });
  await Promise.all([
    page.waitForURL(/done=drop/),
    page.click("form.confirm button[type=submit]"),
  ]);
  await page.locator("p.notice", { hasText: "Dropped" }).waitFor();
  await page.goto(`${url}/queue`);
  if (await two.row.count()) throw new Error("the dropped message is still in the queue");

  step("a revoked token holds a message, and the overview says so");
  await tell("POST", "/revoke");
  const held = "Held for a sign-in";
  submit(held);
  await logShows(page, held, "held");
  await page.goto(`${url}/`);
  const alert = page.locator("section.alerts li.alert", { hasText: "refused its authorization" });
  // The overview updates itself (live); a reload too, if need be.
  await eventually(page, "the overview's alert", async () => (await alert.count()) > 0);
  const again = page.locator("a.button.danger", { hasText: "Sign in again" });
  await again.waitFor();
  await page.screenshot({ path: join(shots, "overview-alert.png"), fullPage: true });

  step("sign in again from the console");
  await Promise.all([page.waitForURL(/\/sign-in$/), again.click()]);
  await page.screenshot({ path: join(shots, "sign-in.png"), fullPage: true });
  await page.click("form[action$='/sign-in'] button[type=submit]");
  const link = page.locator("p.link a");
  await eventually(page, "Google's authorization link", async () => (await link.count()) > 0);
  if ((await page.content()).match(/access_token|refresh_token/)) {
    throw new Error("the sign-in page shows a token");
  }
  await page.screenshot({ path: join(shots, "sign-in-link.png"), fullPage: true });
  // The fake Google's consent: the link opens it, it redirects straight
  // to the login's loopback listener (the console is on loopback).
  const [consent] = await Promise.all([context.waitForEvent("page"), link.click()]);
  await consent.waitForLoadState();
  await eventually(page, "the sign-in to be done", async () =>
    (await page.locator(".notice", { hasText: "Signed in" }).count()) > 0,
  );
  await consent.close();
  await page.screenshot({ path: join(shots, "sign-in-done.png"), fullPage: true });

  step("the held message is delivered");
  await logShows(page, held, "sent");
  await page.goto(`${url}/`);
  await eventually(page, "the alert to clear", async () => (await alert.count()) === 0);
  if (await page.locator("a.button.danger", { hasText: "Sign in again" }).count()) {
    throw new Error("the account is still refused");
  }

  step("add a relay user");
  await page.goto(`${url}/relay-users`);
  await page.fill("form.filters input[name=name]", "frontdesk");
  await page.fill("form.filters input[name=password]", "printer password 1");
  await page.fill("form.filters input[name=again]", "printer password 1");
  await page.fill("form.filters input[name=allowed_from]", "192.0.2.0/24");
  await page.fill("form.filters input[name=messages_per_minute]", "30");
  await Promise.all([
    page.waitForURL(/\/relay-users\?/),
    page.click("form.filters button[type=submit]"),
  ]);
  await page.locator("tr[data-user=frontdesk]").waitFor();
  await page.screenshot({ path: join(shots, "relay-users.png"), fullPage: true });

  step("the checks");
  await page.goto(`${url}/checks`);
  await page.locator("ul.checks li").first().waitFor();
  await page.screenshot({ path: join(shots, "checks.png"), fullPage: true });

  step("switch to Japanese");
  await page.click("header a[lang=ja]");
  await page.waitForSelector("html[lang=ja]");
  await page.goto(`${url}/log`);
  if (!(await page.getByText("送信ログ").count())) throw new Error("no Japanese on the log page");
  await page.screenshot({ path: join(shots, "log-ja.png"), fullPage: true });
  await page.click("header a[lang=en]");
  await page.waitForSelector("html[lang=en]");

  step("a POST without its CSRF token is refused");
  const forged = await page.request.post(`${url}/logout`, {
    form: { note: "no csrf field" },
    maxRedirects: 0,
  });
  if (forged.status() !== 403) throw new Error(`a POST without CSRF got ${forged.status()}`);
  // Still signed in.
  await page.goto(`${url}/log`);
  if (!page.url().endsWith("/log")) throw new Error(`signed out by the forged POST: ${page.url()}`);

  step("wrong passwords back off, then lock out");
  const stranger = await browser.newContext({ locale: "en-US" });
  stranger.setDefaultTimeout(TIMEOUT);
  const login = await stranger.newPage();
  let status = 0;
  for (let attempt = 1; attempt <= 12 && status !== 429; attempt++) {
    await login.goto(`${url}/login`);
    await login.fill("input[name=user]", env("ADMIN_USER"));
    await login.fill("input[name=password]", `wrong password ${attempt}`);
    const [answer] = await Promise.all([
      login.waitForResponse((r) => r.url().endsWith("/login") && r.request().method() === "POST", {
        timeout: 120_000,
      }),
      login.click("button[type=submit]"),
    ]);
    status = answer.status();
  }
  if (status !== 429) throw new Error(`no lockout after 12 wrong passwords (last ${status})`);
  // Locked even with the right password.
  await login.goto(`${url}/login`);
  await login.fill("input[name=user]", env("ADMIN_USER"));
  await login.fill("input[name=password]", env("ADMIN_PASSWORD"));
  const [right] = await Promise.all([
    login.waitForResponse((r) => r.url().endsWith("/login") && r.request().method() === "POST"),
    login.click("button[type=submit]"),
  ]);
  if (right.status() !== 429) throw new Error(`the right password while locked got ${right.status()}`);
  await login.screenshot({ path: join(shots, "locked.png") });
  await stranger.close();
  step("done");
} finally {
  await browser.close();
}
