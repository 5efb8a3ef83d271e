// axe-core over every page type in English and Simplified Chinese, as root (who sees
// every page, the admin area included) and as a guest (sign-in, sign-up, 404).
// Prints, per page and language, the critical and serious violations found (rule id,
// impact and the first offending element); tests/ui.rs requires none.
//
// The pages' Content-Security-Policy forbids inline scripts, so the context bypasses
// it to inject axe (the pages themselves are unchanged).
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axePath = require.resolve("axe-core/axe.min.js");
const base = process.env.BERTH_URL;
// [name, path] of each page type, from the data tests/ui.rs made. With
// SCREENSHOT_DIR, each page is also kept as <name>-<lang>.png there.
const signedIn = JSON.parse(process.env.AXE_PAGES);
const guest = [["sign-up", "/users/sign_up"], ["", "/users/sign_in"], ["", "/no/such/page/-/nothing"]];
const dir = process.env.SCREENSHOT_DIR;
if (dir) mkdirSync(dir, { recursive: true });
const files = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});

const results = [];
async function check(page, [name, path], lang) {
  await page.goto(base + path);
  if (dir && name) {
    const file = `${name}-${lang}.png`;
    await page.screenshot({ path: join(dir, file), fullPage: true });
    files.push(file);
  }
  await page.addScriptTag({ path: axePath });
  const r = await page.evaluate(async () => {
    // WCAG 2 A/AA and best practices, as axe's default run.
    const res = await window.axe.run(document, { resultTypes: ["violations"] });
    return res.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      target: v.nodes[0] && v.nodes[0].target.join(" "),
      count: v.nodes.length,
    }));
  });
  const bad = r.filter((v) => v.impact === "critical" || v.impact === "serious");
  results.push({ path, lang, violations: bad, minor: r.filter((v) => !bad.includes(v)).map((v) => v.id) });
}

try {
  for (const lang of ["en", "zh-CN"]) {
    const view = { viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 };
    const anon = await browser.newContext({ locale: lang, bypassCSP: true, ...view });
    const a = await anon.newPage();
    for (const path of guest) await check(a, path, lang);
    await anon.close();

    const ctx = await browser.newContext({ locale: lang, bypassCSP: true, ...view });
    ctx.setDefaultTimeout(5000);
    const page = await ctx.newPage();
    await page.goto(base + "/users/sign_in");
    await page.fill("input[name=username]", process.env.BERTH_USER);
    await page.fill("input[name=password]", process.env.BERTH_PASSWORD);
    await Promise.all([page.waitForNavigation(), page.click("[data-test=sign-in-submit]")]);
    // `{repository}`: the first image listed on team/app's registry page.
    await page.goto(base + "/team/app/container_registry");
    const repo = await page.getAttribute("[data-test=repositories] tbody tr a.strong", "href");
    for (const [name, path] of signedIn) {
      await check(page, [name, path.replace("{repository}", repo)], lang);
    }
    // The user menu, opened.
    await page.goto(base + "/");
    await page.click("[data-test=user-menu] summary");
    await page.addScriptTag({ path: axePath });
    const menu = await page.evaluate(async () =>
      (await window.axe.run(document)).violations
        .filter((v) => v.impact === "critical" || v.impact === "serious")
        .map((v) => ({ id: v.id, impact: v.impact, target: v.nodes[0].target.join(" ") })),
    );
    results.push({ path: "/ (user menu open)", lang, violations: menu, minor: [] });
    await ctx.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ pages: results.length, results, files }));
