// Berth web UI: copy buttons, confirmation dialogs, select-all, auto-submitting
// filters and the live cleanup preview. Every page works without it; this only
// makes them quicker to use.
(function () {
  "use strict";
  var toast = document.getElementById("toast");
  function say(text) {
    if (!toast) return;
    toast.textContent = text;
    toast.classList.add("show");
    clearTimeout(say.timer);
    say.timer = setTimeout(function () { toast.classList.remove("show"); }, 1600);
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { document.body.removeChild(area); }
    return Promise.resolve();
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy]");
    if (!b) return;
    e.preventDefault();
    copy(b.getAttribute("data-copy")).then(function () {
      say(toast.getAttribute("data-copied"));
    });
  });

  // Confirmation dialog for forms marked data-confirm (and single-tag buttons).
  var dialog = document.getElementById("confirm-dialog");
  function confirmThen(message, go) {
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(message)) go();
      return;
    }
    document.getElementById("confirm-message").textContent = message;
    dialog.returnValue = "";
    dialog.showModal();
    // Focus starts on Cancel, so Enter never deletes by accident.
    document.getElementById("confirm-cancel").focus();
    dialog.addEventListener("close", function once() {
      dialog.removeEventListener("close", once);
      if (dialog.returnValue === "ok") go();
    });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset.confirmed) return;
    var message = form.getAttribute("data-confirm");
    var submitter = e.submitter;
    if (submitter && submitter.hasAttribute("data-confirm-one")) {
      message = submitter.getAttribute("data-confirm-one");
    }
    if (!message) return;
    if (form.hasAttribute("data-confirm-count")) {
      var n = form.querySelectorAll('input[name="tags"]:checked').length;
      if (n === 1 && form.hasAttribute("data-confirm-one-count")) {
        message = form.getAttribute("data-confirm-one-count");
      }
      message = message.replace("{count}", String(n));
    }
    e.preventDefault();
    confirmThen(message, function () {
      form.dataset.confirmed = "1";
      if (submitter && submitter.name) {
        var hidden = document.createElement("input");
        hidden.type = "hidden";
        hidden.name = submitter.name;
        hidden.value = submitter.value;
        form.appendChild(hidden);
      }
      form.submit();
    });
  });

  // Select all tags on the page; the bulk button says how many are selected.
  function refreshBulk(form) {
    var button = form.querySelector("[data-bulk-delete]");
    if (!button) return;
    var n = form.querySelectorAll('input[name="tags"]:checked').length;
    button.disabled = n === 0;
    button.querySelector("span").textContent = button.getAttribute("data-label") + (n ? " (" + n + ")" : "");
    var all = form.querySelector("[data-select-all]");
    var boxes = form.querySelectorAll('input[name="tags"]');
    if (all) {
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
  }
  document.addEventListener("change", function (e) {
    var form = e.target.form;
    if (e.target.hasAttribute("data-select-all")) {
      form.querySelectorAll('input[name="tags"]').forEach(function (b) { b.checked = e.target.checked; });
    }
    if (form && form.id === "tags-form") refreshBulk(form);
    if (form && form.hasAttribute("data-autosubmit") && e.target.tagName === "SELECT") {
      // A select changed from the keyboard (arrow keys change it at once) is applied
      // with Enter or on leaving it, so a keyboard user can reach the option they want.
      if (!keyboardSelect) autosubmit(form, e.target);
    }
  });
  var keyboardSelect = false;
  function autosubmit(form, control) {
    // After the page reloads, focus goes back to the control that reloaded it.
    try { sessionStorage.setItem("berth-refocus", control.name); } catch (err) {}
    form.requestSubmit ? form.requestSubmit() : form.submit();
  }
  document.addEventListener("keydown", function (e) {
    var el = e.target;
    if (el.tagName !== "SELECT" || !el.form || !el.form.hasAttribute("data-autosubmit")) return;
    if (e.key === "Enter") {
      e.preventDefault();
      keyboardSelect = false;
      autosubmit(el.form, el);
    } else if (e.key !== "Tab") {
      keyboardSelect = true;
    }
  });
  document.addEventListener("mousedown", function () { keyboardSelect = false; });
  document.addEventListener("focusout", function (e) {
    var el = e.target;
    if (keyboardSelect && el.tagName === "SELECT" && el.form && el.form.hasAttribute("data-autosubmit")
        && el.value !== el.getAttribute("data-initial")) {
      keyboardSelect = false;
      autosubmit(el.form, el);
    }
  });
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (el) {
    el.setAttribute("data-initial", el.value);
  });
  try {
    var refocus = sessionStorage.getItem("berth-refocus");
    sessionStorage.removeItem("berth-refocus");
    var target = refocus && document.querySelector('form[data-autosubmit] [name="' + refocus + '"]');
    if (target) target.focus();
  } catch (err) {}
  var tagsForm = document.getElementById("tags-form");
  if (tagsForm) refreshBulk(tagsForm);

  // Live preview of the cleanup policy being edited.
  var policy = document.getElementById("policy-form");
  var preview = document.getElementById("policy-preview");
  if (policy && preview) {
    var url = policy.getAttribute("data-preview-url");
    var pending = null;
    var seq = 0;
    function refresh() {
      var q = new URLSearchParams();
      ["name_regex", "name_regex_keep", "keep_n", "older_than"].forEach(function (k) {
        var el = policy.elements[k];
        if (el && el.value !== "") q.set(k, el.value);
      });
      if (!q.has("name_regex")) q.set("name_regex", "");
      var mine = ++seq;
      fetch(url + "?" + q.toString(), { credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (html) { if (mine === seq) preview.innerHTML = html; });
    }
    policy.addEventListener("input", function () {
      clearTimeout(pending);
      pending = setTimeout(refresh, 250);
    });
    policy.addEventListener("change", function () {
      clearTimeout(pending);
      pending = setTimeout(refresh, 50);
    });
  }
  // Live "matches N existing tags" next to each protection rule pattern.
  var matches = document.getElementById("matches-text");
  if (matches) {
    var murl = matches.getAttribute("data-matches-url");
    document.querySelectorAll("[data-matches]").forEach(function (input) {
      var out = input.form && input.form.querySelector("[data-matches-out]");
      if (!out) return;
      var timer = null;
      var mseq = 0;
      function count() {
        var q = new URLSearchParams();
        q.set("kind", input.getAttribute("data-matches"));
        q.set("pattern", input.value);
        var mine = ++mseq;
        if (input.value === "") { out.textContent = ""; return; }
        fetch(murl + "?" + q.toString(), { credentials: "same-origin" })
          .then(function (r) { return r.json(); })
          .then(function (j) {
            if (mine !== mseq) return;
            out.textContent = j.matches === null
              ? matches.getAttribute("data-invalid")
              : matches.getAttribute("data-text").replace("{n}", j.matches);
          });
      }
      input.addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(count, 200);
      });
    });
  }
  // A refused form: focus goes to its first field in error, so keyboard and screen
  // reader users land where the problem is.
  var invalid = document.querySelector('main [aria-invalid="true"]');
  if (invalid) invalid.focus();
})();
