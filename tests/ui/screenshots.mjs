// Screenshots of every page in English and Simplified Chinese, written to
// $SCREENSHOT_DIR (docs/screenshots/ for the README). Expects the data tests/ui.rs
// pushes (team/app with web, api and multi images; team/empty without images).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.BERTH_URL;
const dir = process.env.SCREENSHOT_DIR;
mkdirSync(dir, { recursive: true });
const files = [];
const overflow = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--font-render-hinting=none"],
});

async function shot(page, name, lang) {
  const file = `${name}-${lang}.png`;
  await page.screenshot({ path: join(dir, file), fullPage: true });
  files.push(file);
}

try {
  for (const lang of ["en", "zh-CN"]) {
    const ctx = await browser.newContext({
      locale: lang === "en" ? "en-US" : "zh-CN",
      viewport: { width: 1280, height: 800 },
      deviceScaleFactor: 1,
    });
    const page = await ctx.newPage();
    await page.goto(base + "/users/sign_in");
    await shot(page, "sign-in", lang);
    await page.fill("input[name=username]", process.env.BERTH_USER);
    await page.fill("input[name=password]", process.env.BERTH_PASSWORD);
    await Promise.all([page.waitForNavigation(), page.click("[data-test=sign-in-submit]")]);
    await page.goto(base + "/");
    await shot(page, "home", lang);
    await page.goto(base + "/team/app/container_registry");
    await shot(page, "project-registry", lang);
    await page.goto(base + "/team/empty/container_registry");
    await shot(page, "project-registry-empty", lang);
    await page.goto(base + "/groups/team/-/container_registries");
    await shot(page, "group-registry", lang);
    await page.goto(base + "/team/app/container_registry?search=web");
    await Promise.all([page.waitForNavigation(), page.click("[data-test=repositories] tbody tr a.strong")]);
    const repositoryUrl = new URL(page.url()).pathname;
    await page.check("[data-test=tags] tbody tr:first-child input[name=tags]");
    await shot(page, "repository", lang);
    await page.goto(base + "/team/app/container_registry?search=multi");
    await Promise.all([page.waitForNavigation(), page.click("[data-test=repositories] tbody tr a.strong")]);
    await Promise.all([page.waitForNavigation(), page.click("[data-test=tags] tbody tr a.tag-name")]);
    const tagUrl = new URL(page.url()).pathname;
    await shot(page, "tag", lang);
    await page.goto(base + "/team/app/-/settings/packages_and_registries");
    await shot(page, "settings", lang);
    // A phone-sized screen: pages must fit its width (tables scroll inside their box).
    await page.setViewportSize({ width: 390, height: 844 });
    for (const [name, url] of [
      ["narrow-project-registry", "/team/app/container_registry"],
      ["narrow-repository", repositoryUrl],
      ["narrow-settings", "/team/app/-/settings/packages_and_registries"],
      ["narrow-tag", tagUrl],
    ]) {
      await page.goto(base + url);
      const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      if (wide) overflow.push(`${name}-${lang}`);
      if (name !== "narrow-project-registry") await shot(page, name, lang);
    }
    await ctx.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ files, overflow }));
