// The admin console in headless Chromium, driven by playwright-core; run by
// tests/tests/browser.rs, which starts the relay and the console and
// passes their addresses in the environment:
//   CONSOLE_URL, ADMIN_USER, ADMIN_PASSWORD, RELAY_ADDR, SUBJECT, CHROMIUM,
//   OUT (a directory: the downloaded CSV goes there), SHOTS (screenshots).
// Each step prints `step: …`; any failure throws, and node exits non-zero.

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
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
  const sent = execFileSync("python3", ["-c", SMTPLIB, env("RELAY_ADDR"), subject], {
    encoding: "utf8",
  });
  if (!sent.includes("sent")) throw new Error(`smtplib: ${sent}`);
  const row = page.locator("table.log tbody tr", { hasText: subject });
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
