// The tag-history parts of the web UI in headless Debian Chromium: the "Recently
// deleted" tab and its Restore button, a tag's history, and "Restore this run" in the
// cleanup log (with its confirmation), in English and Chinese. Prints what it saw as
// one JSON line; tests/ui.rs asserts on it.
import { chromium } from "playwright-core";

const base = process.env.BERTH_URL;
const repoUrl = base + process.env.REPO_PATH;
const out = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});

const rows = (page, sel, attr) =>
  page.$$eval(sel, (els, a) => els.map((e) => e.getAttribute(a)), attr);
const texts = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent.trim()));
const text = async (page, sel) => ((await page.textContent(sel)) || "").trim();
const navigate = (page, action) => Promise.all([page.waitForNavigation(), action()]);

async function signIn(page, username, pw) {
  await page.goto(base + "/users/sign_in");
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", pw);
  await navigate(page, () => page.click("[data-test=sign-in-submit]"));
}

try {
  const ctx = await browser.newContext({ locale: "en-US" });
  const page = await ctx.newPage();
  await signIn(page, process.env.BERTH_USER, process.env.BERTH_PASSWORD);

  // The repository page has a "Recently deleted" tab; v1 is restored from it.
  await page.goto(repoUrl);
  out.tabs = await texts(page, "[data-test=repository-tabs] a");
  await navigate(page, () => page.click("[data-test=tab-deleted]"));
  out.deleted_before = await rows(page, "[data-test=deleted-tags] tbody tr", "data-tag");
  await navigate(page, () => page.click("tr[data-tag=v1] [data-test=restore-tag]"));
  out.restore_notice = await text(page, "[data-test=notice]");
  out.deleted_after = await rows(page, "[data-test=deleted-tags] tbody tr", "data-tag");

  // The tag's page shows its history.
  await page.goto(repoUrl + "/-/tags/v1");
  out.history = await texts(page, "[data-test=tag-history] tbody tr td:nth-child(2)");
  out.history_actors = await texts(page, "[data-test=tag-history] tbody tr td:nth-child(4)");

  // The cleanup log: "Restore this run", cancelled first, then confirmed.
  await page.goto(process.env.SETTINGS_URL);
  out.runs = await texts(page, "[data-test=cleanup-runs] tbody tr td:first-child");
  await page.click("[data-test=restore-run]");
  await page.waitForSelector("#confirm-dialog[open]");
  out.run_confirm_text = await text(page, "#confirm-message");
  await page.click("[data-test=confirm-cancel]");
  out.url_after_cancel = page.url();
  await page.click("[data-test=restore-run]");
  await page.waitForSelector("#confirm-dialog[open]");
  await navigate(page, () => page.click("[data-test=confirm-ok]"));
  out.run_notice = await text(page, "[data-test=run-restored]");
  await page.goto(repoUrl + "/deleted");
  out.deleted_after_run = await rows(page, "[data-test=deleted-tags] tbody tr", "data-tag");
  out.empty_text = await text(page, "[data-test=no-deleted]");

  // 中文.
  const zh = await browser.newContext({ locale: "zh-CN" });
  const zp = await zh.newPage();
  await signIn(zp, process.env.BERTH_USER, process.env.BERTH_PASSWORD);
  await zp.goto(repoUrl);
  out.zh_tabs = await texts(zp, "[data-test=repository-tabs] a");
  await zp.goto(repoUrl + "/-/tags/v1");
  out.zh_history_title = await text(zp, "[data-test=tag-history] h2");
  out.zh_history = await texts(zp, "[data-test=tag-history] tbody tr td:nth-child(2)");
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
