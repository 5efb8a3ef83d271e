// Drives the web UI in headless Debian Chromium and prints what it saw as one JSON
// line; tests/ui.rs asserts on it. Never downloads a browser.
import { chromium } from "playwright-core";

const base = process.env.BERTH_URL;
const user = process.env.BERTH_USER;
const password = process.env.BERTH_PASSWORD;
const out = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});

async function signIn(page, username, pw) {
  await page.goto(base + "/users/sign_in");
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", pw);
  await Promise.all([page.waitForNavigation(), page.click("[data-test=sign-in-submit]")]);
}

const rows = (page, sel, attr) =>
  page.$$eval(sel, (els, a) => els.map((e) => e.getAttribute(a)), attr);
const text = async (page, sel) => ((await page.textContent(sel)) || "").trim();

async function navigate(page, action) {
  await Promise.all([page.waitForNavigation(), action()]);
}

try {
  const ctx = await browser.newContext({ locale: "en-US" });
  const page = await ctx.newPage();

  // Sign in: a wrong password first, then the right one.
  await signIn(page, user, "not-the-password");
  out.bad_password_error = await text(page, "[data-test=sign-in-error]");
  await signIn(page, user, password);
  out.signed_in_as = await text(page, "[data-test=username]");

  // Project registry: list, CLI panel, search + sort in the URL, reload.
  await page.goto(base + "/team/app/container_registry");
  out.repositories = await rows(page, "[data-test=repositories] tbody tr", "data-repository");
  out.cli_push = await text(page, "[data-test=cli-push]");
  await page.fill("[data-test=search]", "a");
  await navigate(page, () => page.press("[data-test=search]", "Enter"));
  await navigate(page, () => page.selectOption("[data-test=order]", "desc"));
  out.shared_url = page.url();
  out.shared_rows = await rows(page, "[data-test=repositories] tbody tr", "data-repository");
  const other = await ctx.newPage();
  await other.goto(out.shared_url);
  out.reloaded_rows = await rows(other, "[data-test=repositories] tbody tr", "data-repository");
  await other.close();
  await page.fill("[data-test=search]", "web");
  await navigate(page, () => page.press("[data-test=search]", "Enter"));
  out.searched_rows = await rows(page, "[data-test=repositories] tbody tr", "data-repository");
  // A group's list sorts by the names it shows, not by full paths.
  const searchedUrl = page.url();
  await page.goto(base + "/groups/team/-/container_registries?sort=name&order=asc");
  out.group_rows_by_name = await rows(page, "[data-test=repositories] tbody tr", "data-repository");
  await page.goto(searchedUrl);

  // Repository page: sort, search, multi-arch, details.
  await navigate(page, () => page.click("[data-test=repositories] tbody tr a.strong"));
  const webUrl = page.url().split("?")[0];
  await navigate(page, () => page.selectOption("[data-test=order]", "desc"));
  out.tags_desc = await rows(page, "[data-test=tags] tbody tr", "data-tag");
  await page.fill("[data-test=search]", "1");
  await navigate(page, () => page.press("[data-test=search]", "Enter"));
  out.tags_searched = await rows(page, "[data-test=tags] tbody tr", "data-tag");

  // Keyboard: an arrow key changes the order without reloading the page; Enter
  // applies it, and focus comes back to the select after the reload.
  await page.goto(webUrl);
  await page.focus("[data-test=order]");
  await page.evaluate(() => { window.__stayed = true; });
  await page.keyboard.press("ArrowDown");
  out.order_after_arrow = await page.inputValue("[data-test=order]");
  out.arrow_kept_page = await page.evaluate(() => window.__stayed === true);
  await navigate(page, () => page.keyboard.press("Enter"));
  out.order_applied = new URL(page.url()).searchParams.get("order");
  out.focus_after_reload = await page.evaluate(() => document.activeElement && document.activeElement.name);

  await page.goto(base + "/team/app/container_registry?search=multi");
  await navigate(page, () => page.click("[data-test=repositories] tbody tr a.strong"));
  out.multi_arch_badge = await text(page, "tr[data-tag='1.0'] .badge");
  out.multi_platforms = await text(page, "tr[data-tag='1.0'] .platforms");
  // The index's tag page: each platform links to its image's details.
  await navigate(page, () => page.click("tr[data-tag='1.0'] a.tag-name"));
  out.platform_links = await page.$$eval("[data-test=platform-link]", (as) => as.map((a) => a.getAttribute("href")));
  await page.click("tr[data-platform='linux/arm64'] [data-test=platform-link]");
  out.platform_hash = new URL(page.url()).hash;
  out.platform_target = await page.evaluate(() => {
    const s = document.querySelector(":target");
    return s && {
      title: s.querySelector("h2").textContent.trim(),
      config: (s.querySelector("[data-test=platform-config]") || {}).textContent,
      layers: s.querySelectorAll("[data-test=platform-layers] tbody tr").length,
      size: s.querySelector("[data-test=platform-size]").textContent.trim(),
    };
  });
  await page.goto(webUrl);
  await navigate(page, () => page.click("tr[data-tag='v1'] a.tag-name"));
  out.tag_detail_layers = (await page.$$("[data-test=layers] tbody tr")).length;

  // Bulk delete two tags with the confirmation dialog.
  await page.goto(webUrl);
  await page.check("tr[data-tag='v1'] input[name=tags]");
  await page.check("tr[data-tag='v2'] input[name=tags]");
  await page.click("[data-test=bulk-delete]");
  await page.waitForSelector("#confirm-dialog[open]");
  out.confirm_text = await text(page, "#confirm-message");
  // Both buttons lie inside the dialog, and focus starts on Cancel.
  out.confirm_focus = await page.evaluate(() => document.activeElement && document.activeElement.id);
  out.confirm_buttons_inside = await page.evaluate(() => {
    const box = document.getElementById("confirm-dialog").getBoundingClientRect();
    return ["confirm-cancel", "confirm-ok"].every((id) => {
      const b = document.getElementById(id).getBoundingClientRect();
      return b.width > 0 && b.left >= box.left && b.right <= box.right && b.top >= box.top && b.bottom <= box.bottom;
    });
  });
  await navigate(page, () => page.click("[data-test=confirm-ok]"));
  out.tags_after_bulk = await rows(page, "[data-test=tags] tbody tr", "data-tag");
  out.bulk_notice = await text(page, "[data-test=notice]");

  // A reporter: no delete buttons, and a forged delete is refused.
  {
    const rctx = await browser.newContext({ locale: "en-US" });
    const rp = await rctx.newPage();
    await signIn(rp, "rita", "rita-password-1");
    await rp.goto(webUrl);
    out.reporter_rows = (await rp.$$("[data-test=tags] tbody tr")).length;
    out.reporter_delete_buttons = (await rp.$$("[data-test=delete-tag], [data-test=bulk-delete], [data-test=delete-repository], input[name=tags]")).length;
    const csrf = await rp.getAttribute("#single-delete input[name=csrf_token]", "value");
    const resp = await rp.request.post(webUrl + "/delete_tags", {
      form: { csrf_token: csrf, tags: "v3" },
      maxRedirects: 0,
    });
    out.reporter_forged_delete_status = resp.status();
    await rctx.close();
  }

  // Cleanup policy: invalid regex, then a valid one, then a live preview.
  const settings = base + "/team/app/-/settings/packages_and_registries";
  await page.goto(settings);
  await page.check("[data-test=policy-enabled]");
  await page.selectOption("[data-test=policy-keep-n]", "");
  await page.selectOption("[data-test=policy-older-than]", "");
  await page.fill("[data-test=policy-delete-regex]", "v(");
  await page.fill("[data-test=policy-keep-regex]", "a[");
  const [bad] = await Promise.all([
    page.waitForNavigation(),
    page.click("[data-test=save-policy]"),
  ]);
  out.regex_error_status = bad.status();
  out.regex_error = await text(page, "[data-test=error-name_regex]");
  // Every bad field has its error, focus is on the first, the preview is of the input.
  out.keep_regex_error = await text(page, "[data-test=error-name_regex_keep]");
  out.focus_after_error = await page.evaluate(() => document.activeElement && document.activeElement.name);
  out.preview_after_error = (await page.$("[data-test=preview-error]")) !== null;
  await page.fill("[data-test=policy-keep-regex]", "");
  await page.fill("[data-test=policy-delete-regex]", "v.*");
  await navigate(page, () => page.click("[data-test=save-policy]"));
  out.policy_saved_notice = await text(page, "[data-test=notice]");
  out.saved_delete_regex = await page.inputValue("[data-test=policy-delete-regex]");
  out.saved_preview_total = await text(page, "[data-test=preview-total]");
  out.saved_preview_tags = await rows(page, "[data-preview-tag]", "data-preview-tag");
  await page.fill("[data-test=policy-delete-regex]", "1.*");
  await page.waitForFunction(() => {
    const el = document.querySelector("[data-test=preview-total]");
    return el && el.textContent.startsWith("2 ");
  });
  out.live_preview_total = await text(page, "[data-test=preview-total]");
  out.live_preview_tags = await rows(page, "[data-preview-tag]", "data-preview-tag");

  // Visibility: an anonymous browser loses access when the registry becomes private.
  const anon = await browser.newContext({ locale: "en-US" });
  const ap = await anon.newPage();
  await ap.goto(base + "/team/app/container_registry");
  out.anonymous_before = (await ap.$$("[data-test=repositories] tbody tr")).length;
  await page.goto(settings);
  await page.check("[data-test=access-private]");
  await navigate(page, () => page.click("[data-test=save-visibility]"));
  await ap.goto(base + "/team/app/container_registry");
  out.anonymous_after_url = ap.url();
  await anon.close();

  // 中文: switch, see translated pages, remembered on the next page.
  await page.goto(base + "/team/app/container_registry");
  await navigate(page, () => page.click("[data-test=lang-switch]"));
  out.zh_html_lang = await page.getAttribute("html", "lang");
  out.zh_h1 = await text(page, "h1");
  out.zh_crumb = await text(page, ".crumbs span:nth-of-type(2)");
  // Visible text outside names, paths and commands must not be English.
  const allowed = new Set(["Berth", "English", "docker", "podman", "SBOM", "latest", "RE2",
    "read_registry", "write_registry", "main", "release", "image", "tag", "UTC", "KiB", "MiB", "CLI", "berth", "cleanup", "API"]);
  const english = async () =>
    page.evaluate((allowedList) => {
      const allow = new Set(allowedList);
      const skip = "code, .mono, .path, .tag-name, a.strong, .chip, td.nowrap, .num, .who, .brand, .platforms, .badge.accent, script, style, dialog, [data-test=repository-location], .preview-repo .mono, td:nth-child(2), h1, .crumbs a, .crumbs [aria-current], .menu-name, .sidebar-title";
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      const words = [];
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const el = n.parentElement;
        if (!el || el.closest(skip) || el.closest("[hidden]")) continue;
        for (const w of n.textContent.match(/[A-Za-z_]{3,}/g) || []) if (!allow.has(w)) words.push(w);
      }
      return words;
    }, [...allowed]);
  const zhWords = new Set(await english());
  await page.goto(webUrl);
  for (const w of await english()) zhWords.add(w);
  await page.goto(settings);
  out.zh_settings_h1 = await text(page, "h1");
  for (const w of await english()) zhWords.add(w);
  out.zh_ascii_words = [...zhWords];
  const next = await ctx.newPage();
  await next.goto(base + "/");
  out.zh_remembered_h1 = await text(next, "h1");
  await next.close();
  const zhCtx = await browser.newContext({ locale: "zh-CN" });
  const zp = await zhCtx.newPage();
  await zp.goto(base + "/");
  out.zh_accept_language_h1 = await text(zp, "h1");
  await zhCtx.close();
  await navigate(page, () => page.click("[data-test=lang-switch]"));
  await page.goto(base + "/");
  out.en_again_h1 = await text(page, "h1");

  // Sign out ends the server-side session.
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === "berth_session");
  await page.click("[data-test=user-menu] summary");
  await navigate(page, () => page.click("[data-test=sign-out]"));
  await page.goto(settings);
  out.after_sign_out_settings_url_has_sign_in = page.url().includes("/users/sign_in");
  const replay = await fetch(settings, {
    headers: { cookie: `berth_session=${session.value}` },
    redirect: "manual",
  });
  out.old_cookie_after_sign_out = replay.status;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
