// Protection rules in the web UI, in headless Debian Chromium: a maintainer adds,
// edits and deletes rules in the project settings (with the live "matches N
// existing tags" count), and the repository page shows badges and hides the delete
// controls a viewer may not use. Prints what it saw as one JSON line; tests/ui.rs
// asserts on it.
import { chromium } from "playwright-core";

const base = process.env.BERTH_URL;
const project = process.env.PROJECT;
const repoUrl = base + process.env.REPOSITORY_URL;
const out = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});

async function signedIn(username, pw, locale = "en-US") {
  const ctx = await browser.newContext({ locale });
  const page = await ctx.newPage();
  await page.goto(base + "/users/sign_in");
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", pw);
  await Promise.all([page.waitForNavigation(), page.click("[data-test=sign-in-submit]")]);
  return page;
}

const text = async (page, sel) => ((await page.textContent(sel)) || "").trim();
const navigate = (page, action) => Promise.all([page.waitForNavigation(), action()]);
// Wait until `sel` shows something other than `before`, then return it.
async function changed(page, sel, before) {
  await page.waitForFunction(
    ([s, b]) => {
      const el = document.querySelector(s);
      return el && el.textContent.trim() !== b;
    },
    [sel, before],
  );
  return text(page, sel);
}

try {
  const settings = base + "/" + project + "/-/settings/packages_and_registries";
  const m = await signedIn("maint", process.env.MAINT_PASSWORD);
  await m.goto(settings);
  out.sections = [await text(m, "#protection-repository-h"), await text(m, "#protection-tag-h")];

  // The live count while typing a tag pattern, and an invalid one.
  const tagForm = "[data-test=add-tag-rule]";
  await m.fill(`${tagForm} [data-test=new-rule-pattern]`, "v.*");
  out.live_tag_count = await changed(m, `${tagForm} [data-test=new-rule-matches]`, "");
  await m.fill(`${tagForm} [data-test=new-rule-pattern]`, "(");
  out.live_invalid = await changed(m, `${tagForm} [data-test=new-rule-matches]`, out.live_tag_count);
  await m.fill(`${tagForm} [data-test=new-rule-pattern]`, "v.*");
  await changed(m, `${tagForm} [data-test=new-rule-matches]`, out.live_invalid);
  await navigate(m, () => m.click(`${tagForm} [data-test=new-rule-add]`));
  out.saved_notice = await text(m, "[data-test=notice]");
  out.tag_rule_matches = await m.$$eval("[data-test=tag-rules] [data-test=rule-matches]", (els) =>
    els.map((e) => e.textContent.trim()));

  // An immutable rule.
  await m.fill(`${tagForm} [data-test=new-rule-pattern]`, "rel-.*");
  await m.check(`${tagForm} [data-test=new-rule-immutable]`);
  await navigate(m, () => m.click(`${tagForm} [data-test=new-rule-add]`));
  out.immutable_badges = (await m.$$("[data-test=tag-rules] [data-test=rule-immutable]")).length;

  // A repository rule at owner level is beyond a maintainer; at maintainer it is saved.
  const repoForm = "[data-test=add-repository-rule]";
  await m.fill(`${repoForm} [data-test=new-rule-pattern]`, project + "/*");
  out.live_repository_count = await changed(m, `${repoForm} [data-test=new-rule-matches]`, "");
  await m.selectOption(`${repoForm} [data-test=new-rule-push]`, "owner");
  await navigate(m, () => m.click(`${repoForm} [data-test=new-rule-add]`));
  out.owner_rule_error = await text(m, "#protection-repository [data-test=rule-error]");
  await m.fill(`${repoForm} [data-test=new-rule-pattern]`, project + "/*");
  await m.selectOption(`${repoForm} [data-test=new-rule-push]`, "maintainer");
  await m.selectOption(`${repoForm} [data-test=new-rule-delete]`, "");
  await navigate(m, () => m.click(`${repoForm} [data-test=new-rule-add]`));
  out.repository_rules = await m.$$eval("[data-test=repository-rules] [data-test=rule-pattern]", (els) => els.map((e) => e.value));

  // Edit the protected tag rule: v.* becomes v1.
  const tagRow = "[data-test=tag-rules] tr:has([data-test=rule-save])";
  await m.fill(`${tagRow} [data-test=rule-pattern]`, "v1");
  await navigate(m, () => m.click(`${tagRow} [data-test=rule-save]`));
  out.edited_matches = await text(m, `${tagRow} [data-test=rule-matches]`);

  // Delete the repository rule (after the confirmation dialog).
  await m.click("[data-test=repository-rules] [data-test=rule-delete-button]");
  await navigate(m, () => m.click("#confirm-ok"));
  out.repository_rules_after_delete = (await m.$$("[data-test=repository-rules] [data-test=rule-pattern]")).length;

  // The repository page, as a developer and as the maintainer.
  const d = await signedIn("dev", process.env.DEV_PASSWORD);
  await d.goto(repoUrl);
  out.badges = await d.$$eval("[data-test=tags] tbody tr", (trs) =>
    Object.fromEntries(trs.map((tr) => {
      const b = tr.querySelector("[data-test^=tag-]");
      return [tr.getAttribute("data-tag"), b ? b.textContent.trim() : ""];
    })));
  out.dev_delete_buttons = await d.$$eval("[data-test=delete-tag]", (els) => els.map((e) => e.value));
  await d.goto(repoUrl + "/-/tags/v1");
  out.dev_tag_page_delete_v1 = (await d.$$("[data-test=delete-this-tag]")).length;
  await d.goto(repoUrl + "/-/tags/v2");
  out.dev_tag_page_delete_v2 = (await d.$$("[data-test=delete-this-tag]")).length;
  await m.goto(repoUrl);
  out.maint_delete_buttons = await m.$$eval("[data-test=delete-tag]", (els) => els.map((e) => e.value));
  out.maint_checkboxes = await m.$$eval("input[name=tags]", (els) => els.map((e) => e.value));
  out.maint_delete_repository = (await m.$$("[data-test=delete-repository]")).length;

  // 中文.
  const z = await signedIn("maint", process.env.MAINT_PASSWORD, "zh-CN");
  await z.goto(settings);
  out.zh_sections = [await text(z, "#protection-repository-h"), await text(z, "#protection-tag-h")];
  await z.goto(repoUrl);
  out.zh_badges = await z.$$eval("[data-test=tags] [data-test^=tag-]", (els) => els.map((e) => e.textContent.trim()));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
