// The group's Dependency Proxy page in headless Debian Chromium: prefix and pull
// example, cache summary, TTL settings, the Chinese page, and purging with the
// confirmation dialog. Prints what it saw as one JSON line for tests/dependency_proxy.rs.
import { chromium } from "playwright-core";

const base = process.env.BERTH_URL;
const group = process.env.BERTH_GROUP;
const out = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const text = async (page, sel) => ((await page.textContent(sel)) || "").trim();
async function navigate(page, action) {
  await Promise.all([page.waitForNavigation(), action()]);
}

try {
  const ctx = await browser.newContext({ locale: "en-US" });
  const page = await ctx.newPage();
  await page.goto(base + "/users/sign_in");
  await page.fill("input[name=username]", process.env.BERTH_USER);
  await page.fill("input[name=password]", process.env.BERTH_PASSWORD);
  await navigate(page, () => page.click("[data-test=sign-in-submit]"));

  const url = `${base}/groups/${group}/-/dependency_proxy`;
  await page.goto(url);
  out.h1 = await text(page, "h1");
  out.prefix = await text(page, "[data-test=image-prefix]");
  out.copy_text = await page.getAttribute("[data-test=image-prefix] + .copy", "data-copy");
  out.pull_example = await text(page, "[data-test=pull-example]");
  out.summary = await text(page, "[data-test=cache-summary]");

  await page.check("[data-test=ttl-enabled]");
  await page.fill("[data-test=ttl-days]", "30");
  await navigate(page, () => page.click("[data-test=save]"));
  out.saved_notice = await text(page, "[data-test=notice]");
  out.ttl_days = await page.inputValue("[data-test=ttl-days]");
  out.ttl_checked = await page.isChecked("[data-test=ttl-enabled]");

  await navigate(page, () => page.click("[data-test=lang-switch]"));
  out.zh_h1 = await text(page, "h1");
  out.zh_summary = await text(page, "[data-test=cache-summary]");
  await navigate(page, () => page.click("[data-test=lang-switch]"));

  await page.click("[data-test=purge]");
  await page.waitForSelector("#confirm-dialog[open]");
  out.confirm_text = await text(page, "#confirm-message");
  await navigate(page, () => page.click("[data-test=confirm-ok]"));
  out.purged_notice = await text(page, "[data-test=notice]");
  out.summary_after = await text(page, "[data-test=cache-summary]");
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
